"""pkt-gen through a VALE switch between processes, beside a pipe and per-packet UDP.

Every row runs netmap's defaults (1024-slot rings, pkt-gen's burst of 512)
for a fixed time; receivers get SIGINT and their ``Received ... in S
seconds`` summary is parsed, as for netmap's pkt-gen.  Rows:

- ``pipe``: pkt-gen tx -> rx over ``netmap:P}0``/``P{0`` (zero copy: the
  switch's anchor in the same run);
- ``vale 1->1``: tx on ``valeX:tx``, rx on ``valeX:rx`` -- pkt-gen sends to
  the broadcast address, so every frame is flooded (copied) to the rx port;
- ``vale 1->N``: the same with N receivers, every frame copied N times
  (aggregate = frames delivered to all receivers per second);
- ``vale N->1``: N senders into one receiver (contention on its ring lock).

The switch never blocks a sender: a frame for a full ring is dropped and
counted, so "delivered" is what receivers got, and the sender's own count is
shown beside it.  Same run: the per-packet loopback-UDP Python baseline.
Prints a table, writes ``bench/results/vale.json``.

    python bench/vale_bench.py [--seconds 2] [--sizes 60,1514] [--n 2]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from _common import RX_SUMMARY, TX_SUMMARY, mpps, pktgen, run_udp, stop, table, write_json


def run(rx_names: list[str], tx_names: list[str], size: int, seconds: float) -> dict:
    """Start the receivers, then the senders; stop senders first, then receivers."""
    rxs = [pktgen("-f", "rx", "-i", n) for n in rx_names]
    time.sleep(1.0)  # receivers registered before the first frame
    txs = [pktgen("-f", "tx", "-i", n, "-l", str(size)) for n in tx_names]
    try:
        time.sleep(1.0 + seconds)  # start-up (imports) plus the measured time
        tx_out = [stop(p) for p in txs]
        time.sleep(0.2)
        rx_out = [stop(p) for p in rxs]
    finally:
        for p in rxs + txs:
            if p.poll() is None:
                p.kill()
    return {"rx_mpps": [mpps(RX_SUMMARY, o) for o in rx_out],
            "tx_mpps": [mpps(TX_SUMMARY, o) for o in tx_out]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sizes", default="60,1514")
    ap.add_argument("--n", type=int, default=2, help="receivers (1->N) and senders (N->1)")
    a = ap.parse_args(argv)
    udp = run_udp(a.seconds)
    rows, results = [], []
    for size in [int(x) for x in a.sizes.split(",")]:
        tag = uuid.uuid4().hex[:6]
        sw = f"vale{tag}"
        cases = [
            ("pipe", [f"netmap:pb{tag}{{0"], [f"netmap:pb{tag}}}0"]),
            ("vale 1->1", [f"{sw}:r0"], [f"{sw}:t0"]),
            (f"vale 1->{a.n}", [f"{sw}a:r{i}" for i in range(a.n)], [f"{sw}a:t0"]),
            (f"vale {a.n}->1", [f"{sw}b:r0"], [f"{sw}b:t{i}" for i in range(a.n)]),
        ]
        pipe = None
        for what, rx_names, tx_names in cases:
            r = run(rx_names, tx_names, size, a.seconds)
            delivered = sum(r["rx_mpps"])
            sent = sum(r["tx_mpps"])
            if pipe is None:
                pipe = delivered
            results.append({"case": what, "size": size, **r, "delivered_mpps": delivered,
                            "sent_mpps": sent, "ratio_vs_pipe": delivered / pipe,
                            "ratio_vs_udp": delivered / udp})
            rows.append([what, size, sent, delivered, delivered / pipe, delivered / udp])
    print(f"pkt-gen tx -> rx, netmap defaults (1024 slots, -b 512), {a.seconds:g} s per row, "
          f"two or more processes; loopback UDP per-packet baseline (60 B): {udp:.3f} Mpps")
    print(table(["case", "size", "sent Mpps", "delivered Mpps", "x pipe", "x UDP"], rows))
    path = write_json("vale", {"seconds": a.seconds, "udp_mpps": udp, "rows": results})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
