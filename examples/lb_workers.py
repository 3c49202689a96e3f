"""lb plus N Python worker processes that count flows: netmap's lb use case, in Python.

    python examples/lb_workers.py --workers 2 --packets 3000000

Starts ``lb -i netmap:IN}0 -p W:N`` (lb creates the pipes, so it starts first),
N workers that each open ``netmap:W}k`` and count packets and distinct flows
(source/destination address and port, as a 64-bit fingerprint) a batch at a time, and pkt-gen tx
sending ``--packets`` 60-byte UDP frames from ``--flows`` source addresses
into ``netmap:IN{0``.  Prints each worker's counts, the rate the workers
received at together (first to last packet), and lb's final line.

A worker's loop is the batch pattern: ``poll``, ``receive()`` every slot,
fancy-index the header bytes of the whole batch, ``np.unique`` them, release.
Both directions of a connection reach the same worker: lb's hash is symmetric.
"""

from __future__ import annotations

import argparse
import ipaddress
import multiprocessing as mp
import signal
import subprocess
import sys
import time
import uuid

import numpy as np

import pynetmap
from pynetmap import POLLIN


def worker(name: str, idle_s: float, out: mp.Queue) -> None:
    """Count packets and distinct flows on pipe ``name`` until ``idle_s`` without traffic."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    flows = np.zeros(0, np.uint64)  # the distinct flow fingerprints so far, sorted
    count = 0
    first = last = 0.0
    with pynetmap.open(name) as port:
        out.put(("ready", name))
        rx = port.rx_rings[0]
        while True:
            if not port.poll(POLLIN, idle_s * 1000 if count else 20000) & POLLIN:
                break  # quiet for idle_s: the sender is done
            got = rx.receive()
            if not got.count:
                continue
            now = time.monotonic()
            first = first or now
            last = now
            # IPv4 addresses and UDP ports (bytes 26..37) of every packet, one row each,
            # as a 64-bit fingerprint: addresses, xor the ports times an odd constant
            hdr = np.ascontiguousarray(rx.bufs[got.buf_idx, 26:42])
            words = hdr.view(np.uint64)
            ports = words[:, 1] & np.uint64(0xFFFFFFFF)
            fp = words[:, 0] ^ (ports * np.uint64(0x9E3779B97F4A7C15))
            flows = np.union1d(flows, fp)  # per batch, no Python int per packet
            count += got.count
            rx.advance(got.count)
    out.put(("done", name, count, len(flows), first, last))


def run(workers: int, packets: int, nflows: int, idle_s: float = 1.0) -> dict:
    """One measurement: lb + ``workers`` workers + pkt-gen tx; returns the counts."""
    tag = uuid.uuid4().hex[:6]
    py = sys.executable
    lb = subprocess.Popen([py, "-m", "pynetmap.apps.lb", "-i", f"netmap:lbin{tag}}}0",
                           "-p", f"lbw{tag}:{workers}", "-w", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    procs = []
    try:
        time.sleep(1.0)  # lb opens the pipes before the workers do
        for k in range(workers):
            p = ctx.Process(target=worker, args=(f"netmap:lbw{tag}}}{k}", idle_s, q))
            p.start()
            procs.append(p)
        for _ in procs:
            q.get(timeout=30)
        subprocess.run([py, "-m", "pynetmap.apps.pktgen", "-f", "tx", "-w", "0",
                        "-i", f"netmap:lbin{tag}{{0", "-n", str(packets), "-l", "60",
                        "-s", f"10.0.0.1-{ipaddress.ip_address('10.0.0.1') + nflows - 1}"],
                       check=True, capture_output=True, timeout=600)
        done = [q.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
        lb.send_signal(signal.SIGINT)
        lb_out, _ = lb.communicate(timeout=30)
    got = sum(d[2] for d in done)
    t0, t1 = min(d[4] for d in done if d[2]), max(d[5] for d in done)
    return {"workers": workers, "packets": packets, "received": got,
            "per_worker": [d[2] for d in done], "flows": [d[3] for d in done],
            "mpps": got / max(t1 - t0, 1e-9) / 1e6, "lb": lb_out.strip().splitlines()[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--packets", type=int, default=3_000_000)
    ap.add_argument("--flows", type=int, default=1000)
    a = ap.parse_args()
    for n in a.workers:
        r = run(n, a.packets, a.flows)
        print(f"{n} worker(s): {r['received']} of {r['packets']} packets, "
              f"{r['mpps']:.3f} Mpps; per worker {r['per_worker']}, flows {r['flows']}; "
              f"lb: {r['lb']}")


if __name__ == "__main__":
    main()
