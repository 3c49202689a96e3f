"""Shared bits of the benchmarks: a results table, a JSON file, the loopback-UDP baseline."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time

#: pkt-gen's final lines, as a script written for netmap's pkt-gen parses them
RX_SUMMARY = re.compile(r"^Received (\d+) packets (\d+) bytes \d+ events \d+ bytes each in "
                        r"(\d+\.\d+) seconds\.$", re.M)
TX_SUMMARY = re.compile(r"^Sent (\d+) packets (\d+) bytes \d+ events \d+ bytes each in "
                        r"(\d+\.\d+) seconds\.$", re.M)


def pktgen(*args: str) -> subprocess.Popen:
    """Start our pkt-gen (``-w 0``); its stdout is what :func:`stop` returns."""
    return subprocess.Popen([sys.executable, "-m", "pynetmap.apps.pktgen", "-w", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def stop(p: subprocess.Popen) -> str:
    """Ctrl-C a pkt-gen (it prints its summary) and return its output."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out


def mpps(summary: re.Pattern, out: str) -> float:
    """Packets per second (millions) from a pkt-gen summary line."""
    m = summary.search(out)
    if not m:
        raise RuntimeError(f"no pkt-gen summary in {out!r}")
    return int(m.group(1)) / float(m.group(3)) / 1e6


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
