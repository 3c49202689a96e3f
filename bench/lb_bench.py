"""lb from a pipe into pipes drained by pkt-gen rx: aggregate Mpps, 60-byte frames.

For each row: ``lb -i netmap:IN}0 -p OUT:N`` (with the row's options),
N ``pkt-gen -f rx -i netmap:OUT}k`` and one ``pkt-gen -f tx -i netmap:IN{0``
sending 60-byte frames from 100 source addresses (so every pipe gets
traffic) for a fixed time; then every process gets SIGINT.  Received Mpps is
the sum of the rx processes' final lines; lb's own final line gives forwarded
and dropped, its ``-o 1`` lines its best second of input (forwarded + dropped:
what lb itself keeps up with when the workers are slower).  Same run:
pkt-gen tx -> pkt-gen rx over one pipe without lb, and lb's hash alone on
2048-packet batches, so the table shows what the
machine allows, not only what lb does.

Prints a table, writes ``bench/results/lb.json``.

    python bench/lb_bench.py [--seconds 3] [--pipes 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys
import time
import uuid

import numpy as np
from _common import RX_SUMMARY, pktgen, stop, table, write_json

FINAL = re.compile(r"^(\d+) packets forwarded\.  (\d+) packets dropped\. Total (\d+)$", re.M)


def lb_proc(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pynetmap.apps.lb", "-w", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def received(outs: list[str]) -> tuple[int, float]:
    """Packets and Mpps summed over rx processes' final lines."""
    n, mpps = 0, 0.0
    for out in outs:
        m = RX_SUMMARY.search(out)  # packets, bytes, seconds
        if m:
            n += int(m.group(1))
            mpps += int(m.group(1)) / float(m.group(3)) / 1e6
    return n, mpps


def run_lb(npipes: int, seconds: float, extra: list[str]) -> dict:
    tag = uuid.uuid4().hex[:6]
    lb = lb_proc("-i", f"netmap:bin{tag}}}0@conf:slots=4096", "-p", f"bout{tag}:{npipes}",
                 "-o", "1", *extra)
    time.sleep(1.0)  # lb creates the output pipes
    rxs = [pktgen("-f", "rx", "-i", f"netmap:bout{tag}}}{k}") for k in range(npipes)]
    time.sleep(1.0)
    tx = pktgen("-f", "tx", "-i", f"netmap:bin{tag}{{0", "-l", "60", "-b", "2048",
                "-s", "10.0.0.1-10.0.0.100")
    try:
        time.sleep(1.0 + seconds)
    finally:
        stop(tx)
        time.sleep(0.5)
        lb_out = stop(lb)
        outs = [stop(r) for r in rxs]
    n, mpps = received(outs)
    m = FINAL.search(lb_out)
    fwd, drop = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    # lb's own pace: its best second of packets taken from the input (forwarded + dropped)
    totals = [json.loads(line) for line in lb_out.splitlines()
              if line.startswith("{") and '"output_ring":null' in line]
    lb_mpps = max((t["packet_forward_rate_kpps"] + t["packet_drop_rate_kpps"]) / 1000
                  for t in totals) if totals else 0.0
    return {"pipes": npipes, "options": " ".join(extra), "received": n, "mpps": mpps,
            "forwarded": fwd, "dropped": drop, "lb_input_mpps": lb_mpps}


def run_direct(seconds: float) -> float:
    """pkt-gen tx -> rx over one pipe, no lb: the ceiling of the generator and a consumer."""
    name = f"netmap:bd{uuid.uuid4().hex[:6]}"
    rx = pktgen("-f", "rx", "-i", f"{name}{{0@conf:slots=4096")
    tx = pktgen("-f", "tx", "-i", f"{name}}}0@conf:slots=4096", "-l", "60", "-b", "2048")
    try:
        time.sleep(1.0 + seconds)
    finally:
        stop(tx)
        out = stop(rx)
    return received([out])[1]


def hash_only(batch: int = 2048, rounds: int = 300) -> float:
    """Mpps of lb's hash alone on batches of UDP frames from 100 sources, in one process."""
    from pynetmap.apps.lb.hash import batch_hash

    pool = np.zeros((65536, 2048), np.uint8)
    idx = np.random.default_rng(0).choice(np.arange(2, 65536), batch, replace=False)
    for i, b in enumerate(idx):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1 + i % 100]), bytes([10, 1, 0, 1]))
        pool[b, :42] = np.frombuffer(bytes(12) + b"\x08\x00" + ip +
                                     struct.pack("!HHHH", 1234, 1234, 26, 0), np.uint8)
    lens = np.full(batch, 60)
    batch_hash(pool, idx, lens)
    t = time.perf_counter()
    for _ in range(rounds):
        batch_hash(pool, idx, lens)
    return batch * rounds / (time.perf_counter() - t) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--pipes", default="1,2,4")
    a = ap.parse_args()
    rows = []
    for n in (int(x) for x in a.pipes.split(",")):
        for extra in ([], ["-W"]):
            rows.append(run_lb(n, a.seconds, extra))
            print(rows[-1], flush=True)
    direct = run_direct(a.seconds)
    hashed = hash_only()
    print(table(["pipes", "lb options", "rx Mpps (sum)", "x direct", "lb input Mpps (best s)",
                 "lb forwarded", "lb dropped"],
                [[r["pipes"], r["options"] or "-", r["mpps"], r["mpps"] / direct,
                  r["lb_input_mpps"], r["forwarded"], r["dropped"]] for r in rows]))
    print(f"pkt-gen tx -> rx over one pipe, no lb: {direct:.2f} Mpps; "
          f"lb's hash alone: {hashed:.2f} Mpps (2048-packet batches)")
    path = write_json("lb", {"seconds": a.seconds, "frame": 60, "rows": rows,
                             "direct_mpps": direct, "hash_only_mpps": hashed})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
