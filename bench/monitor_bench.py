"""What a monitor costs the port it watches: pkt-gen over a pipe, unwatched and watched.

Same run, netmap's defaults (1024-slot rings, ``-b 512``), 60-byte frames:
``pkt-gen -f tx`` on ``netmap:P}0`` into ``pkt-gen -f rx`` on ``netmap:P{0``,
then the same with a third process, ``pkt-gen -f rx`` on the sender's
monitor -- ``netmap:P}0/t`` (copies each submitted slot) or ``netmap:P}0/z``
(swaps each reclaimed buffer).  The watched pipe's throughput (counted by
its receiver) is compared with the unwatched one; the monitor's own count
is shown beside it.  Prints a table, writes ``bench/results/monitor.json``.

    python bench/monitor_bench.py [--seconds 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

from _common import RX_SUMMARY, mpps, pktgen, stop, table, write_json


def run(monitor: str | None, size: int, seconds: float) -> tuple[float, float]:
    """(watched pipe's Mpps at its receiver, monitor's Mpps) for one run."""
    name = f"netmap:mb{uuid.uuid4().hex[:8]}"
    rx = pktgen("-f", "rx", "-i", f"{name}{{0")
    tx = pktgen("-f", "tx", "-i", f"{name}}}0", "-l", str(size))
    mon = None
    try:
        if monitor:
            time.sleep(1.0)  # the watched port is open (a monitor needs it)
            mon = pktgen("-f", "rx", "-i", f"{name}}}0/{monitor}")
        time.sleep(1.0 + seconds)
        mon_out = stop(mon) if mon else ""
        out = stop(rx)
    finally:
        stop(tx)
        for p in (rx, tx, mon):
            if p is not None and p.poll() is None:
                p.kill()
    return mpps(RX_SUMMARY, out), (mpps(RX_SUMMARY, mon_out) if mon else 0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=60)
    a = ap.parse_args(argv)
    cases = [("unwatched", None), ("copy monitor /t", "t"), ("zero-copy monitor /z", "z")]
    got: dict[str, list[tuple[float, float]]] = {c: [] for c, _ in cases}
    for _ in range(a.runs):  # interleaved, so a slow moment hits every case alike
        for what, mon in cases:
            got[what].append(run(mon, a.size, a.seconds))
    base = statistics.median(x for x, _ in got["unwatched"])
    rows, results = [], []
    for what, _ in cases:
        watched = statistics.median(x for x, _ in got[what])
        seen = statistics.median(y for _, y in got[what])
        rows.append([what, watched, seen, watched / base])
        results.append({"case": what, "runs": got[what], "watched_mpps": watched,
                        "monitor_mpps": seen, "ratio_vs_unwatched": watched / base})
    print(f"pkt-gen tx -> rx over a pipe, netmap defaults, {a.size} B, median of {a.runs} runs "
          f"of {a.seconds:g} s")
    print(table(["case", "pipe Mpps", "monitor Mpps", "x unwatched"], rows))
    path = write_json("monitor", {"seconds": a.seconds, "size": a.size, "rows": results})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
