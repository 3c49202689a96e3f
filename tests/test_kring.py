"""The ring protocol of :mod:`pynetmap.kring`, tested with no I/O (spec §2).

Rings live in a plain ``bytearray`` (``Region.wrap``): no shared memory, no
registry, no processes.  A *fake adapter* plays the kernel's part of a sync
(the port type's txsync/rxsync) following a plan that hypothesis draws: a TX
fake accepts a prefix of the submitted slots and reclaims some transmitted
ones, an RX fake releases up to ``head`` and delivers new slots; either may
raise :class:`SlotError`.  Hypothesis drives random user actions (legal
advances, arbitrary head/cur values, a scribbled tail, corrupted slots, a
peer's wake-ups) and syncs, and after every sync the ring is compared with an
independent model that states the rules with circular distances.

Layout of this file: the model; the fake adapter; the harness (user actions
and the checks after a sync); the property tests; unit tests (initial state,
reset_user, pending, circular helpers, doorbell words, holder words).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import pynetmap.kring as K
from pynetmap import layout as L
from pynetmap import osl
from pynetmap.batch import SlotBatch
from pynetmap.constants import NR_RX, NR_TX, NS_BUF_CHANGED, NS_MOREFRAG
from pynetmap.kring import (
    KRing,
    SlotError,
    bad_slots,
    check_slots,
    clear_buf_changed,
    distance,
    gather,
    held_slots,
    kring_words,
    scatter,
    set_holders,
    spans,
)
from pynetmap.objects import init_ring
from pynetmap.region import Region
from pynetmap.ring import Ring

NBUFS = 64
BUF_SIZE = 2048
RING_OFS = 128  # 64-byte aligned, with room for the kring block before it
POOL_OFS = 5 * 4096  # page-aligned, after the ring (up to 1264 slots)
MAX_SLOTS = 12


def first_bufs(n: int) -> np.ndarray:
    """The buffers of a new n-slot ring: 2, 3, ... (0 and 1 are reserved), cycling."""
    return (2 + np.arange(n) % (NBUFS - 2)).astype(np.uint32)


def make_ring(n: int, direction: int, fill: int = 0) -> Ring:
    """An n-slot ring over a fresh bytearray (pre-filled with ``fill`` bytes)."""
    assert RING_OFS + L.ring_size(n) <= POOL_OFS
    ba = bytearray(bytes([fill]) * (POOL_OFS + NBUFS * BUF_SIZE))
    region = Region.wrap(ba, mem_id=1, buf_pool_ofs=POOL_OFS, nbufs=NBUFS, buf_size=BUF_SIZE)
    init_ring(region, RING_OFS, n, direction, 0, first_bufs(n))
    return Ring(region, RING_OFS, direction, 0)


# =========================================================================================
# The model: the rules in terms of circular distances, independent of kring.py
# =========================================================================================

def dist(a: int, b: int, n: int) -> int:
    """Slots from a forward to b."""
    return (b - a) % n


def on_arc(x: int, lo: int, hi: int, n: int) -> bool:
    """x is a slot index on the circular arc from lo forward to hi, both ends included."""
    return 0 <= x < n and dist(lo, x, n) <= dist(lo, hi, n)


def sanitized(slots: np.ndarray, nbufs: int, buf_size: int) -> np.ndarray:
    """Reinit's slot scan (spec §2.5), one slot at a time."""
    out = slots.copy()
    for i in range(len(out)):
        if not 2 <= int(out["buf_idx"][i]) < nbufs:
            out["buf_idx"][i] = 0
            out["len"][i] = 0
        elif int(out["len"][i]) > buf_size:
            out["len"][i] = 0
    return out


@dataclass
class Model:
    """What the kernel side and the user's ring header must hold after each sync."""

    n: int
    tx: bool
    hwcur: int = 0
    hwtail: int = 0
    rhead: int = 0
    rcur: int = 0
    rtail: int = 0
    head: int = 0
    cur: int = 0
    tail: int = 0
    kicks: int = 0  # the peer's wake-ups not yet reported by a sync (``on_kicks``)

    @classmethod
    def initial(cls, n: int, tx: bool) -> Model:
        """Spec §2.1: TX has n-1 free slots (tail = hwtail = n-1), RX is empty."""
        t = n - 1 if tx else 0
        return cls(n, tx, hwtail=t, rtail=t, tail=t)

    def legal(self, head: int, cur: int) -> bool:
        """Spec §2.4: head moves forward within the user's part, cur lies in [head, end].

        TX measures from what the previous sync recorded (rhead/rtail, which
        differ from hwcur/hwtail after a partial accept); RX from hwcur/hwtail.
        """
        lo, hi = (self.rhead, self.rtail) if self.tx else (self.hwcur, self.hwtail)
        return on_arc(head, lo, hi, self.n) and on_arc(cur, head, hi, self.n)

    def sync(self, head: int, cur: int, accepted: bool, hwcur: int, hwtail: int) -> bool:
        """Apply one sync; returns True if the ring must have been reset.

        ``accepted``: the prologue passed and the adapter did not raise.
        ``hwcur``/``hwtail``: where the adapter (the kernel) left them.
        A reset always puts the user back at ``head = cur = hwcur``.
        """
        self.hwcur, self.hwtail = hwcur, hwtail
        if accepted:
            self.rhead = self.head = head
            self.rcur = self.cur = cur
        else:
            self.rhead = self.rcur = self.head = self.cur = self.hwcur
        self.rtail = self.tail = self.hwtail
        return not accepted


# =========================================================================================
# The fake adapter: the kernel's part of a sync, following a plan
# =========================================================================================

FAIL_MSG = "fake adapter refuses a slot"


@dataclass
class Seen:
    """What the adapter saw when the core called it."""

    head: int
    rhead: int
    rcur: int
    tail: int
    hwcur: int
    hwtail: int


@dataclass
class FakeAdapter:
    """``kring.sync``: moves hwcur/hwtail as the plan says; keeps its own copy of them.

    plan = (a, b, fail): TX accepts up to ``a`` of the submitted slots
    ``[hwcur, head)`` and reclaims up to ``b`` transmitted ones (hwtail moves
    at most to hwcur - 1).  RX releases everything up to ``head`` (netmap's
    rxsync always does, spec §2.3) and delivers up to ``a`` new slots (hwtail
    moves at most to hwcur - 1).  ``fail`` = "before"/"after" raises SlotError
    before/after moving anything.
    """

    ring: Ring
    hwcur: int = 0
    hwtail: int = 0
    plan: tuple[int, int, str | None] = (0, 0, None)
    calls: list[Seen] = field(default_factory=list)
    writes: dict[int, tuple[int, int]] = field(default_factory=dict)  # slot -> (buf_idx, len)
    serial: int = 0

    def __post_init__(self) -> None:
        self.hwcur, self.hwtail = self.ring.kring.hwcur, self.ring.kring.hwtail

    def __call__(self, kring: KRing, head: int) -> None:
        self.calls.append(Seen(head, kring.rhead, kring.rcur, self.ring.tail,
                               kring.hwcur, kring.hwtail))
        a, b, fail = self.plan
        if fail == "before":
            raise SlotError(FAIL_MSG)
        n = kring.num_slots
        if kring.dir == NR_TX:
            self.hwcur = (self.hwcur + min(a, dist(self.hwcur, head, n))) % n
            self.hwtail = (self.hwtail + min(b, dist(self.hwtail, self.hwcur - 1, n))) % n
        else:
            self.hwcur = head
            for _ in range(min(a, dist(self.hwtail, self.hwcur - 1, n))):
                self.serial += 1
                idx, ln = 2 + self.serial % (NBUFS - 2), 60 + self.serial % 1400
                self.ring.slot_buf_idx[self.hwtail] = idx
                self.ring.slot_len[self.hwtail] = ln
                self.writes[self.hwtail] = (idx, ln)
                self.hwtail = (self.hwtail + 1) % n
        kring.hwcur, kring.hwtail = self.hwcur, self.hwtail
        if fail == "after":
            raise SlotError(FAIL_MSG)


# =========================================================================================
# The harness: user actions, and the checks after every sync
# =========================================================================================

@st.composite
def start_states(draw: st.DrawFn, tx: bool) -> Model:
    """Any state a ring can be in after a sync (a partial accept, a wrap, a full ring)."""
    n = draw(st.integers(1, 9))
    if tx:  # hwtail < hwcur <= rhead <= cur <= rtail = hwtail, circularly
        hwtail = draw(st.integers(0, n - 1))
        hwcur = (hwtail + draw(st.integers(1, max(1, n - 1)))) % n
        head = (hwcur + draw(st.integers(0, dist(hwcur, hwtail, n)))) % n
    else:  # hwcur = rhead <= cur <= hwtail, hwtail <= hwcur - 1
        hwcur = head = draw(st.integers(0, n - 1))
        hwtail = (hwcur + draw(st.integers(0, max(0, n - 1)))) % n
    cur = (head + draw(st.integers(0, dist(head, hwtail, n)))) % n
    return Model(n, tx, hwcur, hwtail, head, cur, hwtail, head, cur, hwtail)


def states(tx: bool) -> st.SearchStrategy[Model]:
    return st.one_of(st.integers(1, 9).map(lambda n: Model.initial(n, tx)), start_states(tx))


class Harness:
    """One ring, its fake adapter and the model, from the model's state ``start``."""

    def __init__(self, n: int, direction: int, start: Model | None = None) -> None:
        self.n = n
        self.tx = direction == NR_TX
        self.ring = make_ring(n, direction)
        self.kring = self.ring.kring
        self.model = Model.initial(n, self.tx)
        if start is not None:  # a ring used before: write the state into the ring
            m = self.model = start
            kw = self.kring.w
            kw[K.HWCUR], kw[K.HWTAIL], kw[K.RHEAD], kw[K.RCUR], kw[K.RTAIL] = (
                m.hwcur, m.hwtail, m.rhead, m.rcur, m.rtail)
            self.ring.head, self.ring.cur, self.ring._hdr[L.RW_TAIL] = m.head, m.cur, m.tail
        self.check_published()
        self.fake = FakeAdapter(self.ring)
        self.kring.sync = self.fake
        self.kicks_reported: list[int] = []
        self.kring.on_kicks = self.kicks_reported.append
        self.kring.w[K.KICKS] = 2**32 - 2  # the wake-up counter wraps during a test
        self.kring.forget_kicks()
        self.now_ns = 1_700_000_000_999_999_999
        self.seen: set[str] = set()  # situations reached, for --hypothesis-show-statistics

    def report(self) -> None:
        for e in sorted(self.seen):
            event(e)

    def apply(self, action: tuple) -> None:
        getattr(self, action[0])(*action[1:])

    # -- user actions -------------------------------------------------------------------
    def _sane(self) -> bool:
        return self.ring.head < self.n and self.ring.tail < self.n

    def advance(self, k: int) -> None:
        """The user hands back up to k slots (legal if head/tail were)."""
        if self._sane():
            self.ring.advance(min(k, self.ring.space()))

    def cur_ahead(self, k: int) -> None:
        """The user moves only cur, up to k slots past head (holding slots / waiting)."""
        if self._sane():
            self.ring.cur = (self.ring.head + min(k, self.ring.space())) % self.n

    def head_to_hwcur(self) -> None:
        """head = cur = hwcur: legal for RX, illegal for TX after a partial accept."""
        self.ring.head = self.ring.cur = self.kring.hwcur

    def near(self, target: str, anchor: str, delta: int) -> None:
        """Set head, cur or both next to a boundary (off-by-one hunting)."""
        src = self.kring if anchor in ("hwcur", "hwtail", "rhead", "rtail") else self.ring
        v = (getattr(src, anchor) + delta) % self.n
        if target in ("head", "both"):
            self.ring.head = v
        if target in ("cur", "both"):
            self.ring.cur = v

    def set_head(self, v: int) -> None:
        self.ring.head = v

    def set_cur(self, v: int) -> None:
        self.ring.cur = v

    def set_both(self, v: int) -> None:
        self.ring.head = self.ring.cur = v

    def scribble_tail(self, v: int) -> None:
        self.ring._hdr[L.RW_TAIL] = v

    def slot(self, i: int, name: str, v: int) -> None:
        self.ring.slots[name][i % self.n] = v

    def kicked(self) -> None:
        """The peer rang our doorbell for this ring (what a successful ``kick`` counts)."""
        self.kring.w[K.KICKS] = (self.kring.w[K.KICKS] + 1) % 2**32
        self.model.kicks += 1

    # -- the sync and the checks --------------------------------------------------------
    def sync(self, a: int, b: int, fail: str | None) -> None:
        ring, kring, m, fake = self.ring, self.kring, self.model, self.fake
        head, cur = ring.head, ring.cur
        legal = m.legal(head, cur)
        before = ring.slots.copy()
        fake.plan, fake.calls, fake.writes = (a, b, fail), [], {}
        if self.tx and legal and m.rhead != m.hwcur:
            self.seen.add("TX: legal sync with rhead != hwcur (after a partial accept)")
        if self.tx and not legal and head != m.rhead and on_arc(head, m.hwcur, m.rhead, self.n):
            self.seen.add("TX: head in [hwcur, rhead) refused")

        ts_before = ring._hdr64[L.RQ_TS_SEC], ring._hdr64[L.RQ_TS_USEC]
        self.now_ns += 1_000_001_001
        self.kicks_reported.clear()

        why = kring.txsync() if self.tx else kring.rxsync(self.now_ns)
        kring.take_kicks()  # as poll does after each sync

        # the adapter: called once, after the prologue's updates, if head/cur are legal;
        # never with an illegal head (RX: netmap still runs the port's rxsync after the
        # reset, spec §2.3 -- accepted here from the reset state, pinned by a test below)
        if legal:
            assert len(fake.calls) == 1
            seen = fake.calls[0]
            assert (seen.head, seen.rhead, seen.rcur) == (head, head, cur)
            if self.tx:
                assert seen.tail == m.rtail  # a tail the user wrote is restored first
        elif self.tx:
            assert fake.calls == [], "the adapter was called with an illegal head/cur"
        else:
            assert len(fake.calls) <= 1
            for seen in fake.calls:
                assert (seen.head, seen.rhead, seen.rcur) == (m.hwcur, m.hwcur, m.hwcur)
        for seen in fake.calls:
            assert (seen.hwcur, seen.hwtail) == (m.hwcur, m.hwtail)  # the core left them
        raised = bool(fake.calls) and fail is not None
        reset = m.sync(head, cur, legal and not raised, fake.hwcur, fake.hwtail)
        self.seen.add(f"legal={legal} raised={raised}")

        # the return value
        if not reset:
            assert why is None
        else:
            assert isinstance(why, str) and "ring reset" in why
            if legal:
                assert FAIL_MSG in why
            elif not raised:
                assert f"head {head}" in why and f"cur {cur}" in why

        # the slots: the adapter's deliveries, sanitized on a reset, nothing else
        expected = before.copy()
        for s, (idx, ln) in fake.writes.items():
            expected["buf_idx"][s], expected["len"][s] = idx, ln
        if reset:
            expected = sanitized(expected, NBUFS, BUF_SIZE)
        assert ring.slots.tobytes() == expected.tobytes()

        # the timestamp: every RX sync writes it, a TX sync never does (spec §2.3)
        ts = ring._hdr64[L.RQ_TS_SEC], ring._hdr64[L.RQ_TS_USEC]
        if self.tx:
            assert ts == ts_before
        else:
            assert ts == (self.now_ns // 10**9, self.now_ns // 1000 % 10**6)

        # the peer's wake-ups: reported once, never invented, all of them
        assert 0 not in self.kicks_reported and len(self.kicks_reported) <= 1
        m.kicks -= sum(self.kicks_reported)
        assert m.kicks == 0

        self.check_published()

    def check_published(self) -> None:
        """The user's header and the kring hold the model's values (finalize: tail = hwtail)."""
        ring, kring, m = self.ring, self.kring, self.model
        assert (ring.head, ring.cur, ring.tail) == (m.head, m.cur, m.tail)
        assert (kring.hwcur, kring.hwtail, kring.rhead, kring.rcur, kring.rtail) == (
            m.hwcur, m.hwtail, m.rhead, m.rcur, m.rtail)
        assert kring.pending() == (m.cur != m.tail)
        # a sync leaves nothing to fix: syncing again unchanged would be accepted
        assert m.legal(ring.head, ring.cur)
        if not self.tx:
            held = held_slots(kring_words(ring.region.mem, RING_OFS), self.n)
            assert held.tolist() == [dist(m.hwcur, i, self.n) < dist(m.hwcur, m.hwtail, self.n)
                                     for i in range(self.n)]


INDEX = st.one_of(st.integers(0, MAX_SLOTS), st.sampled_from([2**31, 2**32 - 1]))
SLOT_WRITES = st.sampled_from([
    ("buf_idx", 0), ("buf_idx", 1), ("buf_idx", NBUFS), ("buf_idx", 2**32 - 1),  # bad
    ("buf_idx", 2), ("buf_idx", NBUFS - 1),  # edges, valid
    ("len", BUF_SIZE + 1), ("len", 65535),  # too long
    ("len", BUF_SIZE), ("len", 0),  # valid
    ("flags", NS_BUF_CHANGED), ("flags", 0xFFFF),  # reinit leaves flags alone
])
COUNT = st.one_of(st.integers(0, 2), st.integers(0, MAX_SLOTS))  # favour partial accepts
#: each kind of action with its arguments; ACTION picks kinds with these weights
ARGS = {
    "sync": st.tuples(COUNT, COUNT, st.sampled_from([None, None, None, "before", "after"])),
    "advance": st.tuples(st.integers(0, MAX_SLOTS)),
    "cur_ahead": st.tuples(st.integers(0, MAX_SLOTS)),
    "head_to_hwcur": st.just(()),
    "near": st.tuples(st.sampled_from(["head", "cur", "both"]),
                      st.sampled_from(["head", "cur", "tail", "hwcur", "hwtail", "rhead", "rtail"]),
                      st.integers(-2, 2)),
    "set_head": st.tuples(INDEX),
    "set_cur": st.tuples(INDEX),
    "set_both": st.tuples(INDEX),
    "scribble_tail": st.tuples(INDEX),
    "slot": st.tuples(st.integers(0, MAX_SLOTS - 1)).flatmap(
        lambda t: SLOT_WRITES.map(lambda w: t + w)),
    "kicked": st.just(()),
}
WEIGHTS = {"sync": 6, "advance": 6, "cur_ahead": 2, "head_to_hwcur": 2, "near": 3, "set_head": 1,
           "set_cur": 1, "set_both": 1, "scribble_tail": 1, "slot": 2, "kicked": 1}
ACTION = st.sampled_from([k for k, w in WEIGHTS.items() for _ in range(w)]).flatmap(
    lambda kind: ARGS[kind].map(lambda args: (kind, *args)))


# =========================================================================================
# Property tests
# =========================================================================================

@settings(max_examples=300, deadline=None)
@given(states(True), st.lists(ACTION, min_size=5, max_size=60))
def test_tx_ring_follows_the_model(start: Model, actions: list[tuple]) -> None:
    h = Harness(start.n, NR_TX, start)
    for a in actions:
        h.apply(a)
    h.sync(MAX_SLOTS, MAX_SLOTS, None)
    h.report()


@settings(max_examples=300, deadline=None)
@given(states(False), st.lists(ACTION, min_size=5, max_size=60))
def test_rx_ring_follows_the_model(start: Model, actions: list[tuple]) -> None:
    h = Harness(start.n, NR_RX, start)
    for a in actions:
        h.apply(a)
    h.sync(MAX_SLOTS, MAX_SLOTS, None)
    h.report()


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_one_sync_from_any_state(data: st.DataObject) -> None:
    """Dense coverage of the prologue's decision: any head and cur (and tail), one sync."""
    direction = data.draw(st.sampled_from([NR_TX, NR_RX]))
    m = data.draw(start_states(direction == NR_TX))
    h = Harness(m.n, direction, m)
    h.set_head(data.draw(st.integers(0, m.n)))  # n: out of range
    h.set_cur(data.draw(st.integers(0, m.n)))
    if data.draw(st.booleans()):
        h.scribble_tail(data.draw(st.integers(0, m.n)))
    h.sync(*data.draw(ARGS["sync"]))
    h.report()


# A few fixed scenarios, so the rules that matter most are visible as examples.

def test_tx_partial_accept_measures_the_next_head_from_rhead() -> None:
    h = Harness(8, NR_TX)
    h.advance(5)
    h.sync(2, 0, None)  # the kernel takes 2 of the 5 slots
    assert (h.kring.hwcur, h.kring.rhead) == (2, 5)
    h.set_both(3)  # inside [hwcur, rhead): moving head back is illegal
    h.sync(0, 0, None)
    assert (h.ring.head, h.ring.cur, h.kring.rhead) == (2, 2, 2)  # reset to hwcur
    h.advance(3)
    h.sync(8, 8, None)  # takes the rest, reclaims all
    assert (h.kring.hwcur, h.kring.hwtail, h.ring.tail) == (5, 4, 4)


def test_tx_scribbled_tail_is_restored() -> None:
    h = Harness(8, NR_TX)
    h.advance(2)
    h.scribble_tail(1)
    h.sync(2, 0, None)
    assert h.fake.calls[0].tail == 7
    assert h.ring.tail == 7


def test_rx_scribbled_tail_is_restored() -> None:
    h = Harness(8, NR_RX)
    h.sync(4, 0, None)
    h.scribble_tail(7)
    h.sync(0, 0, None)
    assert h.ring.tail == 4


def test_rx_reset_still_runs_the_adapter_rxsync() -> None:
    """Spec §2.3 step 1: on a failed RX prologue netmap reinits the ring and *still* runs
    the port's rxsync (NIOCRXSYNC and poll alike), so packets that arrived meanwhile are
    imported by the same call.  TX is different: the port's txsync is skipped (§2.5)."""
    h = Harness(8, NR_RX)
    h.set_both(5)  # past tail (0): illegal
    h.sync(3, 0, None)  # the kernel has 3 new packets
    assert [c.head for c in h.fake.calls] == [0], "rxsync skipped after the reset"
    assert (h.ring.head, h.ring.cur, h.ring.tail) == (0, 0, 3)


def test_tx_reset_skips_the_adapter_txsync() -> None:
    h = Harness(8, NR_TX)
    h.set_both(8)  # out of range
    h.sync(3, 3, None)
    assert h.fake.calls == []
    assert (h.ring.head, h.ring.cur, h.ring.tail) == (0, 0, 7)


def test_tx_sync_without_an_adapter_resets_the_ring() -> None:
    ring = make_ring(8, NR_TX)
    ring.advance(3)
    why = ring.kring.txsync()
    assert why is not None and "not registered" in why
    assert (ring.head, ring.cur, ring.tail) == (0, 0, 7)


@pytest.mark.parametrize("direction", [NR_TX, NR_RX])
def test_corrupt_kernel_state_fails_the_prologue(direction: int) -> None:
    ring = make_ring(8, direction)
    calls: list[int] = []
    ring.kring.sync = lambda kr, head: calls.append(head)
    ring.kring.hwtail = 8  # out of range: the kernel side is broken
    ring.head = ring.cur = 1  # would pass the prologue but for that
    why = ring.kring.txsync() if direction == NR_TX else ring.kring.rxsync(0)
    assert isinstance(why, str) and "ring reset" in why
    assert 1 not in calls  # never called with the user's head
    if direction == NR_TX:
        assert calls == []


# =========================================================================================
# Unit tests: initial state, reset_user, pending
# =========================================================================================

@pytest.mark.parametrize("n", [1, 2, 7, 8, 1024])
def test_initial_tx_ring(n: int) -> None:
    ring = make_ring(n, NR_TX, fill=0xFF)  # whatever was in the memory before
    kr = ring.kring
    assert (ring.num_slots, ring.buf_size, ring.dir, ring.ringid) == (n, BUF_SIZE, NR_TX, 0)
    assert ring.buf_ofs == POOL_OFS - RING_OFS
    assert (ring.head, ring.cur, ring.tail) == (0, 0, n - 1)
    assert (kr.hwcur, kr.hwtail, kr.rhead, kr.rcur, kr.rtail) == (0, n - 1, 0, 0, n - 1)
    assert ring.space() == n - 1
    assert kr.pending() == (n > 1)
    assert (ring.slot_buf_idx == first_bufs(n)).all()
    assert (ring.slot_len == BUF_SIZE).all() and (ring.slot_flags == 0).all()
    assert (ring.slots["ptr"] == 0).all()
    assert (kr.holders, kr.ever_held, kr.holder_gone()) == (0, False, False)
    assert (kr.w[K.NEED_KICK], kr.w[K.KICKS], kr.seen_kicks) == (0, 0, 0)


@pytest.mark.parametrize("n", [1, 2, 7, 8, 1024])
def test_initial_rx_ring(n: int) -> None:
    ring = make_ring(n, NR_RX, fill=0xFF)
    kr = ring.kring
    assert (ring.head, ring.cur, ring.tail) == (0, 0, 0)
    assert (kr.hwcur, kr.hwtail, kr.rhead, kr.rcur, kr.rtail) == (0, 0, 0, 0, 0)
    assert ring.space() == 0 and not kr.pending()
    assert (ring.slot_buf_idx == first_bufs(n)).all()
    assert (ring.slot_len == BUF_SIZE).all() and (ring.slot_flags == 0).all()
    assert ring.ts == 0
    assert (kr.holders, kr.ever_held, kr.holder_gone()) == (0, False, False)
    assert (kr.w[K.NEED_KICK], kr.w[K.KICKS], kr.seen_kicks) == (0, 0, 0)
    assert not held_slots(kring_words(ring.region.mem, RING_OFS), n).any()


@pytest.mark.parametrize("direction", [NR_TX, NR_RX])
def test_reset_user_copies_the_kernel_view_and_keeps_slots(direction: int) -> None:
    ring = make_ring(8, direction)
    kr = ring.kring
    kr.hwcur, kr.hwtail = 6, 3
    ring.head, ring.cur = 1, 2**32 - 1
    ring._hdr[L.RW_TAIL] = 9
    ring.slot_buf_idx[0] = 0  # invalid, but reset_user is not reinit
    kr.reset_user()
    assert (ring.head, ring.cur, ring.tail) == (6, 6, 3)
    assert (kr.rhead, kr.rcur, kr.rtail) == (6, 6, 3)
    assert (kr.hwcur, kr.hwtail) == (6, 3)
    assert ring.slot_buf_idx[0] == 0


def test_reinit_sanitizes_every_slot_and_resets() -> None:
    ring = make_ring(6, NR_TX)
    ring.slot_buf_idx[:] = [0, 1, 5, NBUFS, 7, 8]
    ring.slot_len[:] = [9, 9, BUF_SIZE + 1, 9, BUF_SIZE, 9]
    ring.slot_flags[:] = NS_MOREFRAG
    ring.head = ring.cur = 4
    why = ring.kring.reinit("because")
    assert why.startswith("because") and "ring reset" in why
    assert ring.slot_buf_idx.tolist() == [0, 0, 5, 0, 7, 8]
    assert ring.slot_len.tolist() == [0, 0, 0, 0, BUF_SIZE, 9]
    assert (ring.slot_flags == NS_MOREFRAG).all()
    assert (ring.head, ring.cur, ring.tail) == (0, 0, 5)


def test_pending_is_cur_not_tail() -> None:
    ring = make_ring(8, NR_TX)
    kr = ring.kring
    assert kr.pending()
    ring.cur = 7
    assert not kr.pending()
    ring.head = 3  # head does not matter
    assert not kr.pending()
    ring.cur = 0
    assert kr.pending()


# =========================================================================================
# Unit tests: circular helpers
# =========================================================================================

def arc(a: int, b: int, n: int) -> list[int]:
    """The slots of the circular range [a, b), as a list (the model)."""
    return [(a + i) % n for i in range(dist(a, b, n))]


@given(st.integers(1, 12).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(0, n - 1))))
def test_spans_distance_gather(nab: tuple[int, int, int]) -> None:
    n, a, b = nab
    assert distance(a, b, n) == dist(a, b, n)
    s = spans(a, b, n)
    assert 1 <= len(s) <= 2
    assert [i for sl in s for i in range(n)[sl]] == arc(a, b, n)
    col = np.arange(100, 100 + n, dtype=np.uint32)
    g = gather(col, a, b, n)
    assert g.tolist() == [100 + i for i in arc(a, b, n)]
    g[:] = 0  # a copy, not a view
    assert col.tolist() == list(range(100, 100 + n))


@given(st.integers(1, 12).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(0, n - 1))))
def test_scatter(nak: tuple[int, int, int]) -> None:
    n, a, k = nak  # k < n values
    col = np.zeros(n, np.uint32)
    scatter(col, a, np.arange(1, k + 1, dtype=np.uint32), n)
    want = [0] * n
    for j, i in enumerate(arc(a, (a + k) % n, n)):
        want[i] = j + 1
    assert col.tolist() == want


@given(st.integers(1, 12).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(0, n - 1))))
def test_clear_buf_changed_on_ring_flags(nab: tuple[int, int, int]) -> None:
    n, a, b = nab
    ring = make_ring(n, NR_RX)
    ring.slot_flags[:] = NS_BUF_CHANGED | NS_MOREFRAG | 0x0100
    clear_buf_changed(ring.slot_flags, a, b, n)  # a strided view of the slot array
    inside = set(arc(a, b, n))
    assert ring.slot_flags.tolist() == [
        (NS_MOREFRAG | 0x0100) if i in inside else (NS_BUF_CHANGED | NS_MOREFRAG | 0x0100)
        for i in range(n)]
    assert (ring.slot_buf_idx == first_bufs(n)).all()  # neighbours untouched


@given(st.integers(1, 12).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(0, n - 1))))
def test_held_slots(nab: tuple[int, int, int]) -> None:
    n, a, b = nab
    ring = make_ring(n, NR_RX)
    ring.kring.hwcur, ring.kring.hwtail = a, b
    held = held_slots(kring_words(ring.region.mem, RING_OFS), n)
    assert held.tolist() == [i in arc(a, b, n) for i in range(n)]


@given(st.integers(1, 12).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(0, n - 1))))
def test_rx_room_is_up_to_one_slot_before_hwcur(nab: tuple[int, int, int]) -> None:
    """A deliverer may fill, from hwtail, every slot that is neither held by the user
    (``[hwcur, hwtail)``) nor the one kept free before hwcur."""
    n, hwcur, hwtail = nab
    ring = make_ring(n, NR_RX)
    ring.kring.hwcur, ring.kring.hwtail = hwcur, hwtail
    held = len(arc(hwcur, hwtail, n))
    assert K.rx_room(ring.kring) == (hwtail, n - 1 - held)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1),
                          st.integers(0, 2**16 - 1)), max_size=24),
       st.integers(3, 2**20), st.integers(64, 65535))
def test_check_slots_matches_a_per_slot_model(slots: list[tuple[int, int, int]], nbufs: int,
                                             buf_size: int) -> None:
    """The OR-bounded check says exactly what a slot-by-slot look says, whatever the
    values (boundaries included), and returns the OR of the flags."""
    n = max(1, len(slots))
    ring = make_ring(n, NR_TX)
    # values near the limits, where an inexact bound would err
    vals = [(b % (nbufs + 3) if i % 2 else b, ln % (buf_size + 3) if i % 3 else ln, f)
            for i, (b, ln, f) in enumerate(slots)]
    for i, (b, ln, f) in enumerate(vals):
        ring.slot_buf_idx[i], ring.slot_len[i], ring.slot_flags[i] = b, ln, f
    k = len(vals)
    bad = any(b < 2 or b >= nbufs or ln > buf_size for b, ln, _ in vals)
    flags = 0
    for _, _, f in vals:
        flags |= f
    got = check_slots(ring.slot_word[:k], ring.slot_buf_idx[:k], ring.slot_len[:k], nbufs,
                      buf_size)
    assert got == (-1 if bad else flags)
    assert bad == bad_slots(ring.slot_buf_idx[:k], ring.slot_len[:k], nbufs, buf_size)


def test_set_len_flags_stores_both_fields_over_a_wrap() -> None:
    n = 8
    ring = make_ring(n, NR_TX)
    ring.slot_flags[:] = NS_BUF_CHANGED
    ring.slot_len[:] = 7
    b = SlotBatch(ring, 6, 4)  # slots 6, 7, 0, 1
    b.set_len_flags(1514, NS_MOREFRAG)
    assert ring.slot_len.tolist() == [1514, 1514, 7, 7, 7, 7, 1514, 1514]
    assert ring.slot_flags.tolist() == [NS_MOREFRAG] * 2 + [NS_BUF_CHANGED] * 4 + [NS_MOREFRAG] * 2
    assert (ring.slot_buf_idx == first_bufs(n)).all()  # the neighbouring field is untouched
    with pytest.raises(ValueError, match="16-bit"):
        b.set_len_flags(65536)


def test_helpers_over_a_wrap() -> None:
    n = 8
    assert spans(6, 2, n) == (slice(6, 8), slice(0, 2))
    assert spans(3, 3, n) == (slice(3, 3),)
    assert distance(6, 2, n) == 4 and distance(2, 6, n) == 4 and distance(5, 5, n) == 0
    col = np.arange(n, dtype=np.uint32)
    assert gather(col, 6, 2, n).tolist() == [6, 7, 0, 1]
    scatter(col, 7, np.array([70, 80, 90], np.uint32), n)
    assert col.tolist() == [80, 90, 2, 3, 4, 5, 6, 70]


# =========================================================================================
# Unit tests: doorbell words
# =========================================================================================

@pytest.fixture
def rung(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace the doorbell system call: records addresses, reports success."""
    calls: list[int] = []

    def fake_ring(address: int) -> bool:
        calls.append(address)
        return True

    monkeypatch.setattr(osl, "ring", fake_ring)
    return calls


def two_views(direction: int = NR_RX) -> tuple[KRing, KRing]:
    """The waiter's and the peer's KRing over the same kring words (as two processes have)."""
    ring = make_ring(8, direction)
    return ring.kring, Ring(ring.region, RING_OFS, direction, 0).kring


def reporting(kr: KRing) -> list[int]:
    """Give ``kr`` an adapter that does nothing; returns the list its syncs report kicks to."""
    reported: list[int] = []
    kr.on_kicks = reported.append
    kr.sync = lambda kring, head: None
    return reported


def sync(kr: KRing) -> str | None:
    """A sync as ``poll`` makes it: the ring's sync, then the wake-ups sent for it."""
    why = kr.txsync() if kr.dir == NR_TX else kr.rxsync(0)
    kr.take_kicks()
    return why


@pytest.mark.parametrize("direction", [NR_TX, NR_RX])
def test_a_sync_alone_leaves_the_kicks_to_poll(rung: list[int], direction: int) -> None:
    """txsync()/rxsync() outside poll do not drain the doorbell: between arm() and
    the wait on fileno() they would eat the wake-up the waiter sleeps on."""
    waiter, peer = two_views(direction)
    reported = reporting(waiter)
    waiter.arm(40125)
    peer.kick()
    assert (waiter.txsync() if direction == NR_TX else waiter.rxsync(0)) is None
    assert reported == []
    waiter.take_kicks()
    assert reported == [1]


def test_kick_without_need_kick_makes_no_call(rung: list[int]) -> None:
    waiter, peer = two_views()
    reported = reporting(waiter)
    peer.kick()
    assert rung == [] and waiter.w[K.KICKS] == 0
    assert sync(waiter) is None and reported == []


@pytest.mark.parametrize("direction", [NR_TX, NR_RX])
def test_kick_rings_the_armed_doorbell_once(rung: list[int], direction: int) -> None:
    waiter, peer = two_views(direction)
    reported = reporting(waiter)
    waiter.arm(40123)
    assert (peer.w[K.NEED_KICK], peer.w[K.WAITER]) == (1, 40123)
    peer.kick()
    assert rung == [40123]
    assert (peer.w[K.NEED_KICK], peer.w[K.KICKS]) == (0, 1)
    peer.kick()  # need_kick was cleared: no second call until re-armed
    assert rung == [40123] and peer.w[K.KICKS] == 1
    assert sync(waiter) is None and reported == [1]  # the waiter's sync drains one
    assert sync(waiter) is None and reported == [1]  # and only once
    waiter.arm(40124)
    peer.kick()
    waiter.arm(40124)
    peer.kick()
    assert rung == [40123, 40124, 40124]
    assert sync(waiter) is None and reported == [1, 2]


def test_disarm(rung: list[int]) -> None:
    waiter, peer = two_views()
    reported = reporting(waiter)
    waiter.arm(5000)
    waiter.disarm()
    assert waiter.w[K.NEED_KICK] == 0
    peer.kick()
    assert rung == [] and peer.w[K.KICKS] == 0
    sync(waiter)
    assert reported == []


def test_notify_defaults_to_kick(rung: list[int]) -> None:
    waiter, peer = two_views(NR_TX)
    waiter.arm(6000)
    peer.notify()
    assert rung == [6000] and peer.w[K.KICKS] == 1


def test_failed_doorbell_clears_need_kick_and_counts_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def refused(address: int) -> bool:
        calls.append(address)
        return False  # the sleeper's socket is gone

    monkeypatch.setattr(osl, "ring", refused)
    waiter, peer = two_views()
    reported = reporting(waiter)
    waiter.arm(7000)
    peer.kick()
    assert calls == [7000] and (peer.w[K.NEED_KICK], peer.w[K.KICKS]) == (0, 0)
    peer.kick()
    assert calls == [7000]
    sync(waiter)
    assert reported == []


def test_forget_kicks(rung: list[int]) -> None:
    waiter, peer = two_views()
    reported = reporting(waiter)
    waiter.arm(7500)
    peer.kick()
    waiter.forget_kicks()  # the doorbell was emptied: nothing left to drain
    sync(waiter)
    assert reported == []


def test_kick_count_wraps(rung: list[int]) -> None:
    waiter, peer = two_views()
    reported = reporting(waiter)
    waiter.w[K.KICKS] = 0xFFFFFFFF
    waiter.forget_kicks()
    waiter.arm(8000)
    peer.kick()
    assert waiter.w[K.KICKS] == 0
    sync(waiter)
    assert reported == [1]


def test_a_new_view_starts_with_the_kicks_already_sent(rung: list[int]) -> None:
    waiter, peer = two_views()
    reported = reporting(waiter)
    waiter.arm(9000)
    peer.kick()
    late = Ring(waiter.ring.region, RING_OFS, NR_RX, 0).kring
    late_reported = reporting(late)
    sync(late)
    assert late_reported == []
    sync(waiter)
    assert reported == [1]


def test_tx_reset_loses_no_kicks(rung: list[int]) -> None:
    waiter, peer = two_views(NR_TX)
    reported = reporting(waiter)
    waiter.arm(9100)
    peer.kick()
    waiter.ring.head, waiter.ring.cur = 5, 4  # cur behind head: illegal, the ring is reset
    assert isinstance(sync(waiter), str)
    assert sync(waiter) is None
    assert sum(reported) == 1 and 0 not in reported


# =========================================================================================
# Unit tests: holder words
# =========================================================================================

def sleeper() -> subprocess.Popen:
    """A child that runs until its stdin is closed."""
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)


def end(p: subprocess.Popen) -> None:
    p.stdin.close()
    p.wait(timeout=60)


def ring_and_words() -> tuple[KRing, np.ndarray]:
    ring = make_ring(8, NR_TX)
    return ring.kring, kring_words(ring.region.mem, RING_OFS)


def test_never_held() -> None:
    kr, words = ring_and_words()
    assert (kr.holders, kr.ever_held, kr.holder_gone()) == (0, False, False)
    set_holders(words, 0)  # recording no holder does not make it "held once"
    assert (kr.holders, kr.ever_held, kr.holder_gone()) == (0, False, False)


def test_held_by_this_process() -> None:
    kr, words = ring_and_words()
    set_holders(words, 1, os.getpid(), osl.process_token())
    assert (kr.holders, kr.ever_held, kr.holder_gone()) == (1, True, False)
    set_holders(words, 3, os.getpid(), osl.process_token())
    assert (kr.holders, kr.ever_held, kr.holder_gone()) == (3, True, False)


def test_held_then_released() -> None:
    kr, words = ring_and_words()
    set_holders(words, 1, os.getpid(), osl.process_token())
    set_holders(words, 0)
    assert (kr.holders, kr.ever_held, kr.holder_gone()) == (0, True, True)


def test_held_by_a_dead_process() -> None:
    kr, words = ring_and_words()
    p = sleeper()
    token = osl.process_token(p.pid)
    end(p)  # exited and reaped
    set_holders(words, 1, p.pid, token)
    assert (kr.holders, kr.ever_held, kr.holder_gone()) == (1, True, True)


def test_held_by_a_live_process_and_the_token_counts() -> None:
    kr, words = ring_and_words()
    p = sleeper()
    try:
        token = osl.process_token(p.pid)
        set_holders(words, 1, p.pid, token)
        assert (kr.holders, kr.ever_held, kr.holder_gone()) == (1, True, False)
        if token == 0:
            pytest.skip("this OS gives no process token")
        set_holders(words, 1, p.pid, token + 1)  # the pid reused by another process
        assert kr.holder_gone()
        set_holders(words, 1, p.pid, token | 1 << 32)  # same low word: the high one counts
        assert kr.holder_gone()
    finally:
        end(p)
