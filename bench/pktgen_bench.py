"""pkt-gen over a pipe between two processes, measured by rx's final line.

For every frame size and burst: ``pkt-gen -f rx -i netmap:P{0`` and
``pkt-gen -f tx -i netmap:P}0`` run for a fixed time, then rx gets SIGINT
and its ``Received ... Speed: ...`` summary is parsed, as a script written
for netmap's pkt-gen would.  Then ping/pong round trips (median and p99 from
every probe's RTT) with poll's default short spin and with ``--busy``.
Same run: the per-packet loopback-UDP Python baseline and the ratio.

Prints a table, writes ``bench/results/pktgen.json`` (and a PNG plot of
Mpps vs frame size with ``--plot`` if matplotlib is installed).

    python bench/pktgen_bench.py [--seconds 1.5] [--sizes 60,...] [--bursts 64,...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import uuid

import numpy as np
from _common import RX_SUMMARY, mpps, pktgen, run_udp, stop, table, write_json
from pipe_bench import run_pipe

SLOTS = 4096  # default ring size for every row, so bursts up to 2048 fit twice


def run_tx_rx(size: int, burst: int, seconds: float, slots: int = SLOTS) -> float:
    """Mpps received by ``pkt-gen -f rx`` during ``seconds`` of ``pkt-gen -f tx``."""
    name = f"netmap:pg{uuid.uuid4().hex[:8]}"
    conf = f"@conf:slots={slots}"
    rx = pktgen("-f", "rx", "-i", f"{name}{{0{conf}", "-b", str(burst))
    tx = pktgen("-f", "tx", "-i", f"{name}}}0{conf}", "-b", str(burst), "-l", str(size))
    try:
        time.sleep(1.0 + seconds)  # start-up (imports) plus the measured time
        out = stop(rx)
    finally:
        stop(tx)
        rx.kill()
    return mpps(RX_SUMMARY, out)


def run_ping(probes: int, busy: bool) -> dict:
    """RTT statistics of ``probes`` ping/pong transactions (ping in this process)."""
    from pynetmap.apps.pktgen import options as O
    from pynetmap.apps.pktgen.main import Run

    name = f"netmap:pp{uuid.uuid4().hex[:8]}"
    extra = ["--busy"] if busy else []
    pong = pktgen("-f", "pong", "-i", name + "{0", "-n", str(probes), *extra)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run = Run(O.parse(["-f", "ping", "-i", name + "}0", "-n", str(probes), "-w", "0",
                               *extra]))
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            try:
                run.run()
            finally:
                os.dup2(saved, 2)
                os.close(devnull)
                os.close(saved)
    finally:
        stop(pong)
    rtt = run.worker.hist.samples() / 1000.0  # in arrival order: one probe per batch
    rtt = rtt[len(rtt) // 10 :]  # leave out the warm-up tenth
    return {"probes": probes, "busy": busy, "median_us": float(np.median(rtt)),
            "p99_us": float(np.percentile(rtt, 99)), "min_us": float(rtt.min())}


def plot(results: list[dict], bursts: list[int], path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for b in bursts:
        pts = [(r["size"], r["mpps"]) for r in results if r["burst"] == b]
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"burst {b}")
    ax.set_xlabel("frame size (bytes)")
    ax.set_ylabel("Mpps received")
    ax.set_title("pynetmap pkt-gen tx -> rx over a pipe, two processes")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--sizes", default="60,128,256,512,1024,1514")
    ap.add_argument("--bursts", default="64,128,256,512,1024,2048")
    ap.add_argument("--probes", type=int, default=20000)
    ap.add_argument("--plot", action="store_true", help="also write a PNG (needs matplotlib)")
    ap.add_argument("--slots", type=int, default=SLOTS,
                    help="ring size (netmap's default is 1024)")
    ap.add_argument("--bare", action="store_true",
                    help="also the bare batch-API loop (bench/pipe_bench.py) at 60 B, same rings")
    a = ap.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",")]
    bursts = [int(x) for x in a.bursts.split(",")]
    udp = run_udp(a.seconds)
    results = []
    for size in sizes:
        for burst in bursts:
            mpps = run_tx_rx(size, burst, a.seconds, a.slots)
            results.append({"size": size, "burst": burst, "mpps": mpps,
                            "gbps": mpps * size * 8 / 1000, "ratio_vs_udp": mpps / udp})
    bare = {b: run_pipe(b, a.seconds, a.slots) for b in bursts} if a.bare else {}
    pings = [run_ping(a.probes, busy) for busy in (False, True)]
    print(f"pkt-gen tx -> rx over netmap:P{{0 / P}}0 ({a.slots} slots), two processes, "
          f"{a.seconds:g} s per cell, Mpps counted by rx; loopback UDP per-packet "
          f"baseline (60 B): {udp:.3f} Mpps")
    rows = []
    for size in sizes:
        cells = [r["mpps"] for r in results if r["size"] == size]
        rows.append([size, *cells, max(cells) / udp])
    print(table(["size \\ burst", *map(str, bursts), "best x UDP"], rows))
    if bare:
        print()
        pg = {r["burst"]: r["mpps"] for r in results if r["size"] == 60}
        print(table(["60 B, burst", "pkt-gen Mpps", "bare batch API Mpps", "pkt-gen / bare"],
                    [[b, pg.get(b, float("nan")), bare[b], pg.get(b, float("nan")) / bare[b]]
                     for b in bursts]))
    print()
    print(table(["ping/pong", "median us", "p99 us", "min us"],
                [["--busy" if p["busy"] else "default", p["median_us"], p["p99_us"],
                  p["min_us"]] for p in pings]))
    data = {"seconds": a.seconds, "slots": a.slots, "udp_mpps": udp, "tx_rx": results,
            "bare_mpps": bare, "ping_pong": pings}
    path = write_json("pktgen", data)
    print(f"results: {path}")
    if a.plot:
        png = plot(results, bursts, path.replace(".json", ".png"))
        print(f"plot: {png}" if png else "plot: matplotlib not installed (pip install "
              "'pynetmap[plot]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
