"""What pkt-gen prints, formatted exactly as netmap's pkt-gen (spec §6.5),
so scripts that parse netmap's output parse ours; plus ``--json`` variants.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque
from typing import TextIO

UNITS = ("", "K", "M", "G", "T")
FRAMING = 24  # -B: 4 bytes CRC + 20 bytes preamble and inter-frame gap


def norm(x: float, normalize: bool = True) -> str:
    """netmap's ``norm()``: ``14.880 M`` (a unit letter follows) or, with -N, ``14880952 ``."""
    if not normalize:
        return f"{x:.0f} "
    i = 0
    while x >= 1000 and i < len(UNITS) - 1:
        x /= 1000
        i += 1
    return f"{x:.3f} {UNITS[i]}"


def log_prefix(func: str, line: int, now: float | None = None) -> str:
    """netmap's ``D()`` prefix: seconds mod 1000, microseconds, function, [line]."""
    now = time.time() if now is None else now
    sec = int(now)
    return f"{sec % 1000:03d}.{int((now - sec) * 1e6):06d} {func} [{line}] "


def log(func: str, line: int, msg: str, file: TextIO | None = None) -> None:
    f = sys.stderr if file is None else file
    f.write(log_prefix(func, line) + msg + "\n")
    f.flush()


def startup_lines(function: str, ifname: str, queues: int, threads: int, cpus: int,
                  src: str, dst: str, src_mac: str, dst_mac: str, replay: str = "",
                  nframes: int = 0) -> str:
    """The two stdout lines pkt-gen prints before it starts.

    With ``--replay`` the frames carry the file's addresses, not the template's:
    the second line names the file instead of claiming addresses nothing sends.
    """
    verb = {"tx": "Sending on", "txseq": "Sending on", "rx": "Receiving from",
            "rxseq": "Receiving from"}.get(function, "Working on")
    out = f"{verb} {ifname}: {queues} queues, {threads} threads and {cpus} cpus.\n"
    if replay:
        out += f"{nframes} frames from {replay}, sent as captured\n"
    elif function in ("tx", "txseq", "ping"):
        out += f"{src} -> {dst} ({src_mac} -> {dst_mac})\n"
    return out


class Reporter:
    """The periodic line of ``main_thread`` (spec §6.5), with ``-A`` and ``-N``."""

    def __init__(self, normalize: bool = True, framing: bool = False, avg: bool = False,
                 as_json: bool = False) -> None:
        self.normalize = normalize
        self.framing = FRAMING if framing else 0
        self.avg = avg
        self.as_json = as_json
        self.samples: deque[float] = deque(maxlen=15)

    def line(self, pkts: int, nbytes: int, events: int, usec: int, min_space: int,
             now: float | None = None) -> str:
        """One report for ``pkts``/``nbytes``/``events`` moved in ``usec`` microseconds."""
        pps = (pkts * 1_000_000 + usec // 2) // usec
        bps = 1e6 * (nbytes * 8 + pkts * self.framing * 8) / usec
        abs_ = pkts / events if events else 0.0
        self.samples.append(pps)
        avgstd = ""
        live = [s for s in self.samples if s]
        avg = sum(live) / len(live) if live else 0.0
        std = math.sqrt(sum((s - avg) ** 2 for s in live) / len(live)) if live else 0.0
        if self.avg:
            avgstd = f"[avg/std {norm(avg, self.normalize)}/{norm(std, self.normalize)}pps]"
        if self.as_json:
            return json.dumps({"ts": time.time() if now is None else now, "pps": pps,
                               "pkts": pkts, "bytes": nbytes, "bps": bps, "usec": usec,
                               "avg_batch": abs_, "min_space": min_space,
                               **({"avg_pps": avg, "std_pps": std} if self.avg else {})})
        n = self.normalize
        return (f"{norm(pps, n)}pps {avgstd}({norm(pkts, n)}pkts {norm(bps, n)}bps in {usec} "
                f"usec) {abs_:.2f} avg_batch {min_space} min_space")


def summary(sent: bool, pkts: int, nbytes: int, events: int, seconds: float,
            normalize: bool = True, framing: bool = False, as_json: bool = False) -> str:
    """The final ``Sent``/``Received`` and ``Speed`` lines (stdout)."""
    verb = "Sent" if sent else "Received"
    if as_json:
        return final_json(verb.lower(), pkts, nbytes, events, seconds)
    if not pkts:
        return f"{verb} nothing.\n"
    delta = seconds if seconds > 0 else 1e-9
    pps = pkts / delta
    bw = 8.0 * nbytes / delta
    raw = 8.0 * (nbytes + pkts * FRAMING) / delta if framing else bw
    abs_ = pkts / events if events else 0.0
    n = normalize
    return (f"{verb} {pkts} packets {nbytes} bytes {events} events {nbytes // pkts} bytes each "
            f"in {seconds:.2f} seconds.\n"
            f"Speed: {norm(pps, n)}pps Bandwidth: {norm(bw, n)}bps (raw {norm(raw, n)}bps). "
            f"Average batch: {abs_:.2f} pkts\n")


def final_json(function: str, pkts: int, nbytes: int, events: int, seconds: float,
               **extra: object) -> str:
    """``--json``'s last object: ``function`` is ``sent``/``received`` (tx/txseq,
    rx/rxseq), ``ping`` or ``pong``; ``extra`` adds a function's own figures."""
    return json.dumps({"final": True, "function": function, "pkts": pkts, "bytes": nbytes,
                       "events": events, "seconds": seconds,
                       "pps": pkts / seconds if seconds else 0.0,
                       "bps": 8 * nbytes / seconds if seconds else 0.0, **extra}) + "\n"


def hexdump(data: bytes, ring: int, cur: int, buf_idx: int, flags: int) -> str:
    """``-X``: a header line and 16 bytes per row, ASCII from column 55.

    netmap loses the ASCII part of a last partial row (a stray string
    terminator); we print it, a deliberate fix.
    """
    out = [f"ring {ring:#x} cur {cur:5d} [buf {buf_idx:6d} flags 0x{flags:04x} "
           f"len {len(data):5d}]\n"]
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        hexpart = f"{off:5d}: " + "".join(f"{b:02x} " for b in chunk)
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.append(hexpart.ljust(55) + asc + "\n")
    return "".join(out)


# -- -R arithmetic (spec §6.4) ------------------------------------------------------------
def rate_burst(burst: int, rate: float) -> int:
    """About 3.3 ms worth of packets per burst, at least 1."""
    return max(1, min(burst, int(rate // 300)))


def rate_period_ns(burst: int, rate: float) -> int:
    return int(burst * 1e9 / rate)


def rate_start_ns(now_ns: int) -> int:
    """Start two seconds from now, on a whole second."""
    return (now_ns // 1_000_000_000 + 2) * 1_000_000_000
