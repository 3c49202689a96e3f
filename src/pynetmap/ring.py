"""A netmap ring as seen by the application: netmap's per-slot API plus the
batch API that hot loops use.

Scalar fields (``head``, ``cur``, ``tail``) are read and written through a
``memoryview`` cast of the ring header, the fastest scalar access Python
has to shared memory.  Slots are a NumPy structured array on the same
memory; the batch API works on per-field views of it with one or two
slices (two when the range wraps), so a batch costs a fixed number of
Python operations whatever its size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import layout as L
from .batch import SlotBatch
from .kring import KRING_SIZE, KRing, distance

if TYPE_CHECKING:
    from .region import Region


class Ring:
    """One TX or RX ring of a port (``struct netmap_ring``)."""

    def __init__(self, region: Region, ofs: int, direction: int, ringid: int) -> None:
        buf = region.buf
        self.region = region
        self.ofs = ofs
        self.dir = direction
        self.ringid = ringid
        self._hdr = buf[ofs : ofs + L.RING_HDR_SIZE].cast("I")
        self._hdr64 = buf[ofs : ofs + L.RING_HDR_SIZE].cast("q")
        n = self._hdr[L.RW_NUM_SLOTS]
        self.num_slots: int = n
        self.buf_size: int = self._hdr[L.RW_BUF_SIZE]
        # NumPy views come from region.mem, which holds the mapping's buffer
        # export: a view kept after close() keeps the mapping, never dangles.
        mem = region.mem
        #: the slots, a structured array (``buf_idx``, ``len``, ``flags``, ``ptr``)
        self.slots = np.ndarray(n, L.SLOT_DTYPE, buffer=mem, offset=ofs + L.RING_HDR_SIZE)
        self.slot_buf_idx = self.slots["buf_idx"]
        self.slot_len = self.slots["len"]
        self.slot_flags = self.slots["flags"]
        #: the slots as raw 16-byte records, for copying descriptors in bulk
        self.raw = np.ndarray((n, 2), np.uint64, buffer=mem, offset=ofs + L.RING_HDR_SIZE)
        #: the region's buffer pool, ``bufs[buf_idx]`` is a buffer
        self.bufs = region.bufs
        #: the kernel side of this ring (netmap's ``struct netmap_kring``)
        self.kring = KRing(self, buf[ofs - KRING_SIZE : ofs].cast("I"), self._hdr, self._hdr64,
                           region.nbufs)

    # -- netmap's fields -------------------------------------------------
    @property
    def head(self) -> int:
        return self._hdr[L.RW_HEAD]

    @head.setter
    def head(self, v: int) -> None:
        self._hdr[L.RW_HEAD] = v

    @property
    def cur(self) -> int:
        return self._hdr[L.RW_CUR]

    @cur.setter
    def cur(self, v: int) -> None:
        self._hdr[L.RW_CUR] = v

    @property
    def tail(self) -> int:
        """First slot owned by the kernel side; read-only for the application."""
        return self._hdr[L.RW_TAIL]

    @property
    def flags(self) -> int:
        return self._hdr[L.RW_FLAGS]

    @flags.setter
    def flags(self, v: int) -> None:
        self._hdr[L.RW_FLAGS] = v

    @property
    def ts(self) -> float:
        """Time of the last RX sync, in seconds (``struct timeval ts``)."""
        return self._hdr64[L.RQ_TS_SEC] + self._hdr64[L.RQ_TS_USEC] / 1e6

    @property
    def buf_ofs(self) -> int:
        return self._hdr64[L.RQ_BUF_OFS]

    # -- netmap_user.h helpers --------------------------------------------
    def next(self, i: int) -> int:
        """``nm_ring_next``: the slot after ``i``."""
        i += 1
        return 0 if i == self.num_slots else i

    def space(self) -> int:
        """``nm_ring_space``: slots between head and tail."""
        return distance(self._hdr[L.RW_HEAD], self._hdr[L.RW_TAIL], self.num_slots)

    def empty(self) -> bool:
        """``nm_ring_empty``: head == tail."""
        return self._hdr[L.RW_HEAD] == self._hdr[L.RW_TAIL]

    def tx_pending(self) -> bool:
        """``nm_tx_pending``: submitted TX slots not yet reclaimed."""
        return self.next(self._hdr[L.RW_TAIL]) != self._hdr[L.RW_HEAD]

    def buf(self, i: int) -> np.ndarray:
        """A writable view of the buffer of slot ``i`` (all ``buf_size`` bytes)."""
        return self.bufs[self.slot_buf_idx[i]]

    # -- batch API ---------------------------------------------------------
    def reserve(self, n: int | None = None) -> SlotBatch:
        """The next ``n`` free slots from ``head`` (all free slots if None)."""
        return SlotBatch(self, self._hdr[L.RW_HEAD], self._avail(n))

    def receive(self, n: int | None = None) -> SlotBatch:
        """The received slots from ``head`` (at most ``n``)."""
        return SlotBatch(self, self._hdr[L.RW_HEAD], self._avail(n))

    def advance(self, n: int) -> None:
        """Give ``n`` slots from head back to the kernel side: ``head = cur = head + n``."""
        h = self._hdr[L.RW_HEAD] + n
        if h >= self.num_slots:
            h -= self.num_slots
        self._hdr[L.RW_HEAD] = h
        self._hdr[L.RW_CUR] = h

    commit = advance
    release = advance

    def send(self, frames: np.ndarray | list[bytes], lens: np.ndarray | None = None) -> int:
        """Copy as many frames as fit into the ring and advance; returns how many.

        ``frames`` is a 2-D uint8 array (one frame per row, ``lens`` the
        lengths, default the row width) or a list of bytes (copied one by
        one: convenient, not a hot path).  Call ``txsync``/``poll`` after.
        """
        count = min(len(frames), self.space())
        if not count:
            return 0
        b = self.reserve(count)
        b.write(frames[:count], None if lens is None else lens[:count])
        self.advance(count)
        return count

    def _avail(self, n: int | None) -> int:
        space = distance(self._hdr[L.RW_HEAD], self._hdr[L.RW_TAIL], self.num_slots)
        return space if n is None or n > space else n

    def __repr__(self) -> str:
        d = "tx" if self.dir == 0 else "rx"
        return (f"<Ring {d}{self.ringid} slots={self.num_slots} head={self.head} "
                f"cur={self.cur} tail={self.tail}>")

    def release_views(self) -> None:
        """Drop this object's views of shared memory (so the mapping can close)."""
        self._hdr.release()
        self._hdr64.release()
        self.kring.w.release()
        self.slots = self.slot_buf_idx = self.slot_len = self.slot_flags = None  # type: ignore
        self.raw = self.bufs = None  # type: ignore[assignment]
