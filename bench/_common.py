"""Shared bits of the benchmarks: a results table, a JSON file, the loopback-UDP baseline."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import socket
import time


def machine() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(),
            "system": platform.system(), "release": platform.release(),
            "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in r]
                         for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_json(name: str, data: dict) -> str:
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine(), **data}, f, indent=2)
    return path


def udp_sender(port: int, seconds: float, frame: int = 60) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = bytes(frame)
    addr = ("127.0.0.1", port)
    end = time.monotonic() + seconds + 0.5
    n = 0
    while True:
        s.sendto(payload, addr)
        n += 1
        if not n & 1023 and time.monotonic() > end:
            break


def run_udp(seconds: float, frame: int = 60) -> float:
    """Per-packet sendto/recvfrom between two processes, counted at the receiver."""
    rs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    rs.bind(("127.0.0.1", 0))
    ctx = mp.get_context("spawn")
    tx = ctx.Process(target=udp_sender, args=(rs.getsockname()[1], seconds, frame))
    tx.start()
    rs.settimeout(5)
    rs.recvfrom(2048)
    got, t0 = 0, time.monotonic()
    end = t0 + seconds
    while True:
        rs.recvfrom(2048)
        got += 1
        if not got & 1023 and time.monotonic() > end:
            break
    dt = time.monotonic() - t0
    tx.join(10)
    rs.close()
    return got / dt / 1e6
