"""lb's forwarding (spec §6.7): hash, pick a pipe, swap buffers; overflow queues; chaining.

Everything works on a batch of slots at once.  A batch is a structured
array of slot records (``buf_idx``, ``len``, ``flags``, ``ptr``) copied out
of a ring with :func:`pynetmap.kring.gather`; the hash travels in ``ptr``.
:meth:`Balancer.forward` sorts a batch by output pipe (a stable argsort), puts
each pipe's share into its TX ring with one :func:`~pynetmap.kring.scatter`
(``NS_BUF_CHANGED``), and returns for every record the buffer its source slot
gets back: the TX slot's old buffer (the swap), a free extra buffer (the
packet waits in an overflow queue) or its own (dropped).  The Python work
is per pipe and per batch, never per packet.

Multi-slot packets (``NS_MOREFRAG``): every fragment carries the first one's
hash, so a packet stays in one pipe; input batches end on a packet end;
a pipe's ring, overflow queue and drops take whole packets, so a pipe's
``head`` only ever stops at a packet end (netmap's ``shadow_head`` is not
needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ... import layout as L
from ...constants import NS_BUF_CHANGED, NS_MOREFRAG
from ...kring import distance, gather, scatter
from ...port import Port
from ...ring import Ring
from .hash import batch_hash

#: netmap's BUF_REVOKE: buffers taken back at once from the longest overflow queue
BUF_REVOKE = 150
#: netmap's NETMAP_MAX_FRAGS: a revoked queue keeps at least this many entries
KEEP_AFTER_REVOKE = 64


def whole(flags: np.ndarray, k: int) -> int:
    """The largest ``j <= k`` such that the first ``j`` slots end on a packet end."""
    if k <= 0:
        return 0
    if not flags[k - 1] & NS_MOREFRAG:
        return k
    ends = np.flatnonzero((flags[:k] & NS_MOREFRAG) == 0)
    return int(ends[-1]) + 1 if len(ends) else 0


class SlotQueue:
    """A circular queue of slot records (netmap lb's ``struct overflow_queue``)."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._cap = size + 1  # never full as a circular range, so kring's spans name it
        self._q = np.zeros(self._cap, L.SLOT_DTYPE)
        self.head = 0
        self.n = 0

    def room(self) -> int:
        return self.size - self.n

    def put(self, recs: np.ndarray) -> None:
        if len(recs) > self.room():
            raise OverflowError(f"{self.name}: queue full")
        scatter(self._q, (self.head + self.n) % self._cap, recs, self._cap)
        self.n += len(recs)

    def peek_flags(self, k: int) -> np.ndarray:
        return gather(self._q["flags"], self.head, (self.head + k) % self._cap, self._cap)

    def take(self, k: int) -> np.ndarray:
        out = gather(self._q, self.head, (self.head + k) % self._cap, self._cap)
        self.head = (self.head + k) % self._cap
        self.n -= k
        return out


@dataclass
class OutPipe:
    """One output pipe: its port and TX ring, counters, overflow queue, chaining mark."""

    interface: str
    port: Port
    ring: Ring
    index: int  #: position among all output pipes (``output_ring`` in the stats)
    oq: SlotQueue | None = None
    pkts: int = 0
    drop: int = 0
    bytes: int = 0
    drop_bytes: int = 0
    last_tail: int = 0  #: first TX slot whose release has not been chained yet

    def __post_init__(self) -> None:
        self.last_tail = self.ring.next(self.ring.tail)


@dataclass
class Group:
    """``-p [name:]N``: N pipes that between them receive every packet."""

    name: str
    nports: int
    first_id: int = 0
    pipes: list[OutPipe] = field(default_factory=list)


class Balancer:
    """The forwarding state: groups of output pipes, overflow and free queues, counters."""

    def __init__(self, groups: list[Group], extra: list[int] | None = None) -> None:
        self.groups = groups
        self.pipes = [p for g in groups for p in g.pipes]
        self.forwarded = 0
        self.dropped = 0
        self.received = 0
        self.received_bytes = 0
        self.non_ip = 0
        #: free extra buffers (None without -B); with them each pipe gets an overflow queue
        self.freeq: SlotQueue | None = None
        if extra:
            self.freeq = SlotQueue(len(extra), "free queue")
            recs = np.zeros(len(extra), L.SLOT_DTYPE)
            recs["buf_idx"] = extra
            self.freeq.put(recs)
            for p in self.pipes:
                p.oq = SlotQueue(len(extra), f"oq {p.interface}")

    # -- the input ------------------------------------------------------------
    def receive(self, rx: Ring, batch: int) -> int:
        """Forward up to ``batch`` received slots of ``rx`` (whole packets) to group 0."""
        n = rx.num_slots
        k = min(batch, rx.space())
        if not k:
            return 0
        a = rx.head
        flags = gather(rx.slot_flags, a, (a + k) % n, n)
        k2 = whole(flags, k)
        if not k2:  # a packet longer than the batch: take it whole if it is all there
            avail = rx.space()
            flags = gather(rx.slot_flags, a, (a + avail) % n, n)
            k2 = whole(flags, avail)
            if not k2:
                return 0
        k = k2
        recs = gather(rx.slots, a, (a + k) % n, n)
        lens = recs["len"]
        more = (recs["flags"] & NS_MOREFRAG) != 0
        if more.any():  # fragments reuse their packet's first slot's hash
            starts = np.concatenate(([True], ~more[:-1]))
            first = np.flatnonzero(starts)
            h = batch_hash(rx.bufs, recs["buf_idx"][first], lens[first])
            recs["ptr"] = h[np.cumsum(starts) - 1]
        else:
            recs["ptr"] = batch_hash(rx.bufs, recs["buf_idx"], lens)
        self.received += k
        self.received_bytes += int(lens.sum())
        self.non_ip += int(np.count_nonzero(recs["ptr"] == 0))
        back = self.forward(self.groups[0], recs)
        scatter(rx.slot_buf_idx, a, back, n)
        scatter(rx.slot_flags, a, np.full(k, NS_BUF_CHANGED, np.uint16), n)
        rx.advance(k)
        return k

    # -- one group ------------------------------------------------------------
    def forward(self, g: Group, recs: np.ndarray) -> np.ndarray:
        """Send ``recs`` (whole packets, hash in ``ptr``) to ``g``; the buffers to give back."""
        back = recs["buf_idx"].copy()
        if g.nports == 1:
            order = np.arange(len(recs))
            counts = [len(recs)]
        else:
            dest = (recs["ptr"] % np.uint64(g.nports)).astype(np.intp)
            order = np.argsort(dest, kind="stable")
            counts = np.bincount(dest, minlength=g.nports).tolist()
        pos = 0
        for p, c in zip(g.pipes, counts, strict=True):
            if not c:
                continue
            rows = order[pos:pos + c]
            pos += c
            k = 0
            if p.oq is None or not p.oq.n:  # queued packets go first: no overtaking
                k = whole(recs["flags"][rows], min(c, p.ring.space()))
            if k:
                self._put(p, recs[rows[:k]], back, rows[:k])
            if k < c:
                self._overflow(p, recs, rows[k:], back)
        return back

    def _put(self, p: OutPipe, recs: np.ndarray, back: np.ndarray | None,
             rows: np.ndarray | None) -> np.ndarray:
        """Swap ``recs`` into ``p``'s TX ring at head; returns the ring's old buffers."""
        ring = p.ring
        n, a, k = ring.num_slots, ring.head, len(recs)
        old = gather(ring.slot_buf_idx, a, (a + k) % n, n)
        recs["flags"] |= NS_BUF_CHANGED
        scatter(ring.slots, a, recs, n)
        ring.advance(k)
        if back is not None:
            back[rows] = old
        p.pkts += k
        p.bytes += int(recs["len"].sum())
        self.forwarded += k
        return old

    def _overflow(self, p: OutPipe, recs: np.ndarray, rows: np.ndarray,
                  back: np.ndarray) -> None:
        """Queue what the ring had no room for (taking free buffers), or drop it."""
        q, freeq = p.oq, self.freeq
        while len(rows) and q is not None and freeq is not None:
            if not freeq.n:
                self._revoke()
            m = whole(recs["flags"][rows], min(len(rows), q.room(), freeq.n))
            if not m:
                break
            q.put(recs[rows[:m]])
            back[rows[:m]] = freeq.take(m)["buf_idx"]
            rows = rows[m:]
        if len(rows):  # no room anywhere: dropped, and the source keeps its buffer
            self._count_drop(p, len(rows), int(recs["len"][rows].sum()))

    def _count_drop(self, p: OutPipe, k: int, nbytes: int) -> None:
        p.drop += k
        p.drop_bytes += nbytes
        self.dropped += k

    def _revoke(self) -> None:
        """Drop the oldest packets of the longest overflow queue into the free queue."""
        assert self.freeq is not None
        lp = max(self.pipes, key=lambda p: p.oq.n if p.oq else 0)
        q = lp.oq
        if q is None:
            return
        k = whole(q.peek_flags(q.n), min(BUF_REVOKE, q.n - KEEP_AFTER_REVOKE))
        if k <= 0:
            return
        recs = q.take(k)
        self._count_drop(lp, k, int(recs["len"].sum()))
        recs["len"] = 0
        recs["flags"] = 0
        recs["ptr"] = 0
        self.freeq.put(recs)

    # -- every round ------------------------------------------------------------
    def drain(self) -> None:
        """Move queued packets into their pipes as room appears; their buffers free up."""
        if self.freeq is None:
            return
        for p in self.pipes:
            q = p.oq
            if q is None or not q.n:
                continue
            k = whole(q.peek_flags(q.n), min(q.n, p.ring.space()))
            if k:
                old = self._put(p, q.take(k), None, None)
                recs = np.zeros(k, L.SLOT_DTYPE)
                recs["buf_idx"] = old
                self.freeq.put(recs)

    def chain(self) -> None:
        """Hand what the consumers of group i released to group i+1, last group first.

        The released TX slots still describe the packets (consumers are
        read-only, as netmap's lb assumes); each gets back the buffer that
        group i+1's forward returns.
        """
        for gi in range(len(self.groups) - 2, -1, -1):
            nxt = self.groups[gi + 1]
            for p in self.groups[gi].pipes:
                ring = p.ring
                n = ring.num_slots
                stop = ring.next(ring.tail)
                k = distance(p.last_tail, stop, n)
                if not k:
                    continue
                recs = gather(ring.slots, p.last_tail, stop, n)
                back = self.forward(nxt, recs)
                scatter(ring.slot_buf_idx, p.last_tail, back, n)
                scatter(ring.slot_flags, p.last_tail, np.full(k, NS_BUF_CHANGED, np.uint16), n)
                scatter(ring.slots["ptr"], p.last_tail, np.zeros(k, np.uint64), n)
                p.last_tail = stop

    def queued(self) -> list[int]:
        """Every buffer the queues hold (overflow and free): the extra buffers, at exit."""
        out = [self.freeq.take(self.freeq.n)["buf_idx"]] if self.freeq else []
        out += [p.oq.take(p.oq.n)["buf_idx"] for p in self.pipes if p.oq]
        return np.concatenate(out).tolist() if out else []
