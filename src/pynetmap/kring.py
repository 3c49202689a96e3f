"""The ring protocol: netmap's ``struct netmap_kring`` and its rules, with no I/O
(spec §2.4, §2.5).

Every port type shares this one sync sequence -- **prologue** (check what
the user wrote into ``head``/``cur``), **reinit** (reset a ring the user
corrupted), the adapter's **sync** (the port type's part: move
``hwcur``/``hwtail``), **finalize** (publish ``tail``) -- and the
arithmetic of circular slot ranges.  A :class:`KRing` is the kernel side of
one ring: a block of 32-bit words in the region, just before the ring, so
that every process using the ring sees the same state.  It has two slots,
as netmap's kring has: ``sync`` (the adapter's txsync/rxsync) and
``notify`` (wake whoever waits on the ring).  A monitor or a switch hooks a
ring by replacing them.

One deliberate difference from netmap: when the prologue fails, netmap
resets ``head``/``cur`` only if a value is out of ``[0, n)`` and otherwise
keeps the user's inconsistent values as the new reference.  On a software
port shared by processes that could hand out slots the peer still owns, so
we always reset to ``head = cur = hwcur``, ``tail = hwtail``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from . import layout as L
from . import osl
from .constants import NR_TX, NS_BUF_CHANGED

if TYPE_CHECKING:
    from .ring import Ring

_MIN, _MAX, _OR = np.minimum.reduce, np.maximum.reduce, np.bitwise_or.reduce
#: a slot's flags without NS_BUF_CHANGED, which a sync clears once it has seen it
NOT_BUF_CHANGED = np.uint16(0xFFFF ^ NS_BUF_CHANGED)

# Words of the kring block (uint32 each).  Named fields (``kring.hwcur``) are the
# API; a hot adapter path may index ``kring.w`` with these names instead.
HWCUR = 0
HWTAIL = 1
RHEAD = 2
RCUR = 3
RTAIL = 4
NEED_KICK = 5  # 1 while a waiter sleeps on this ring and wants a wake-up
WAITER = 6  # the waiter's doorbell address
KICKS = 7  # wake-ups sent so far, so the waiter knows how many to drain
HOLDERS = 8  # opens bound to this ring now (changed under the registry lock)
EVER = 9  # 1 once an open was bound to it (a peer that never came is not gone)
HOLDER_PID = 10  # one live holder, for a lock-free liveness check
HOLDER_TOKEN = 11  # and its identity token (two words)
MON_COUNT = 13  # monitors watching this ring now (changed under the registry lock)
MON_GEN = 14  # changes whenever a monitor of this ring comes or goes
MON_TAIL = 15  # RX: the hwtail up to which monitors were given the arrivals
KRING_SIZE = 64

#: ``sync(kring, head)``: the adapter's txsync or rxsync
SyncFn = Callable[["KRing", int], None]


class SlotError(Exception):
    """Raised by an adapter's sync when slots it must pass on are invalid."""


_fence_lock = threading.Lock()


def _fence() -> None:
    """A full memory barrier: a lock round trip is an atomic read-modify-write.

    The waiter stores ``need_kick`` and then re-reads the ring; the peer
    stores the ring indices and then reads ``need_kick``.  Without a barrier
    between each side's store and load, a store buffer could let both miss
    each other.
    """
    _fence_lock.acquire()
    _fence_lock.release()


class KRing:
    """The kernel side of one ring: named fields over the shared kring words."""

    __slots__ = ("w", "hdr", "hdr64", "ring", "num_slots", "dir", "ringid", "nbufs",
                 "buf_size", "sync", "notify", "seen_kicks", "on_kicks", "peer", "owner",
                 "mon_gen", "watchers")

    def __init__(self, ring: Ring, words: memoryview, hdr: memoryview, hdr64: memoryview,
                 nbufs: int) -> None:
        self.w = words
        self.hdr = hdr  # the user's netmap_ring header, as 32-bit words
        self.hdr64 = hdr64  # and as 64-bit words (timestamps)
        self.ring = ring
        self.num_slots: int = hdr[L.RW_NUM_SLOTS]
        self.buf_size: int = hdr[L.RW_BUF_SIZE]
        self.dir = ring.dir
        self.ringid = ring.ringid
        self.nbufs = nbufs
        #: the adapter's sync for this ring; set when a port registers it
        self.sync: SyncFn = _no_sync
        #: wake the ring's waiter (default: the doorbell protocol of :mod:`pynetmap.wake`)
        self.notify: Callable[[], None] = self.kick
        self.seen_kicks: int = words[KICKS]  # wake-ups already consumed
        #: called with the number of wake-ups a sync found sent for this ring, so
        #: the waiter drains exactly those (set by the port; none: nobody drains)
        self.on_kicks: Callable[[int], None] = _ignore
        #: the kring this one exchanges slots with, for adapters that pair rings (pipes)
        self.peer: KRing | None = None
        #: (registry key, endpoint) of the port this ring belongs to: what monitors name
        self.owner: tuple[str, str] | None = None
        self.mon_gen = -1  # the MON_GEN that ``watchers`` was built for
        self.watchers: list = []  # this process's view of the monitors (adapters.monitor)

    # -- netmap's fields ---------------------------------------------------------------
    @property
    def hwcur(self) -> int:
        return self.w[HWCUR]

    @hwcur.setter
    def hwcur(self, v: int) -> None:
        self.w[HWCUR] = v

    @property
    def hwtail(self) -> int:
        return self.w[HWTAIL]

    @hwtail.setter
    def hwtail(self, v: int) -> None:
        self.w[HWTAIL] = v

    @property
    def rhead(self) -> int:
        return self.w[RHEAD]

    @property
    def rcur(self) -> int:
        return self.w[RCUR]

    @property
    def rtail(self) -> int:
        return self.w[RTAIL]

    # -- the sync sequence -------------------------------------------------------------
    def txsync(self) -> str | None:
        """Prologue, the adapter's txsync, finalize; returns why the ring was reset, if so."""
        w, h, n = self.w, self.hdr, self.num_slots
        head, cur = h[L.RW_HEAD], h[L.RW_CUR]
        if not tx_prologue(n, w[HWCUR], w[HWTAIL], w[RHEAD], w[RTAIL], head, cur):
            return self.reinit(f"head {head} cur {cur}")
        if h[L.RW_TAIL] != w[RTAIL]:
            h[L.RW_TAIL] = w[RTAIL]  # the user wrote tail: restore it
        w[RHEAD] = head
        w[RCUR] = cur
        try:
            if w[MON_COUNT] or self.watchers:  # watchers left: drop them there
                self._watched(head)
            else:
                self.sync(self, head)
        except SlotError as e:
            return self.reinit(str(e))
        h[L.RW_TAIL] = w[RTAIL] = w[HWTAIL]
        return None

    def rxsync(self, now_ns: int = 0) -> str | None:
        """Prologue, the adapter's rxsync, finalize (``ts`` from ``now_ns``); returns why
        the ring was reset, if so."""
        w, h, n = self.w, self.hdr, self.num_slots
        head, cur = h[L.RW_HEAD], h[L.RW_CUR]
        w[RHEAD] = head
        w[RCUR] = cur
        why = None
        if not rx_prologue(n, w[HWCUR], w[HWTAIL], head, cur):
            # as netmap's ioctl path: reset, then still import what arrived
            why = self.reinit(f"head {head} cur {cur}")
            head = w[HWCUR]
        try:
            if w[MON_COUNT] or self.watchers:  # watchers left: drop them there
                self._watched(head)
            else:
                self.sync(self, head)
        except SlotError as e:
            why = self.reinit(str(e))
        h[L.RW_TAIL] = w[RTAIL] = w[HWTAIL]
        t = self.hdr64
        t[L.RQ_TS_SEC] = now_ns // 1_000_000_000
        t[L.RQ_TS_USEC] = now_ns // 1000 % 1_000_000
        return why

    def _watched(self, head: int) -> None:
        """The adapter's sync with this ring's monitors fed around it (spec §4.3).

        Only rings that someone monitors come here (one word read decides),
        so unwatched rings pay nothing more.
        """
        from .adapters import monitor

        hwcur, hwtail = self.w[HWCUR], self.w[HWTAIL]
        monitor.before_sync(self, head)
        self.sync(self, head)
        monitor.after_sync(self, hwcur, hwtail)

    def drop_watchers(self) -> None:
        """Unmap the monitors this process fed from this ring (its port closes)."""
        for wt in self.watchers:
            wt.close()
        self.watchers = []

    def take_kicks(self) -> None:
        """Drain the wake-ups sent for this ring since the last look (``on_kicks``).

        ``poll`` calls it after its syncs.  A sync outside ``poll`` must not:
        between ``arm()`` and the wait on ``fileno()``, it would eat the
        wake-up the waiter is about to sleep on.
        """
        k = self.w[KICKS]
        if k != self.seen_kicks:
            d = (k - self.seen_kicks) & 0xFFFFFFFF
            self.seen_kicks = k
            self.on_kicks(d)

    def reinit(self, why: str) -> str:
        """``netmap_ring_reinit``: sanitize every slot, reset head/cur/tail to the kernel's."""
        fixed = sanitize_slots(self.ring.slot_buf_idx, self.ring.slot_len, self.nbufs,
                               self.buf_size)
        self.reset_user()
        return f"{why}; ring reset ({fixed} slots sanitized)"

    def reset_user(self) -> None:
        """The user's view from the kernel's: ``head = cur = hwcur``, ``tail = hwtail``.

        Also what a new holder of a ring nobody holds gets (a crashed
        holder's ``head`` must not carry over).
        """
        w, h = self.w, self.hdr
        h[L.RW_HEAD] = h[L.RW_CUR] = w[RHEAD] = w[RCUR] = w[HWCUR]
        h[L.RW_TAIL] = w[RTAIL] = w[HWTAIL]

    def pending(self) -> bool:
        """``cur != tail``: something for the user (RX) or room (TX)."""
        return self.hdr[L.RW_CUR] != self.hdr[L.RW_TAIL]

    # -- wake-ups (the doorbell protocol, see :mod:`pynetmap.wake`) ----------------------
    def kick(self) -> None:
        """Ring the waiter's doorbell if it asked for it (call after publishing)."""
        _fence()
        w = self.w
        if w[NEED_KICK]:
            w[NEED_KICK] = 0
            if osl.ring(w[WAITER]):
                w[KICKS] = (w[KICKS] + 1) & 0xFFFFFFFF

    def arm(self, address: int) -> None:
        """Ask the other side to ring ``address`` on its next publish on this ring."""
        self.w[WAITER] = address
        self.w[NEED_KICK] = 1
        _fence()

    def disarm(self) -> None:
        self.w[NEED_KICK] = 0

    def forget_kicks(self) -> None:
        """Count the wake-ups sent so far as consumed (the doorbell was emptied)."""
        self.seen_kicks = self.w[KICKS]

    # -- holders (who uses the ring; control path) --------------------------------------
    @property
    def holders(self) -> int:
        return self.w[HOLDERS]

    @property
    def ever_held(self) -> bool:
        return bool(self.w[EVER])

    def holder_gone(self) -> bool:
        """True if the ring was held and its holder is gone (closed, or died unclosed).

        Lock-free: a dead recorded holder may be one of several, so a caller
        that sees True with ``holders`` still non-zero sweeps the registry
        (which records a live holder, or zero) and asks again.
        """
        w = self.w
        if not w[EVER]:
            return False
        if not w[HOLDERS]:
            return True
        token = w[HOLDER_TOKEN] | w[HOLDER_TOKEN + 1] << 32
        return not osl.process_alive(w[HOLDER_PID], token)

    def __repr__(self) -> str:
        d = "tx" if self.dir == NR_TX else "rx"
        return (f"<KRing {d}{self.ringid} hwcur={self.hwcur} hwtail={self.hwtail} "
                f"rhead={self.rhead} rcur={self.rcur} rtail={self.rtail}>")


def _ignore(count: int) -> None:
    return None


def _no_sync(kring: KRing, head: int) -> None:
    raise SlotError("the ring is not registered")


def init_words(words: np.ndarray, n: int, direction: int) -> None:
    """A new ring's kring (spec §2.1): TX ``hwtail = n-1``; RX empty; nobody holds it."""
    words[:] = 0
    if direction == NR_TX:
        words[HWTAIL] = words[RTAIL] = n - 1


def kring_words(mem: np.ndarray, ofs: int) -> np.ndarray:
    """The kring block of the ring at ``ofs`` of a region's memory, for the control path."""
    return np.ndarray(KRING_SIZE // 4, np.uint32, buffer=mem, offset=ofs - KRING_SIZE)


def set_holders(words: np.ndarray, count: int, pid: int = 0, token: int = 0) -> None:
    """Record ``count`` holders of a ring, one of them ``pid``; under the registry lock."""
    words[HOLDERS] = count
    words[HOLDER_PID] = pid
    words[HOLDER_TOKEN] = token & 0xFFFFFFFF
    words[HOLDER_TOKEN + 1] = token >> 32 & 0xFFFFFFFF
    if count:
        words[EVER] = 1


def held_slots(words: np.ndarray, n: int) -> np.ndarray:
    """Mask of an RX ring's slots from ``hwcur`` to ``hwtail`` (delivered, not released)."""
    hwcur = int(words[HWCUR])
    return (np.arange(n) - hwcur) % n < distance(hwcur, int(words[HWTAIL]), n)


# -- the prologues (pure) ------------------------------------------------------------------

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

    Returns the number of invalid slots found (already-sanitized ones count again).
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
    # the ufuncs' own reduce: ndarray.min/max add a Python wrapper per call (hot path)
    return bool(_MIN(buf_idx) < 2 or _MAX(buf_idx) >= nbufs or _MAX(lens) > buf_size)


def check_slots(words: np.ndarray, buf_idx: np.ndarray, lens: np.ndarray, nbufs: int,
                buf_size: int) -> int:
    """The OR of the slots' flags, or -1 if a slot points outside the pool or claims
    more than a buffer (what :func:`bad_slots` tells, plus the flags, for less).

    ``words`` is each slot's first 64-bit word (``Ring.slot_word``:
    ``buf_idx | len << 32 | flags << 48``).  One OR over them bounds every
    field at once -- a field's OR is at least its largest value -- so the
    usual batch costs two NumPy calls (the OR and the lowest index) instead
    of four; only when a bound is inconclusive does the exact maximum decide.
    NumPy's per-call cost, not the slots, is what a sync pays (hot path).
    """
    if not len(words):
        return 0
    acc = int(_OR(words))
    if _MIN(buf_idx) < 2:
        return -1
    if (acc & 0xFFFFFFFF) >= nbufs and _MAX(buf_idx) >= nbufs:
        return -1
    if (acc >> 32 & 0xFFFF) > buf_size and _MAX(lens) > buf_size:
        return -1
    return acc >> 48


# -- circular slot ranges ------------------------------------------------------------------

def spans(a: int, b: int, n: int) -> tuple[slice, ...]:
    """The circular slot range ``[a, b)`` of an n-slot ring as one or two slices.

    ``a == b`` is the empty range; a full ring is never named this way
    (netmap keeps one slot free).
    """
    if a <= b:
        return (slice(a, b),)
    return (slice(a, n), slice(0, b))


def distance(a: int, b: int, n: int) -> int:
    """Slots from ``a`` forward to ``b`` on an n-slot ring."""
    d = b - a
    return d + n if d < 0 else d


def gather(column: np.ndarray, a: int, b: int, n: int) -> np.ndarray:
    """``column`` (a slot field) over the circular range ``[a, b)``, as one array (a copy)."""
    s = spans(a, b, n)
    return column[s[0]].copy() if len(s) == 1 else np.concatenate([column[s[0]], column[s[1]]])


def scatter(column: np.ndarray, a: int, values: np.ndarray, n: int) -> None:
    """Store ``values`` into the circular range of ``len(values) < n`` slots from ``a``."""
    at = 0
    for s in spans(a, (a + len(values)) % n, n):
        column[s] = values[at:at + s.stop - s.start]
        at += s.stop - s.start


def rx_free_rows(kring: KRing, head: int) -> tuple[int, np.ndarray]:
    """The start of a copying RX engine's rxsync: release ``[hwcur, head)``, then
    return ``hwtail`` and the buffer indices of the slots it may fill, checked.

    A bad index (the user swapped one into a slot it released) raises
    :class:`SlotError` before the engine takes any packet, so none is lost.
    """
    ring, n = kring.ring, kring.num_slots
    hwcur = kring.hwcur
    if head != hwcur:
        clear_buf_changed(ring.slot_flags, hwcur, head, n)
        kring.hwcur = hwcur = head
    hwtail = kring.hwtail
    end = (hwcur - 1) % n
    rows = gather(ring.slot_buf_idx, hwtail, end, n)
    if len(rows) and (_MIN(rows) < 2 or _MAX(rows) >= kring.nbufs):
        raise SlotError(f"slots {hwtail}..{end} hold an invalid buffer")
    return hwtail, rows


def rx_room(kring: KRing) -> tuple[int, int]:
    """Where a process delivering into an RX ring (a switch, a monitored port) writes
    next, ``hwtail``, and how many slots it may fill: up to ``hwcur - 1``, one slot
    kept free as netmap keeps it.  Call it under the lock that serializes deliverers."""
    w, n = kring.w, kring.num_slots
    hwtail = w[HWTAIL]
    return hwtail, distance(hwtail, (w[HWCUR] - 1) % n, n)


def clear_buf_changed(flags: np.ndarray, a: int, b: int, n: int) -> None:
    """Clear ``NS_BUF_CHANGED`` in the circular range ``[a, b)`` of a ring's flags."""
    for s in spans(a, b, n):
        np.bitwise_and(flags[s], NOT_BUF_CHANGED, out=flags[s])
