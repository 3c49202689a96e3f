"""The batch API: many slots per Python call.

A :class:`SlotBatch` names ``count`` consecutive slots of a ring starting at
``start`` (wrapping around the end), as one or two slices.  Its methods read
or write the slots' fields and buffers with a fixed number of NumPy
operations whatever ``count`` is.  Nothing here moves ``head``: call
``ring.advance(batch.count)`` (alias ``commit`` / ``release``) when done.

:func:`swap` moves packets from an RX ring to a TX ring of the same memory
region by exchanging buffer indices: zero copy, as netmap's ``bridge``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .constants import NS_BUF_CHANGED, NS_MOREFRAG
from .kring import distance, spans

#: one frame, as the convenience paths take it
Frame = bytes | bytearray | memoryview

if TYPE_CHECKING:
    from .ring import Ring


def as_frame_list(frames: Any) -> list[Frame]:
    """``frames`` as a list of bytes-like frames, for the convenience paths that take frames.

    One bytes-like object is one frame: iterating it would yield integers,
    and ``bytes(104)`` is 104 zero bytes, which is how ``send(port, b"hello")``
    once sent five blank frames.  Objects with ``__bytes__`` (scapy packets)
    are converted; a str (no bytes until encoded) or a number raises TypeError.
    """
    if isinstance(frames, (bytes, bytearray, memoryview)):
        return [frames]
    if isinstance(frames, str):
        raise TypeError("frames: a str is not a frame; pass bytes (text.encode()) or a list "
                        "of bytes")
    try:
        items = list(frames)
    except TypeError:
        raise TypeError(f"frames: cannot send {type(frames).__name__}; pass bytes, a list of "
                        "bytes or packets, or a 2-D uint8 array") from None
    for i, f in enumerate(items):
        if isinstance(f, (bytes, bytearray, memoryview)):
            continue
        if isinstance(f, str) or not hasattr(f, "__bytes__"):
            raise TypeError(f"frames[{i}] is a {type(f).__name__}, not a frame: each frame "
                            "must be bytes-like (encode a str) or have __bytes__")
        items[i] = bytes(f)
    return items


class SlotBatch:
    """``count`` slots of ``ring`` from ``start``, wrap-around included.

    The fields are arrays (``buf_idx``, ``len``, ``flags``); iterating yields
    one ``(buf_idx, len, flags)`` tuple of ints per slot, a per-packet
    convenience that costs Python work per slot, unlike the arrays.
    """

    __slots__ = ("ring", "start", "count", "spans")

    def __init__(self, ring: Ring, start: int, count: int) -> None:
        self.ring = ring
        self.start = start
        self.count = count
        n = ring.num_slots
        self.spans = spans(start, (start + count) % n, n)  # count < n: never the full ring

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return zip(self.buf_idx.tolist(), self.len.tolist(), self.flags.tolist(), strict=True)

    def __repr__(self) -> str:
        r = self.ring
        d = "tx" if r.dir == 0 else "rx"
        return (f"<SlotBatch {d}{r.ringid} slots {self.start}.."
                f"{(self.start + self.count - 1) % r.num_slots} count={self.count}>"
                if self.count else f"<SlotBatch {d}{r.ringid} empty at {self.start}>")

    def _get(self, field: np.ndarray) -> np.ndarray:
        if len(self.spans) == 1:
            return field[self.spans[0]]
        return np.concatenate([field[s] for s in self.spans])

    def _set(self, field: np.ndarray, value: np.ndarray | int) -> None:
        if isinstance(value, int) or len(self.spans) == 1 or np.ndim(value) == 0:
            for s in self.spans:
                field[s] = value
            return
        first = self.spans[0].stop - self.spans[0].start
        v = cast(np.ndarray, value)
        field[self.spans[0]] = v[:first]
        field[self.spans[1]] = v[first:]

    @property
    def buf_idx(self) -> np.ndarray:
        """Buffer indices (a view when the batch does not wrap, else a copy)."""
        return self._get(self.ring.slot_buf_idx)

    @buf_idx.setter
    def buf_idx(self, v: np.ndarray) -> None:
        self._set(self.ring.slot_buf_idx, v)

    @property
    def len(self) -> np.ndarray:
        return self._get(self.ring.slot_len)

    @len.setter
    def len(self, v: np.ndarray | int) -> None:
        self._set(self.ring.slot_len, v)

    @property
    def flags(self) -> np.ndarray:
        return self._get(self.ring.slot_flags)

    @flags.setter
    def flags(self, v: np.ndarray | int) -> None:
        self._set(self.ring.slot_flags, v)

    @property
    def ptr(self) -> np.ndarray:
        """User addresses of ``NS_INDIRECT`` slots (VALE TX: the switch copies from there)."""
        return self._get(self.ring.slots["ptr"])

    @ptr.setter
    def ptr(self, v: np.ndarray | int) -> None:
        self._set(self.ring.slots["ptr"], v)

    def set_len(self, v: np.ndarray | int) -> None:
        self.len = v

    def set_flags(self, v: np.ndarray | int) -> None:
        self.flags = v

    def set_len_flags(self, length: int, flags: int = 0) -> None:
        """Every slot's ``len`` and ``flags`` at once: one store where two would do.

        The two fields are adjacent in a slot, so one ``len | flags << 16``
        word sets both; a sender of one frame size pays one NumPy call per
        batch for them instead of two (hot path).
        """
        if not (0 <= length <= 0xFFFF and 0 <= flags <= 0xFFFF):
            raise ValueError(f"len and flags are 16-bit fields, got {length}, {flags}")
        self._set(self.ring.slot_len_flags, length | flags << 16)

    def fill(self, frame: bytes | np.ndarray) -> None:
        """Write one template frame into every buffer of the batch and set lengths."""
        if isinstance(frame, (bytes, bytearray, memoryview)):
            f = np.frombuffer(frame, np.uint8)
        elif isinstance(frame, np.ndarray):
            f = frame
        else:
            raise TypeError(f"fill(frame): frame must be bytes-like or a uint8 array, not "
                            f"{type(frame).__name__}")
        self.ring.bufs[self.buf_idx, : len(f)] = f
        self.len = len(f)

    def write(self, frames: np.ndarray | Sequence[Frame] | Frame,
              lens: np.ndarray | None = None) -> None:
        """Copy frames into the batch's buffers and set lengths.

        ``frames``: a 2-D uint8 array (rows; ``lens`` default the row width) or
        bytes-like frames (see :func:`as_frame_list`); slots without a frame get
        length 0.
        """
        if isinstance(frames, np.ndarray):
            w = frames.shape[1]
            self.ring.bufs[self.buf_idx, :w] = frames[: self.count]
            self.len = w if lens is None else lens
            return
        frame_list = as_frame_list(frames)
        idx = self.buf_idx
        bufs = self.ring.bufs
        out = np.zeros(self.count, np.uint16)
        for i, fr in enumerate(frame_list[: self.count]):  # convenience path, not a hot loop
            bufs[idx[i], : len(fr)] = np.frombuffer(fr, np.uint8)
            out[i] = len(fr)
        self.len = out

    def to_array(self, width: int | None = None) -> np.ndarray:
        """The batch's packet bytes as a 2-D array (``width`` columns, default max len)."""
        lens = self.len
        w = int(lens.max()) if width is None and self.count else (width or 0)
        return self.ring.bufs[self.buf_idx, :w]

    def frames(self) -> list[bytes]:
        """The packets as bytes objects (one per slot; for convenience and tests)."""
        bufs, idx, lens = self.ring.bufs, self.buf_idx, self.len
        return [bufs[idx[i], : lens[i]].tobytes() for i in range(self.count)]


def swap(rx: Ring, tx: Ring, limit: int | None = None) -> int:
    """Move up to ``limit`` packets from ``rx`` to ``tx`` by swapping buffers.

    Both rings must live in the same memory region.  Lengths and the
    ``NS_MOREFRAG`` bit travel with the buffer; both slots get
    ``NS_BUF_CHANGED``; both heads advance.  Returns the number of slots
    moved.  At most three slice pairs are touched, however the two rings
    wrap.
    """
    if rx.region is not tx.region:
        raise ValueError("swap needs two rings of the same memory region (zero copy)")
    count = min(distance(rx.head, rx.tail, rx.num_slots), distance(tx.head, tx.tail, tx.num_slots))
    if limit is not None:
        count = min(count, limit)
    a, b, done = rx.head, tx.head, 0
    while done < count:
        m = min(count - done, rx.num_slots - a, tx.num_slots - b)
        rs, ts = slice(a, a + m), slice(b, b + m)
        rbi = rx.slot_buf_idx[rs].copy()
        rx.slot_buf_idx[rs] = tx.slot_buf_idx[ts]
        tx.slot_buf_idx[ts] = rbi
        tx.slot_len[ts] = rx.slot_len[rs]
        tx.slot_flags[ts] = (rx.slot_flags[rs] & NS_MOREFRAG) | NS_BUF_CHANGED
        rx.slot_flags[rs] |= NS_BUF_CHANGED
        done += m
        a = (a + m) % rx.num_slots
        b = (b + m) % tx.num_slots
    rx.advance(count)
    tx.advance(count)
    return count
