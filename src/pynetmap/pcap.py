"""pcap and pcapng files: read all packets, write classic pcap.

Reading returns the packets as one 2-D uint8 array plus lengths and
timestamps, ready to be copied into ring buffers in bulk.  Writing takes a
batch (pool rows by index plus lengths) and emits it with one ``write``:
the record headers are built with NumPy.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

LINKTYPE_ETHERNET = 1
_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_PCAPNG_SHB = 0x0A0D0D0A


@dataclass
class Capture:
    """The packets of a file: ``data[i, :lens[i]]`` is packet i."""

    data: np.ndarray
    lens: np.ndarray
    ts_ns: np.ndarray
    linktype: int
    #: each packet's length on the wire; above ``lens`` where the capture cut it (snaplen)
    orig_lens: np.ndarray

    def __len__(self) -> int:
        return len(self.lens)

    def packet(self, i: int) -> bytes:
        return self.data[i, : self.lens[i]].tobytes()


def _pack(pkts: list[bytes], ts: list[int], linktype: int, orig: list[int]) -> Capture:
    width = max((len(p) for p in pkts), default=0)
    data = np.zeros((len(pkts), width), np.uint8)
    for i, p in enumerate(pkts):  # once, at load time
        data[i, : len(p)] = np.frombuffer(p, np.uint8)
    return Capture(data, np.array([len(p) for p in pkts], np.uint32),
                   np.array(ts, np.int64), linktype, np.array(orig, np.uint32))


def read(path: str) -> Capture:
    """Read a pcap (either byte order, µs or ns) or pcapng file.

    A file that ends inside a record is refused (ValueError): its last packet
    would come back cut, and a replay would send the cut frame as a packet.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 24:
        raise ValueError(f"{path}: too short for a capture file")
    magic_le = struct.unpack_from("<I", raw)[0]
    if magic_le == _PCAPNG_SHB:
        return _read_pcapng(raw, path)
    for endian in "<>":
        magic = struct.unpack_from(endian + "I", raw)[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            break
    else:
        raise ValueError(f"{path}: not a pcap or pcapng file")
    scale = 1000 if magic == _MAGIC_US else 1
    linktype = struct.unpack_from(endian + "I", raw, 20)[0]
    pkts: list[bytes] = []
    ts: list[int] = []
    origs: list[int] = []
    pos = 24
    rec = struct.Struct(endian + "IIII")
    while pos < len(raw):
        if pos + 16 > len(raw):
            raise ValueError(f"{path}: truncated: the file ends inside the header of "
                             f"packet {len(pkts) + 1}")
        sec, frac, incl, orig = rec.unpack_from(raw, pos)
        pos += 16
        if pos + incl > len(raw):
            raise ValueError(f"{path}: truncated: packet {len(pkts) + 1} has {incl} bytes, "
                             f"the file holds {len(raw) - pos} of them")
        pkts.append(raw[pos : pos + incl])
        ts.append(sec * 1_000_000_000 + frac * scale)
        origs.append(max(orig, incl))
        pos += incl
    return _pack(pkts, ts, linktype, origs)


def _read_pcapng(raw: bytes, path: str) -> Capture:
    pkts: list[bytes] = []
    ts: list[int] = []
    origs: list[int] = []
    linktypes: list[int] = []
    resol: list[int] = []
    endian = "<"
    pos = 0
    while pos < len(raw):
        if pos + 12 > len(raw):
            raise ValueError(f"{path}: truncated pcapng block at {pos}")
        btype = struct.unpack_from(endian + "I", raw, pos)[0]
        if btype == _PCAPNG_SHB:
            bom = raw[pos + 8 : pos + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            linktypes, resol = [], []
        blen = struct.unpack_from(endian + "I", raw, pos + 4)[0]
        if blen < 12 or pos + blen > len(raw):
            raise ValueError(f"{path}: truncated pcapng block at {pos}")
        body = raw[pos + 8 : pos + blen - 4]
        if btype == 1:  # interface description
            linktypes.append(struct.unpack_from(endian + "H", body)[0])
            resol.append(_if_tsresol(body[8:], endian))
        elif btype == 6:  # enhanced packet
            ifid, hi, lo, cap, orig = struct.unpack_from(endian + "IIIII", body)
            if 20 + cap > len(body):
                raise ValueError(f"{path}: truncated packet in the pcapng block at {pos}")
            pkts.append(body[20 : 20 + cap])
            origs.append(max(orig, cap))
            units = (hi << 32) | lo
            ts.append(units * 1_000_000_000 // resol[ifid] if ifid < len(resol) else units)
        elif btype == 3:  # simple packet
            orig = struct.unpack_from(endian + "I", body)[0]
            pkts.append(body[4 : 4 + orig])  # the block's size caps what a snaplen cut
            ts.append(0)
            origs.append(orig)
        pos += blen
    return _pack(pkts, ts, linktypes[0] if linktypes else LINKTYPE_ETHERNET, origs)


def _if_tsresol(opts: bytes, endian: str) -> int:
    """Ticks per second of an interface (option if_tsresol; default microseconds)."""
    pos = 0
    while pos + 4 <= len(opts):
        code, ln = struct.unpack_from(endian + "HH", opts, pos)
        if code == 0:
            break
        if code == 9 and ln >= 1:
            v = opts[pos + 4]
            return 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
        pos += 4 + (ln + 3) // 4 * 4
    return 1_000_000


class Writer:
    """Write frames to a classic pcap file (LINKTYPE_ETHERNET, µs, snaplen 65535)."""

    def __init__(self, path: str | BinaryIO) -> None:
        self.f = open(path, "wb") if isinstance(path, str) else path  # noqa: SIM115
        self.f.write(struct.pack("<IHHiIII", _MAGIC_US, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))

    def write_batch(self, pool: np.ndarray, idx: np.ndarray, lens: np.ndarray,
                    ts_ns: int | None = None) -> None:
        """Append the frames ``pool[idx[i], :lens[i]]`` with one write."""
        n = len(idx)
        if not n:
            return
        lens = np.asarray(lens, np.uint32)
        now = time.time_ns() if ts_ns is None else ts_ns
        hdr = np.empty((n, 4), "<u4")
        hdr[:, 0] = now // 1_000_000_000
        hdr[:, 1] = now // 1000 % 1_000_000
        hdr[:, 2] = lens
        hdr[:, 3] = lens
        width = int(lens.max())
        rows = pool[idx, :width]
        # interleave headers and the used part of each row: one boolean mask pick
        rec = np.concatenate([hdr.view(np.uint8), rows], axis=1)
        keep = np.arange(16 + width) < (16 + lens[:, None])
        self.f.write(rec[keep].tobytes())

    def write(self, frame: bytes) -> None:
        self.f.write(struct.pack("<IIII", *divmod(time.time_ns() // 1000, 1_000_000),
                                 len(frame), len(frame)) + frame)

    def close(self) -> None:
        self.f.close()


def append_parts(path: str, parts: list[str]) -> None:
    """Append the records of ``parts`` (files a :class:`Writer` wrote) to ``path`` (one
    too), in that order, and delete them: one capture from several writers."""
    with open(path, "ab") as out:
        for part in parts:
            with open(part, "rb") as f:
                f.seek(24)  # each part has its own file header; ``path`` has one already
                shutil.copyfileobj(f, out)
            os.unlink(part)
