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

import errno
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import layout as L
from .batch import Frame, SlotBatch, as_frame_list
from .errors import NetmapError
from .kring import KRING_SIZE, KRing, distance

if TYPE_CHECKING:
    from .region import Region

# header word indices as module globals: one lookup less than ``L.RW_*`` in the batch calls
_HEAD, _CUR, _TAIL = L.RW_HEAD, L.RW_CUR, L.RW_TAIL


class Buffer(np.ndarray):
    """One packet buffer (what :meth:`Ring.buf` returns): a uint8 array that also takes bytes.

    ``ring.buf(i)[:5] = b"hello"`` is how C code writes a buffer; a plain
    NumPy array refuses ``bytes`` (it parses them as one integer), so this
    view converts bytes-like values with ``np.frombuffer`` (no copy before
    the store) and otherwise behaves, and costs, as the ndarray it is.
    ``bytes(buf[:n])`` reads one back.  ``ring.bufs`` stays a plain array:
    batch code assigns arrays to it.
    """

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = np.frombuffer(value, np.uint8)
        elif isinstance(value, str):
            raise TypeError("a buffer takes bytes, not str: encode it first "
                            "(b'...' or text.encode())")
        super().__setitem__(key, value)


class _Closed:
    """Stands in for the header views of a closed port's ring, so that using the
    ring says why it fails (instead of "released memoryview")."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __getitem__(self, i: int) -> int:
        raise NetmapError(errno.ENXIO, f"{self.what}: its port is closed")

    def __setitem__(self, i: int, v: int) -> None:
        raise NetmapError(errno.ENXIO, f"{self.what}: its port is closed")


class Ring:
    """One TX or RX ring of a port (``struct netmap_ring``); ``len(ring)`` is ``num_slots``."""

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
        #: each slot's first word, ``buf_idx | len << 32 | flags << 48``: one OR over
        #: a batch bounds all three fields (:func:`pynetmap.kring.check_slots`)
        self.slot_word = self.raw[:, 0]
        #: ``len | flags << 16``: one store sets both (:meth:`SlotBatch.set_len_flags`)
        self.slot_len_flags = np.ndarray(n, np.uint32, buffer=mem,
                                         offset=ofs + L.RING_HDR_SIZE + 4, strides=(16,))
        # The slots and the pool as memoryviews, for one-slot paths (ping-pong, read(),
        # write()): a memoryview item costs a fraction of a NumPy scalar access.
        sl = buf[ofs + L.RING_HDR_SIZE : ofs + L.RING_HDR_SIZE + 16 * n]
        self._q = sl.cast("Q")  # slot i: [2i] buf_idx | len << 32 | flags << 48, [2i+1] ptr
        self._i = sl.cast("I")  # slot i's buf_idx at [4i]
        self._h = sl.cast("H")  # slot i's len at [8i + 2], flags at [8i + 3]
        sl.release()
        self._pool = buf
        self._pool_ofs = region.buf_pool_ofs
        #: the region's buffer pool, ``bufs[buf_idx]`` is a buffer
        self.bufs = region.bufs
        self._bufs_b = region.bufs.view(Buffer)  # the same, rows that take bytes (buf())
        #: the kernel side of this ring (netmap's ``struct netmap_kring``)
        self.kring = KRing(self, buf[ofs - KRING_SIZE : ofs].cast("I"), self._hdr, self._hdr64,
                           region.nbufs)

    # -- netmap's fields -------------------------------------------------
    @property
    def head(self) -> int:
        return self._hdr[L.RW_HEAD]

    @head.setter
    def head(self, v: int) -> None:
        try:  # no per-call check: the memoryview refuses what a uint32 cannot hold
            self._hdr[L.RW_HEAD] = v
        except (TypeError, ValueError):
            raise self._index_error("head", v) from None

    @property
    def cur(self) -> int:
        return self._hdr[L.RW_CUR]

    @cur.setter
    def cur(self, v: int) -> None:
        try:
            self._hdr[L.RW_CUR] = v
        except (TypeError, ValueError):
            raise self._index_error("cur", v) from None

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

    def buf(self, i: int) -> Buffer:
        """A writable view of the buffer of slot ``i`` (all ``buf_size`` bytes).

        It takes bytes as well as arrays (``ring.buf(i)[:5] = b"hello"``) and
        ``bytes(ring.buf(i)[:n])`` reads it; see :class:`Buffer`.
        """
        return self._bufs_b[self.slot_buf_idx[i]]

    def read(self, i: int) -> bytes:
        """The frame in slot ``i`` (its ``len`` bytes), as bytes: the quick way to
        look at one packet (a batch has :meth:`SlotBatch.frames`)."""
        o = self._buf_at(i)
        return self._pool[o : o + min(self._h[8 * i + 2], self.buf_size)].tobytes()

    def write(self, i: int, frame: bytes | bytearray | memoryview, flags: int = 0) -> None:
        """Copy one frame into slot ``i``'s buffer and set its ``len`` and ``flags``:
        the quick way to fill one slot (a batch has :meth:`SlotBatch.write`)."""
        n = len(frame)
        if n > self.buf_size:
            raise ValueError(f"a {n}-byte frame does not fit a {self.buf_size}-byte buffer")
        o = self._buf_at(i)
        self._pool[o : o + n] = frame
        h = self._h
        h[8 * i + 2] = n
        h[8 * i + 3] = flags

    def _buf_at(self, i: int) -> int:
        """Where slot ``i``'s buffer starts in the region (``NETMAP_BUF``), checked."""
        idx = self._i[4 * i]
        if idx >= self.region.nbufs:
            raise ValueError(f"slot {i} holds buffer {idx}, outside the pool")
        return self._pool_ofs + idx * self.buf_size

    # -- batch API ---------------------------------------------------------
    def reserve(self, n: int | None = None) -> SlotBatch:
        """The next ``n`` free slots from ``head``: fewer if fewer are free, all if None.

        Call ``txsync``/``poll`` first for the slots the peer has freed.
        """
        return SlotBatch(self, self._hdr[_HEAD], self._avail(n))

    def receive(self, n: int | None = None) -> SlotBatch:
        """The received slots from ``head`` (at most ``n``).

        Only what the last ``rxsync``/``poll`` imported: sync first.
        """
        return SlotBatch(self, self._hdr[_HEAD], self._avail(n))

    def advance(self, n: int) -> None:
        """Give ``n`` slots from head back to the kernel side: ``head = cur = head + n``.

        ``n`` may be at most :meth:`space`: ``head`` cannot pass ``tail``
        (the next sync would reset the ring), so more raises ValueError now.
        """
        hdr = self._hdr
        h = hdr[_HEAD]
        ns = self.num_slots
        space = distance(h, hdr[_TAIL], ns)
        try:  # a float or a str fails the comparison or the store: TypeError
            if not 0 <= n <= space:
                raise ValueError(f"advance(n): n must be in 0..{space} (the slots from head "
                                 f"to tail, space()), got {n!r}")
            h += n
            if h >= ns:
                h -= ns
            hdr[_HEAD] = h
        except TypeError:
            raise TypeError(f"advance(n): n must be an int, not {type(n).__name__}") from None
        hdr[_CUR] = h

    commit = advance
    release = advance

    def send(self, frames: np.ndarray | Sequence[Frame] | Frame,
             lens: np.ndarray | None = None) -> int:
        """Copy as many frames as fit into the ring and advance; returns how many.

        ``frames`` is a 2-D uint8 array (one frame per row, ``lens`` the
        lengths, default the row width), a list of bytes-like frames (copied
        one by one: convenient, not a hot path) or one bytes-like frame.
        Call ``txsync``/``poll`` after.
        """
        todo: np.ndarray | list[Frame]
        if not isinstance(frames, np.ndarray):
            todo = as_frame_list(frames)
        elif frames.ndim != 2:
            raise ValueError(f"frames: a NumPy array of frames must be 2-D (one frame per "
                             f"row), got {frames.ndim} dimensions")
        else:
            todo = frames
        count = min(len(todo), self.space())
        if not count:
            return 0
        b = self.reserve(count)
        b.write(todo[:count], None if lens is None else lens[:count])
        self.advance(count)
        return count

    def _avail(self, n: int | None) -> int:
        space = distance(self._hdr[_HEAD], self._hdr[_TAIL], self.num_slots)
        if n is None:
            return space
        if isinstance(n, int) and n >= 0:
            return n if n < space else space
        return _count_arg(n, space)

    def _index_error(self, field: str, v: object) -> Exception:
        if isinstance(self._hdr, _Closed):
            return NetmapError(errno.ENXIO, f"{self._hdr.what}: its port is closed")
        if isinstance(v, int):
            return ValueError(f"ring.{field} must be a slot index in 0..{self.num_slots - 1}, "
                              f"got {v}")
        return TypeError(f"ring.{field} must be an int (a slot index in "
                         f"0..{self.num_slots - 1}), not {type(v).__name__}")

    def __len__(self) -> int:
        return self.num_slots

    def __repr__(self) -> str:
        d = "tx" if self.dir == 0 else "rx"
        if isinstance(self._hdr, _Closed):
            return f"<Ring {d}{self.ringid} slots={self.num_slots} closed>"
        return (f"<Ring {d}{self.ringid} slots={self.num_slots} head={self.head} "
                f"cur={self.cur} tail={self.tail}>")

    def release_views(self) -> None:
        """Drop this object's views of shared memory (so the mapping can close)."""
        self._hdr.release()
        self._hdr64.release()
        self.kring.w.release()
        for v in (self._q, self._i, self._h):
            v.release()
        self._pool = None  # type: ignore[assignment]
        d = "tx" if self.dir == 0 else "rx"
        closed = _Closed(f"ring {d}{self.ringid}")
        self._hdr = self._hdr64 = self._q = self._i = self._h = closed  # type: ignore[assignment]
        self.slots = self.slot_buf_idx = self.slot_len = self.slot_flags = None
        self.raw = self.slot_word = self.slot_len_flags = self.bufs = self._bufs_b = None


def _count_arg(n: Any, space: int) -> int:
    """``reserve``/``receive``'s ``n`` when it is not a plain non-negative int."""
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int or None, not {type(n).__name__}") from None
    if n < 0:
        raise ValueError(f"n must be >= 0 (or None: every available slot), got {n}")
    return n if n < space else space
