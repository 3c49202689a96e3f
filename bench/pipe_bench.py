"""Pipe throughput between two processes vs per-packet loopback UDP.

One process sends 60-byte frames over ``netmap:bench{0`` with the batch
API, another receives on ``netmap:bench}0``; the receiver counts what
arrives during a fixed time.  Same run: two Python processes exchanging
60-byte datagrams over loopback UDP with ``sendto``/``recvfrom`` per
packet.  Prints a table and writes ``bench/results/pipe.json``.

    python bench/pipe_bench.py [--seconds 2] [--batches 64,128,...]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
import uuid

from _common import run_udp, table, write_json

FRAME = 60


def pipe_sender(name: str, batch: int, seconds: float, ready, slots: int = 4096) -> None:
    import pynetmap
    from pynetmap import POLLOUT

    with pynetmap.open(f"netmap:{name}{{0@conf:slots={slots}") as port:
        ring = port.tx_rings[0]
        ring.reserve().fill(bytes(FRAME))  # the buffers hold the frame; resent as netmap does
        ready.wait()
        end = time.monotonic() + seconds + 1.0
        while time.monotonic() < end:
            b = ring.reserve(batch)
            if not b.count:
                port.poll(POLLOUT, 100)
                continue
            b.len = FRAME
            ring.advance(b.count)
            port.txsync()


def pipe_receiver(name: str, batch: int, seconds: float, ready, out,
                  slots: int = 4096) -> None:
    """Receive at most ``batch`` slots per sync, as pkt-gen's ``-b`` does."""
    import pynetmap
    from pynetmap import POLLIN

    with pynetmap.open(f"netmap:{name}}}0@conf:slots={slots}") as port:
        ring = port.rx_rings[0]
        ready.set()
        port.poll(POLLIN, 5000)  # first packet starts the clock
        got, t0 = 0, time.monotonic()
        end = t0 + seconds
        while True:
            port.rxsync()
            b = ring.receive(batch)
            if b.count:
                ring.release(b.count)
                got += b.count
            elif not port.poll(POLLIN, 200):
                break
            if time.monotonic() >= end:
                break
        out.put((got, time.monotonic() - t0))


def run_pipe(batch: int, seconds: float, slots: int = 4096) -> float:
    """Mpps of the bare batch-API loop: sender reserve/advance/txsync, receiver
    receive/release/rxsync, ``batch`` slots at most per sync on both sides."""
    ctx = mp.get_context("spawn")
    name = "bench" + uuid.uuid4().hex[:8]
    ready, out = ctx.Event(), ctx.Queue()
    rx = ctx.Process(target=pipe_receiver, args=(name, batch, seconds, ready, out, slots))
    tx = ctx.Process(target=pipe_sender, args=(name, batch, seconds, ready, slots))
    rx.start()
    tx.start()
    got, dt = out.get(timeout=seconds + 30)
    rx.join(10)
    tx.join(seconds + 10)
    return got / dt / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--batches", default="64,128,256,512,1024,2048")
    a = ap.parse_args(argv)
    udp = run_udp(a.seconds)
    rows, results = [], []
    for b in [int(x) for x in a.batches.split(",")]:
        mpps = run_pipe(b, a.seconds)
        rows.append([b, mpps, mpps / udp])
        results.append({"batch": b, "mpps": mpps, "ratio_vs_udp": mpps / udp})
    print(f"pynetmap pipe, 60-byte frames, two processes, {a.seconds:g} s per row; "
          f"loopback UDP per-packet baseline: {udp:.3f} Mpps")
    print(table(["batch", "pipe Mpps", "x UDP"], rows))
    path = write_json("pipe", {"frame": FRAME, "seconds": a.seconds, "udp_mpps": udp,
                               "pipe": results})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
