"""Send and receive many frames through any port: the library face of pkt-gen.

Frames are held once in a :class:`FrameTable` (one 2-D uint8 array and the
lengths) and copied into ring buffers a burst at a time with one NumPy
assignment, so a Python program sends a list of ``bytes``, scapy packets or
a pcap file at ring speed::

    import pynetmap
    from pynetmap.traffic import FrameTable, send, receive

    with pynetmap.open("netmap:demo{0") as tx:
        send(tx, [bytes(p) for p in scapy_packets], repeat=1000)

    with pynetmap.open("netmap:demo}0") as rx:
        got = receive(rx, count=1000, timeout_ms=1000)   # a FrameTable
        print(len(got), got.frame(0))

pkt-gen's ``--replay`` uses :meth:`FrameTable.write` for its bursts.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .batch import as_frame_list
from .port import POLLHUP, POLLIN, POLLOUT, Port
from .ring import Ring


class FrameTable:
    """Frames as rows of one array: frame i is ``data[i, :lens[i]]``."""

    def __init__(self, data: np.ndarray, lens: np.ndarray | None = None) -> None:
        data = np.ascontiguousarray(data, np.uint8)
        if data.ndim != 2:
            raise ValueError(f"frames must be a 2-D uint8 array, got {data.ndim} dimensions")
        if lens is None:
            lens = np.full(len(data), data.shape[1], np.uint32)
        lens = np.asarray(lens, np.uint32)
        if lens.shape != (len(data),):
            raise ValueError("one length per frame is needed")
        if len(lens) and int(lens.max()) > data.shape[1]:
            raise ValueError("a length exceeds the row width")
        self.data = data
        self.lens = lens
        #: total bytes of one pass over the table
        self.total_bytes = int(lens.sum(dtype=np.int64))

    @classmethod
    def of(cls, frames: Any) -> FrameTable:
        """Build a table from a FrameTable, a pcap Capture, a 2-D array, one bytes-like
        frame, or an iterable of bytes-like objects or objects with ``__bytes__``
        (scapy packets)."""
        if isinstance(frames, FrameTable):
            return frames
        if hasattr(frames, "data") and hasattr(frames, "lens"):  # pcap.Capture
            return cls(frames.data, frames.lens)
        if isinstance(frames, np.ndarray):
            return cls(frames)
        raw = as_frame_list(frames)
        width = max((len(f) for f in raw), default=0)
        data = np.zeros((len(raw), width), np.uint8)
        for i, f in enumerate(raw):  # once, when the table is built
            data[i, : len(f)] = np.frombuffer(f, np.uint8)
        return cls(data, np.array([len(f) for f in raw], np.uint32))

    def __len__(self) -> int:
        return len(self.lens)

    @property
    def max_len(self) -> int:
        return int(self.lens.max()) if len(self.lens) else 0

    def frame(self, i: int) -> bytes:
        return self.data[i, : self.lens[i]].tobytes()

    def frames(self) -> list[bytes]:
        return [self.frame(i) for i in range(len(self))]

    def write(self, ring: Ring, idx: np.ndarray, k: int) -> tuple[np.ndarray, int, int]:
        """Copy frames ``k, k+1, ...`` (cyclically) into buffers ``idx`` of ``ring``.

        Returns the lengths written, the bytes written and the next ``k``.
        """
        n, total = len(idx), len(self.lens)
        if total == 1:
            w = int(self.lens[0])
            ring.bufs[idx, :w] = self.data[0, :w]
            return np.full(n, w, np.uint32), n * w, 0
        sel = (np.arange(k, k + n) % total) if k + n > total else slice(k, k + n)
        lens = self.lens[sel]
        w = int(lens.max())
        ring.bufs[idx, :w] = self.data[sel, :w]
        return lens, int(lens.sum(dtype=np.int64)), (k + n) % total


def send(port: Port, frames: Any, repeat: int = 1, timeout_ms: float = -1,
         burst: int = 1024) -> int:
    """Send every frame ``repeat`` times, in order, through the port's TX rings.

    ``frames``: one bytes-like frame, a list of them (or of scapy packets),
    a 2-D uint8 array or a :class:`FrameTable`.  Blocks (``poll``) while the
    rings are full, at most ``timeout_ms`` (negative: no limit); returns the
    number of frames handed to the port, which is fewer than asked only on
    timeout or when the peer goes away.  Frames longer than a buffer raise
    ValueError.
    """
    _check_int("repeat", repeat, 0)
    _check_int("burst", burst, 1)
    table = FrameTable.of(frames)
    if not port.tx_rings:
        raise ValueError(f"{port.name} has no TX rings bound")
    if table.max_len > port.tx_rings[0].buf_size:
        raise ValueError(f"a frame of {table.max_len} bytes does not fit a "
                         f"{port.tx_rings[0].buf_size}-byte buffer")
    left = len(table) * repeat
    deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
    k = sent = 0
    while left:
        moved = 0
        for r in port.tx_rings:
            n = min(r.space(), left, burst)
            if n:
                b = r.reserve(n)
                lens, _, k = table.write(r, b.buf_idx, k)
                b.len = lens
                b.flags = 0
                r.advance(n)
                left -= n
                sent += n
                moved += n
        if moved:
            port.txsync()
            continue
        wait = -1 if deadline is None else max(0.0, (deadline - time.monotonic()) * 1000)
        rev = port.poll(POLLOUT, wait)
        if rev & POLLHUP or (not rev and deadline is not None):
            break
    port.txsync()
    return sent


def _check_int(name: str, v: object, least: int) -> None:
    """Argument checks of the convenience functions: a wrong count is a mistake
    to report, not a reason to send nothing or loop forever."""
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, not {type(v).__name__}")
    if v < least:
        raise ValueError(f"{name} must be >= {least}, got {v}")


def receive(port: Port, count: int, timeout_ms: float = -1) -> FrameTable:
    """Receive up to ``count`` slots (copied out and released) or until the timeout."""
    _check_int("count", count, 0)
    rows: list[np.ndarray] = []
    lens: list[np.ndarray] = []
    got = 0
    deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
    while got < count:
        wait = -1 if deadline is None else (deadline - time.monotonic()) * 1000
        if deadline is not None and wait <= 0:
            break
        rev = port.poll(POLLIN, wait)
        if not rev & POLLIN:
            if rev & POLLHUP or deadline is not None:
                break
            continue
        for r in port.rx_rings:
            b = r.receive(count - got)
            if b.count:
                ln = b.len.astype(np.uint32)
                rows.append(r.bufs[b.buf_idx, : int(ln.max())].copy())
                lens.append(ln)
                r.release(b.count)
                got += b.count
    port.rxsync()
    if not rows:
        return FrameTable(np.zeros((0, 0), np.uint8), np.zeros(0, np.uint32))
    width = max(x.shape[1] for x in rows)
    data = np.zeros((got, width), np.uint8)
    at = 0
    for x in rows:
        data[at : at + len(x), : x.shape[1]] = x
        at += len(x)
    return FrameTable(data, np.concatenate(lens))
