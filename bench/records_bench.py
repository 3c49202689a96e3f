"""Finding packets in a capture buffer without a Python step per packet, against one.

Two parsers of the portable engines, timed on synthetic buffers (no I/O):
- ``libpcap.find_records`` (the pcap engine's RX: ``pcap_dump`` records in
  memory) against a plain Python walk of every record, 1023 records;
- ``bsd.bpfbuf.parse`` + ``to_rows`` (a ``/dev/bpf`` or Npcap read buffer,
  copied into ring buffers) against a Python walk with a NumPy copy per
  packet, and against libpcap's ``pcap_next_ex`` per packet through ctypes
  reading the same packets from a pcap file (where libpcap is installed).

    python bench/records_bench.py [--repeat 20]

Prints two tables and writes ``bench/results/records.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
from _common import table, write_json

from pynetmap import libpcap, pcap
from pynetmap.bsd import bpfbuf
from pynetmap.errors import NetmapError

RECORD = libpcap.RECORD  # pcap_dump's record header
CAPLEN = struct.Struct("=I")
BPF_BYTES = 512 * 1024  # a BPF read buffer


def best(repeat: int, fn: Callable[..., object], *args: object) -> float:
    """The fastest of ``repeat`` calls ``fn(*args)``, in seconds."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t0)
    return min(out)


# -- pcap_dump records ---------------------------------------------------------------------

def dump_buffer(lens: list[int]) -> tuple[np.ndarray, int]:
    used = sum(RECORD.size + n for n in lens)
    buf = np.zeros(used, np.uint8)
    at = 0
    for i, n in enumerate(lens):
        RECORD.pack_into(buf.data, at, i, 0, n, n)
        at += RECORD.size + n
    return buf, used


def walk_dump(buf: np.ndarray, count: int, used: int) -> tuple[np.ndarray, np.ndarray]:
    """Every record in turn, as a loop without NumPy would find them; as arrays, as
    ``find_records`` returns them (the ring's buffers are filled with NumPy)."""
    raw = buf[:used].tobytes()
    offs, caps = [0] * count, [0] * count
    at = 0
    for i in range(count):
        c = CAPLEN.unpack_from(raw, at + 8)[0]
        offs[i], caps[i] = at + RECORD.size, c
        at += RECORD.size + c
    return np.array(offs), np.array(caps)


def dump_rows(repeat: int) -> list[dict]:
    rng = np.random.default_rng(1)
    rows = []
    for name, lens in (("60 B", [60] * 1023), ("1514 B", [1514] * 1023),
                       ("random 14..1792 B", rng.integers(14, 1793, 1023).tolist())):
        buf, used = dump_buffer(lens)
        got = libpcap.find_records(buf, len(lens), used)
        assert got[1].tolist() == walk_dump(buf, len(lens), used)[1].tolist()
        t_np = best(repeat, libpcap.find_records, buf, len(lens), used)
        t_py = best(repeat, walk_dump, buf, len(lens), used)
        rows.append({"frames": name, "count": len(lens),
                     "find_records_us_per_pkt": t_np / len(lens) * 1e6,
                     "walk_us_per_pkt": t_py / len(lens) * 1e6, "speedup": t_py / t_np})
    return rows


# -- bpf_hdr buffers -----------------------------------------------------------------------

def bpf_buffer(size: int, fmt: bpfbuf.HdrFormat) -> tuple[np.ndarray, int, list[bytes]]:
    """As many ``size``-byte frames as fit a read buffer, with ``fmt``'s headers."""
    rng = np.random.default_rng(2)
    buf = np.zeros(BPF_BYTES, np.uint8)
    frames, at = [], 0
    hdr = fmt.size
    while True:
        end = at + hdr + size
        if end > BPF_BYTES:
            break
        frame = rng.integers(0, 256, size, np.uint8).tobytes()
        struct.pack_into("<I", buf.data, at + fmt.caplen, size)
        struct.pack_into("<I", buf.data, at + fmt.datalen, size)
        struct.pack_into("<H", buf.data, at + fmt.hdrlen, hdr)
        buf[at + hdr:end] = np.frombuffer(frame, np.uint8)
        frames.append(frame)
        at = (end + fmt.align - 1) // fmt.align * fmt.align
    return buf, min(at, BPF_BYTES), frames


def bpfbuf_pass(buf: np.ndarray, nbytes: int, fmt: bpfbuf.HdrFormat, bufs: np.ndarray) -> int:
    """``bpfbuf``: find every record, then copy the packets into ring buffers 0, 1, ..."""
    rec = bpfbuf.parse(buf, nbytes, fmt)
    bpfbuf.to_rows(buf, rec, bufs, np.arange(len(rec)))
    return len(rec)


def walk_bpf(buf: np.ndarray, nbytes: int, fmt: bpfbuf.HdrFormat, bufs: np.ndarray) -> int:
    """Record by record: read the header, copy the packet into the next ring buffer."""
    raw = buf[:nbytes].tobytes()
    at = i = 0
    while at + fmt.size <= nbytes:
        caplen = struct.unpack_from("<I", raw, at + fmt.caplen)[0]
        hdrlen = struct.unpack_from("<H", raw, at + fmt.hdrlen)[0]
        bufs[i, :caplen] = buf[at + hdrlen:at + hdrlen + caplen]
        i += 1
        at = (at + hdrlen + caplen + fmt.align - 1) // fmt.align * fmt.align
    return i


class _PktHdr(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
                ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


def next_ex_reader(path: str) -> Callable[[np.ndarray], int] | None:
    """Read ``path`` with libpcap's ``pcap_next_ex`` into ring buffers, one call per
    packet; None without libpcap."""
    try:
        lib = libpcap.load()
    except NetmapError:
        return None
    lib.pcap_open_offline.restype = ctypes.c_void_p
    lib.pcap_open_offline.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.pcap_next_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.pcap_close.argtypes = [ctypes.c_void_p]

    def read(bufs: np.ndarray) -> int:
        err = ctypes.create_string_buffer(256)
        p = lib.pcap_open_offline(path.encode(), err)
        if not p:
            raise RuntimeError(err.value.decode())
        hdr = ctypes.POINTER(_PktHdr)()
        data = ctypes.POINTER(ctypes.c_ubyte)()
        i = 0
        try:
            while lib.pcap_next_ex(p, ctypes.byref(hdr), ctypes.byref(data)) == 1:
                n = hdr.contents.caplen
                ctypes.memmove(bufs[i].ctypes.data, data, n)
                i += 1
        finally:
            lib.pcap_close(p)
        return i

    return read


def bpf_rows(repeat: int) -> list[dict]:
    fmt = bpfbuf.NPCAP
    rows = []
    for size in (60, 1514):
        buf, nbytes, frames = bpf_buffer(size, fmt)
        n = len(frames)
        bufs = np.zeros((n, 2048), np.uint8)

        assert bpfbuf_pass(buf, nbytes, fmt, bufs) == walk_bpf(buf, nbytes, fmt, bufs) == n
        row = {"frames": f"{n} x {size} B", "count": n,
               "bpfbuf_mpps": n / best(repeat, bpfbuf_pass, buf, nbytes, fmt, bufs) / 1e6,
               "walk_mpps": n / best(repeat, walk_bpf, buf, nbytes, fmt, bufs) / 1e6}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "same.pcap")
            w = pcap.Writer(path)
            for f in frames:
                w.write(f)
            w.close()
            reader = next_ex_reader(path)
            if reader is not None:
                assert reader(bufs) == n
                row["next_ex_mpps"] = n / best(repeat, reader, bufs) / 1e6
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="timed calls per cell (the best "
                    "counts; default 20)")
    a = ap.parse_args(argv)
    dump = dump_rows(a.repeat)
    print("pcap_dump records (the pcap engine's RX), 1023 per buffer, µs per packet:")
    print(table(["frames", "find_records", "Python walk", "walk / find_records"],
                [[r["frames"], f"{r['find_records_us_per_pkt']:.3f}",
                  f"{r['walk_us_per_pkt']:.3f}", r["speedup"]] for r in dump]))
    bpf = bpf_rows(a.repeat)
    print(f"\nbpf_hdr records ({bpfbuf.NPCAP.name} format), a {BPF_BYTES // 1024} KiB buffer "
          "parsed and copied into ring buffers, Mpps (x bpfbuf):")
    print(table(["frames", "bpfbuf", "Python walk", "libpcap pcap_next_ex"],
                [[r["frames"], r["bpfbuf_mpps"],
                  f"{r['walk_mpps']:.2f} ({r['walk_mpps'] / r['bpfbuf_mpps']:.2f}x)",
                  (f"{r['next_ex_mpps']:.2f} ({r['next_ex_mpps'] / r['bpfbuf_mpps']:.2f}x)"
                   if "next_ex_mpps" in r else "no libpcap")] for r in bpf]))
    path = write_json("records", {"repeat": a.repeat, "pcap_dump": dump, "bpf": bpf})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
