"""The ring protocol's rules, with no I/O (spec §2.4, §2.5).

Every port type shares these: the prologue that checks what the user wrote
into ``head``/``cur`` before a sync, the re-initialisation of a ring the
user corrupted, and the arithmetic of circular slot ranges.  The kernel
side of each ring ("kring": ``hwcur``, ``hwtail``, ``rhead``, ``rcur``,
``rtail``) is a block of 32-bit words in shared memory just before the
ring, so that every process using the ring sees the same state.

One deliberate difference from netmap: when the prologue fails, netmap
resets ``head``/``cur`` only if a value is out of ``[0, n)`` and otherwise
keeps the user's inconsistent values as the new reference.  On a software
port shared by processes that could hand out slots the peer still owns, so
we always reset to ``head = cur = hwcur``, ``tail = hwtail``.
"""

from __future__ import annotations

import numpy as np

from .constants import NS_BUF_CHANGED

#: a slot's flags without NS_BUF_CHANGED, which a sync clears once it has seen it
NOT_BUF_CHANGED = np.uint16(0xFFFF ^ NS_BUF_CHANGED)

# Words of the kring block (uint32 each).
K_HWCUR = 0
K_HWTAIL = 1
K_RHEAD = 2
K_RCUR = 3
K_RTAIL = 4
K_NEED_KICK = 5  #: 1 while a waiter sleeps on this ring and wants a wake-up
K_WAITER = 6  #: the waiter's wake-up address (UDP port on 127.0.0.1)
K_KICKS = 7  #: wake-ups sent so far, so the waiter knows how many to drain
KRING_SIZE = 64


def tx_prologue(n: int, hwcur: int, hwtail: int, rhead: int, rtail: int,
                head: int, cur: int) -> bool:
    """True if a TX ring's new ``head``/``cur`` are legal (spec §2.4)."""
    if hwcur >= n or rhead >= n or rtail >= n or hwtail >= n or head >= n or cur >= n:
        return False
    if rtail >= rhead:
        return rhead <= head <= rtail and head <= cur <= rtail
    if rtail < head < rhead:
        return False
    if head <= rtail:
        return head <= cur <= rtail
    return not (rtail < cur < head)


def rx_prologue(n: int, hwcur: int, hwtail: int, head: int, cur: int) -> bool:
    """True if an RX ring's new ``head``/``cur`` are legal (spec §2.4)."""
    if hwcur >= n or hwtail >= n or head >= n or cur >= n:
        return False
    if hwtail >= hwcur:
        return hwcur <= head <= hwtail and head <= cur <= hwtail
    if hwtail < head < hwcur:
        return False
    if head <= hwtail:
        return head <= cur <= hwtail
    return not (hwtail < cur < head)


def sanitize_slots(buf_idx: np.ndarray, lens: np.ndarray, nbufs: int, buf_size: int) -> int:
    """netmap's slot scan on reinit: bad buffer -> index 0 and len 0; long len -> 0.

    Returns the number of slots changed.
    """
    bad_idx = (buf_idx < 2) | (buf_idx >= nbufs)
    long_len = ~bad_idx & (lens > buf_size)
    buf_idx[bad_idx] = 0
    lens[bad_idx | long_len] = 0
    return int(np.count_nonzero(bad_idx) + np.count_nonzero(long_len))


def bad_slots(buf_idx: np.ndarray, lens: np.ndarray, nbufs: int, buf_size: int) -> bool:
    """True if any slot points outside the pool or claims more than a buffer."""
    if not len(buf_idx):
        return False
    return bool(buf_idx.min() < 2 or buf_idx.max() >= nbufs or lens.max() > buf_size)


def spans(a: int, b: int, n: int) -> tuple[slice, ...]:
    """The circular slot range ``[a, b)`` of an n-slot ring as one or two slices."""
    if a <= b:
        return (slice(a, b),)
    return (slice(a, n), slice(0, b))


def distance(a: int, b: int, n: int) -> int:
    """Slots from ``a`` forward to ``b`` on an n-slot ring."""
    d = b - a
    return d + n if d < 0 else d


def gather(column: np.ndarray, a: int, b: int, n: int) -> np.ndarray:
    """``column`` (a slot field) over the circular range ``[a, b)``, as one array (a copy)."""
    parts = [column[s] for s in spans(a, b, n)]
    return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)


def scatter(column: np.ndarray, a: int, values: np.ndarray, n: int) -> None:
    """Store ``values`` into the circular range of ``len(values) < n`` slots from ``a``."""
    at = 0
    for s in spans(a, (a + len(values)) % n, n):
        column[s] = values[at:at + s.stop - s.start]
        at += s.stop - s.start


def clear_buf_changed(flags: np.ndarray, a: int, b: int, n: int) -> None:
    """Clear ``NS_BUF_CHANGED`` in the circular range ``[a, b)`` of a ring's flags."""
    for s in spans(a, b, n):
        np.bitwise_and(flags[s], NOT_BUF_CHANGED, out=flags[s])
