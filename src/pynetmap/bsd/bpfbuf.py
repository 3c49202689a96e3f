"""A buffer of BPF capture records, parsed with a few NumPy calls per run of one size.

A ``read()`` of a BSD ``/dev/bpf`` device (macOS, FreeBSD) and Npcap's
``PacketReceivePacket`` return one buffer holding many packets, each a
``struct bpf_hdr`` (timestamp, ``bh_caplen``, ``bh_datalen``,
``bh_hdrlen``) followed by ``bh_caplen`` bytes, the next record starting at
the next multiple of the platform's alignment.  libpcap walks such a
buffer record by record and calls back once per packet; in Python that is a
call per packet.  Here :func:`pynetmap.records.find` finds the records
(runs of one frame size with one strided comparison each, a Python walk
only where sizes keep changing), and the other header fields are gathered
for all records at once.

Then :func:`to_rows` copies the packets into ring buffers (rows of the
buffer pool) with one fancy-indexed assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import records


@dataclass(frozen=True)
class HdrFormat:
    """Where ``struct bpf_hdr``'s fields are on one platform (from its headers)."""

    name: str
    ts_word: int  #: bytes of each timestamp field (tv_sec, tv_usec)
    caplen: int  #: offset of bh_caplen (u32)
    datalen: int  #: offset of bh_datalen (u32)
    hdrlen: int  #: offset of bh_hdrlen (u16)
    align: int  #: records start at multiples of this (BPF_WORDALIGN / Packet_WORDALIGN)

    def __post_init__(self) -> None:
        if self.align % 4 or self.caplen % 4 or self.hdrlen % 4:
            raise ValueError("bpf_hdr fields are read as aligned 32-bit words")

    @property
    def size(self) -> int:
        """The smallest valid ``bh_hdrlen`` (the header up to the end of bh_hdrlen)."""
        return self.hdrlen + 2

    @property
    def layout(self) -> records.Layout:
        """Where :func:`pynetmap.records.find` finds a record's lengths."""
        return records.Layout(caplen=self.caplen, size=self.size, hdrlen=self.hdrlen,
                              align=self.align)


#: Npcap (Packet.dll, Win64: ``struct timeval`` of two 32-bit longs, 4-byte alignment)
NPCAP = HdrFormat("npcap", 4, 8, 12, 16, 4)
#: macOS (``struct BPF_TIMEVAL`` of two int32, ``BPF_ALIGNMENT`` = sizeof(int32_t))
DARWIN = HdrFormat("darwin", 4, 8, 12, 16, 4)
#: FreeBSD on LP64 (``struct timeval`` of 16 bytes, ``BPF_ALIGNMENT`` = sizeof(long))
FREEBSD64 = HdrFormat("freebsd", 8, 16, 20, 24, 8)


@dataclass
class Records:
    """The packets of one buffer: where each one's bytes are, and its header fields."""

    data: np.ndarray  #: offset of each packet's first byte in the buffer
    caplen: np.ndarray  #: bytes captured
    datalen: np.ndarray  #: bytes on the wire
    ts_sec: np.ndarray
    ts_usec: np.ndarray

    def __len__(self) -> int:
        return len(self.data)

    def take(self, k: int) -> tuple[Records, Records]:
        """The first ``k`` records and the rest (a ring takes what it has room for)."""
        f = [getattr(self, n) for n in ("data", "caplen", "datalen", "ts_sec", "ts_usec")]
        return Records(*(a[:k] for a in f)), Records(*(a[k:] for a in f))


def parse(buf: np.ndarray, nbytes: int, fmt: HdrFormat) -> Records:
    """The records of ``buf[:nbytes]`` (a uint8 array), in order
    (:func:`pynetmap.records.find`: a few NumPy calls per run of one frame size).

    A record whose header or data would run past ``nbytes``, or whose
    ``bh_hdrlen`` is shorter than the header, ends the walk (a buffer from
    the kernel has none).
    """
    chain = records.find(buf, nbytes, fmt.layout)
    p = chain.start
    tw = "=u4" if fmt.ts_word == 4 else "=u8"  # host order, as the kernel writes them
    return Records(p + chain.hdrlen, chain.caplen, _gather(buf, p + fmt.datalen, "=u4"),
                   _gather(buf, p, tw), _gather(buf, p + fmt.ts_word, tw))


def to_rows(buf: np.ndarray, rec: Records, bufs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Copy packet i of ``rec`` into ``bufs[rows[i]]``, cut to a row; returns the lengths.

    Each row gets a window as wide as the longest packet (row copies, the fast
    kind of fancy indexing); bytes past a packet's length are the next
    record's, as netmap leaves a buffer's bytes past ``len`` undefined.
    """
    lens = np.minimum(rec.caplen, bufs.shape[1]).astype(np.int64)
    if not len(lens):
        return lens
    width = int(lens.max())
    if int(rec.data.max()) + width > len(buf):
        buf = np.concatenate([buf, np.zeros(width, np.uint8)])
    windows = np.lib.stride_tricks.sliding_window_view(buf, width)
    bufs[rows, :width] = windows[rec.data]
    return lens


def _gather(buf: np.ndarray, at: np.ndarray, dtype: str) -> np.ndarray:
    w = np.dtype(dtype).itemsize
    return buf[at[:, None] + np.arange(w)].copy().view(dtype)[:, 0].astype(np.int64)
