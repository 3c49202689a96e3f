"""Finding the records of a capture buffer with a few NumPy calls per run of one size.

A capture buffer holds records one after another -- libpcap's ``pcap_dump``
records (the pcap engine's RX), the ``bpf_hdr`` records of a ``/dev/bpf`` or
Npcap read -- each a header with the packet's length, then the packet, then
padding up to the format's alignment.  Where record i+1 starts depends on
record i's lengths, so finding them is sequential.  But traffic comes in
runs of one frame size, and the records of a run are equally spaced: one
strided view of their length fields, compared at once, finds where the run
ends.  After a short run the records are walked in Python instead,
:data:`WALK` of them and twice as many after each further short run, so
traffic of one size costs a fixed number of NumPy calls per buffer and any
traffic at most one small Python step per packet.

Headers are read in host byte order, as the kernel and ``pcap_dump`` write
them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

#: records walked one by one after a short run of equal lengths, before trying runs again
WALK = 32
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")


@dataclass(frozen=True)
class Layout:
    """Where a record's lengths are, and how records follow each other."""

    caplen: int  #: offset of the u32 length of the packet's bytes in the record
    size: int  #: the header's size (with ``hdrlen``: the least valid header length)
    hdrlen: int | None = None  #: offset of a u16 header length; None: always ``size``
    align: int = 1  #: records start at multiples of this


@dataclass
class Chain:
    """The records found: where each starts, its header length and packet length."""

    start: np.ndarray  #: offset of each record (its header) in the buffer
    hdrlen: np.ndarray | int  #: header length of each record (one int: a fixed header)
    caplen: np.ndarray  #: bytes of packet in each record
    end: int  #: where the record after the last one would start (aligned)


def find(buf: np.ndarray, used: int, lay: Layout, count: int | None = None) -> Chain:
    """The chain of records from offset 0 of ``buf[:used]`` (a uint8 array): at most
    ``count`` (None: all), ending before the first record that would not fit in
    ``used`` bytes or whose header length is shorter than ``lay.size``."""
    top = used // _aligned(lay.size, lay.align) + 1  # the most records that fit
    if count is not None:
        top = min(top, count)
    start = np.empty(top, np.int64)
    fixed = lay.hdrlen is None
    hlen = np.empty(0 if fixed else top, np.int64)
    clen = np.empty(top, np.int64)
    at = i = 0
    walk = WALK
    raw: memoryview | None = None
    while i < top:
        hc = _header(buf, used, at, lay)
        if hc is None:
            break
        h, c = hc
        stride = _aligned(h + c, lay.align)
        # the records of a run of this size that fit: record j ends at at + j*stride + h + c
        m = min(top - i, (used - at - h - c) // stride + 1)
        run = _run(buf, at, stride, m, lay, h, c)
        start[i:i + run] = at + stride * np.arange(run)
        if not fixed:
            hlen[i:i + run] = h
        clen[i:i + run] = c
        at, i = at + stride * run, i + run
        if run >= WALK:
            walk = WALK
        elif i < top and at + lay.size <= used:
            if raw is None:
                raw = buf.data[:used]  # a memoryview: struct reads it as fast as bytes, no copy
            at, i = _walk(raw, used, at, i, min(walk, top - i), lay, start, hlen, clen)
            walk *= 2
    return Chain(start[:i], lay.size if fixed else hlen[:i], clen[:i], at)


def _aligned(n: int, align: int) -> int:
    return -(-n // align) * align


def _header(buf: np.ndarray, used: int, at: int, lay: Layout) -> tuple[int, int] | None:
    """(header length, packet length) of a valid record at ``at``, else None."""
    if at + lay.size > used:
        return None
    c = int(np.ndarray((), "=u4", buffer=buf, offset=at + lay.caplen))
    h = lay.size if lay.hdrlen is None else int(
        np.ndarray((), "=u2", buffer=buf, offset=at + lay.hdrlen))
    if h < lay.size or at + h + c > used:
        return None
    return h, c


def _run(buf: np.ndarray, at: int, stride: int, m: int, lay: Layout, h: int, c: int) -> int:
    """How many of the ``m`` equally spaced records from ``at`` have lengths ``h``, ``c``
    (at least 1: the first has): one strided comparison per length field."""
    same = np.ndarray((m,), "=u4", buffer=buf, offset=at + lay.caplen, strides=(stride,)) == c
    if lay.hdrlen is not None:
        same &= np.ndarray((m,), "=u2", buffer=buf, offset=at + lay.hdrlen,
                           strides=(stride,)) == h
    return m if same.all() else int(same.argmin())


def _walk(raw: memoryview, used: int, at: int, i: int, n: int, lay: Layout, start: np.ndarray,
          hlen: np.ndarray, clen: np.ndarray) -> tuple[int, int]:
    """Up to ``n`` records one by one from ``at`` (record ``i``); stops before an invalid
    one.  Returns where it stopped and the next record's number.

    ``raw`` is exactly the ``used`` bytes: a header past the end fails to unpack,
    which ends the loop; a record whose packet runs past the end is the last
    one seen, and is dropped after it.
    """
    s, cl = [0] * n, [0] * n
    size, cap = lay.size, lay.caplen
    k = 0  # records done
    hls = [0] * n
    u32 = _U32.unpack_from
    if lay.hdrlen is None and lay.align == 1:  # pcap_dump's records: the plain walk
        try:
            for k in range(n):  # noqa: B007 (k counts the records done if it stops early)
                c = u32(raw, at + cap)[0]
                s[k] = at
                cl[k] = c
                at += size + c
            else:
                k = n
        except struct.error:
            pass
        hl: list[int] | int = size
    else:  # a header length of its own (BPF), or records padded to an alignment
        u16, hdr, align = _U16.unpack_from, lay.hdrlen or 0, lay.align
        try:
            for k in range(n):  # noqa: B007
                c = u32(raw, at + cap)[0]
                h = size if lay.hdrlen is None else u16(raw, at + hdr)[0]
                if h < size:
                    break
                s[k], hls[k], cl[k] = at, h, c
                at += h + c
                at += -at % align
            else:
                k = n
        except struct.error:
            pass
        hl = size if lay.hdrlen is None else hls[:k]
    if k and s[k - 1] + (hl if isinstance(hl, int) else hl[k - 1]) + cl[k - 1] > used:
        k -= 1  # its packet runs past the end
        at = s[k]
        hl = hl if isinstance(hl, int) else hl[:k]
    start[i:i + k], clen[i:i + k] = s[:k], cl[:k]
    if not isinstance(hl, int):
        hlen[i:i + k] = hl
    return at, i + k
