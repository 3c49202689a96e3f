"""netmap pipes (spec §4.1): ``X{id`` (master) and ``X}id`` (slave).

TX ring i of one end and RX ring i of the other describe the same ``n``
buffers at the same slot indices.  The sender's txsync copies the
descriptors of ``[hwcur, head)`` to the peer's RX ring and publishes them by
moving the peer's ``hwtail`` -- only up to the end of the last complete
packet, so an ``NS_MOREFRAG`` chain is held back until its last fragment.
The receiver's rxsync moves its own ``hwcur``, which the sender turns into
TX ``hwtail = hwcur - 1``; a released slot is copied back to the sender's
TX ring only if the receiver swapped its buffer (``NS_BUF_CHANGED``), as
netmap does: every other slot there names the same buffer already.  Buffer
indices cross, bytes do not.

Each direction has one writer per kring word: the sender writes the RX
ring's ``hwtail``, the receiver its ``hwcur``.  The pipe relies on stores
becoming visible to the other process in program order (true on x86-64;
on weaker CPUs each publish is preceded by ``wake.fence()``'s atomic).

The parent ``X`` need not exist: its memory region is created on first use
(netmap creates an auto-deleting VALE port) and removed with its last pipe.
All pipes of a parent share its region, so buffers can be swapped among
them.  Limits: 64 pipes per parent, 1..256 rings, 1..4096 slots; exceeding
them raises ``ValueError`` (netmap silently clamps ring and slot counts).
"""

from __future__ import annotations

import errno

import numpy as np

from .. import objects
from .. import region as R
from ..adapter import Adapter, Found
from ..constants import (
    NM_MAXPIPES,
    NM_PIPE_MAXRINGS,
    NM_PIPE_MAXSLOTS,
    NR_RX,
    NR_TX,
    NS_BUF_CHANGED,
    NS_MOREFRAG,
)
from ..errors import NetmapError
from ..kring import (
    HWCUR,
    HWTAIL,
    NOT_BUF_CHANGED,
    KRing,
    SlotError,
    bad_slots,
    check_slots,
    clear_buf_changed,
    held_slots,
    kring_words,
    spans,
)
from ..names import PortSpec
from ..registry import State, new_mem_id, transaction
from ..ring import Ring

DEFAULT_SLOTS = 1024
#: buffers of a new parent region: room for 64 default pipes plus extras
DEFAULT_REGION_BUFS = 2 + NM_MAXPIPES * 2 * DEFAULT_SLOTS + 4096
_PEER = {"master": "slave", "slave": "master"}
_OR = np.bitwise_or.reduce  # the ufunc's own reduce: no Python wrapper (hot path)
_CHANGED_BIT = NS_BUF_CHANGED << 48  # NS_BUF_CHANGED in a slot's first 64-bit word


def _limit(what: str, v: int, default: int, top: int) -> int:
    if v == 0:
        return default
    if not 1 <= v <= top:
        raise ValueError(f"pipe {what} must be 1..{top}, got {v}")
    return v


def _geometry(spec: PortSpec, conf: dict) -> tuple[int, int, int, int]:
    """(tx rings, rx rings, tx slots, rx slots) of the *master* end."""
    tx_r = _limit("rings", conf.get("tx_rings", 0), 1, NM_PIPE_MAXRINGS)
    rx_r = _limit("rings", conf.get("rx_rings", 0), 1, NM_PIPE_MAXRINGS)
    tx_s = _limit("slots", conf.get("tx_slots", 0), DEFAULT_SLOTS, NM_PIPE_MAXSLOTS)
    rx_s = _limit("slots", conf.get("rx_slots", 0), DEFAULT_SLOTS, NM_PIPE_MAXSLOTS)
    if spec.pipe_role == "slave":
        return rx_r, tx_r, rx_s, tx_s
    return tx_r, rx_r, tx_s, rx_s


def _region_for(state: State, spec: PortSpec, mem_id: int, need_bufs: int,
                need_ring_bytes: int) -> R.Region:
    """The parent's region, created (sized for this pipe and 63 more) if new."""
    parent = spec.port
    have = state["parents"].get(parent)
    if have is not None:
        if mem_id and mem_id != have:
            raise NetmapError(errno.EINVAL,
                              f"pipe parent {parent!r} uses memory region {have}, not {mem_id}")
        return R.attach(state, have)
    if mem_id:
        region = R.attach(state, mem_id)
    else:
        geom = R.Geometry(
            if_pool_size=1 << 20,
            ring_pool_size=max(64 << 20, 4 * need_ring_bytes),
            nbufs=max(DEFAULT_REGION_BUFS, 2 * need_bufs + 4096),
        )
        region = R.create(state, new_mem_id(state), geom)
    state["parents"][parent] = region.mem_id
    return region


def _key(spec: PortSpec) -> str:
    return f"{spec.port}{{{spec.pipe_id}"


def _create_pair(state: State, spec: PortSpec, conf: dict, mem_id: int) -> dict:
    mtx, mrx, mtx_s, mrx_s = _geometry(spec, conf)
    n_pipes = sum(1 for r in state["ports"].values()
                  if r["kind"] == "pipe" and r["parent"] == spec.port)
    if n_pipes >= NM_MAXPIPES:
        raise NetmapError(errno.ENOMEM,
                          f"pipe parent {spec.port!r} already has {NM_MAXPIPES} pipes")
    need_bufs = mtx * mtx_s + mrx * mrx_s
    ring_bytes = 2 * (mtx * (mtx_s * 16 + 320) + mrx * (mrx_s * 16 + 320))
    region = _region_for(state, spec, mem_id, need_bufs, ring_bytes)
    rings: dict = {"master": {"tx": [], "rx": []}, "slave": {"tx": [], "rx": []}}
    # Each (TX ring i of one end, RX ring i of the other) shares one set of buffers.
    for sender, ntx, n in (("master", mtx, mtx_s), ("slave", mrx, mrx_s)):
        for i in range(ntx):
            bufs = region.alloc_bufs(n)
            rings[sender]["tx"].append(objects.create_ring(state, region, n, NR_TX, i, bufs))
            rings[_PEER[sender]]["rx"].append(
                objects.create_ring(state, region, n, NR_RX, i, bufs))
    record: dict = {
        "kind": "pipe", "parent": spec.port, "id": spec.pipe_id, "mem_id": region.mem_id,
        "rings": rings,
        "counts": {"master": [mtx, mrx, 0, 0], "slave": [mrx, mtx, 0, 0]},
        "endpoints": {"master": {"opens": []}, "slave": {"opens": []}},
    }
    state["ports"][_key(spec)] = record
    return record


class PipeAdapter(Adapter):
    """The kernel side of one pipe end."""

    kind = "pipe"

    @classmethod
    def takes(cls, spec: PortSpec) -> bool:
        return spec.is_pipe()

    @classmethod
    def record_key(cls, spec: PortSpec, pre: dict) -> tuple[str, str]:
        assert spec.pipe_role is not None
        return _key(spec), spec.pipe_role

    @classmethod
    def get(cls, state: State, spec: PortSpec, conf: dict, pre: dict) -> Found:
        """The pair (created on first open of either end) and this name's end."""
        mem_id = spec.mem_id or conf.get("mem_id", 0)
        record = state["ports"].get(_key(spec))
        if record is None:
            record = _create_pair(state, spec, conf, mem_id)
        elif mem_id not in (0, record["mem_id"]):
            raise NetmapError(errno.EINVAL, f"{spec.spec}: the pipe lives in memory region "
                              f"{record['mem_id']}")
        key, ep = cls.record_key(spec, pre)
        return Found(key, record, ep, R.attach(state, record["mem_id"]))

    @classmethod
    def release(cls, state: State, record: dict, o: dict, region: R.Region) -> None:
        """Free the pair (rings and the buffers in them) after its last open."""
        if any(e["opens"] for e in record["endpoints"].values()):
            return
        # Each slot's buffer is in the RX ring while delivered but not released,
        # in the TX ring otherwise.
        for sender in ("master", "slave"):
            for t_ofs, r_ofs in zip(record["rings"][sender]["tx"],
                                    record["rings"][_PEER[sender]]["rx"], strict=True):
                t, r = objects.ring_slots(region, t_ofs), objects.ring_slots(region, r_ofs)
                held = held_slots(kring_words(region.mem, r_ofs), len(t))
                region.free_bufs(np.where(held, r["buf_idx"], t["buf_idx"]))
                objects.free_ring(state, region, t_ofs)
                objects.free_ring(state, region, r_ofs)
        record["rings"] = {ep: {"tx": [], "rx": []} for ep in record["rings"]}

    def __init__(self, spec: PortSpec, found: Found, region: R.Region, pre: dict) -> None:
        super().__init__(spec, found, region, pre)
        peer = found.record["rings"][_PEER[found.ep]]
        self.peer_rx_ofs = peer["rx"]
        self.peer_tx_ofs = peer["tx"]
        self.peers: list[Ring] = []
        self.nbufs = region.nbufs

    def register(self, state: State, tx: list[Ring], rx: list[Ring]) -> None:
        """Bind each ring to its peer's kring: my TX i feeds the peer's RX i and back."""
        super().register(state, tx, rx)
        for mine, ofs, d in [(r, self.peer_rx_ofs[r.ringid], NR_RX) for r in tx] + \
                [(r, self.peer_tx_ofs[r.ringid], NR_TX) for r in rx]:
            peer = Ring(self.region, ofs, d, mine.ringid)
            self.peers.append(peer)
            mine.kring.peer = peer.kring

    def unregister(self) -> None:
        """Ring the other end's bell if it waits (it finds POLLHUP), then let go."""
        for r in self.peers:
            r.kring.notify()
            r.release_views()
        self.peers = []

    def txsync(self, kring: KRing, head: int) -> None:
        # Words, not properties: this runs once per ring per sync (see kring.HWCUR).
        w = kring.w
        peer: KRing = kring.peer  # type: ignore[assignment]
        pw = peer.w
        hwcur = w[HWCUR]
        n = kring.num_slots
        if head != hwcur:
            ring = kring.ring
            self._pass_slots(ring, peer.ring, hwcur, head)
            w[HWCUR] = head
            published = pw[HWTAIL]
            if ring._h[8 * (head - 1 if head else n - 1) + 3] & NS_MOREFRAG:
                head = self._complete_until(ring, published, head)
            if head != published:
                pw[HWTAIL] = head
                peer.notify()
        hwtail = pw[HWCUR] - 1
        w[HWTAIL] = hwtail if hwtail >= 0 else n - 1

    def _pass_slots(self, ring: Ring, peer: Ring, hwcur: int, head: int) -> None:
        """Copy the descriptors of ``[hwcur, head)`` to the peer's RX ring, checked first.

        ``NS_BUF_CHANGED`` travels with the descriptor and is cleared here.
        One slot (ping-pong traffic) takes a scalar path: a third of the time.
        """
        if head == hwcur + 1:  # through the memoryviews: a few plain integer steps
            q, pq, k = ring._q, peer._q, 2 * hwcur
            w0 = q[k]
            bi = w0 & 0xFFFFFFFF
            if bi < 2 or bi >= self.nbufs or (w0 >> 32 & 0xFFFF) > ring.buf_size:
                raise SlotError(f"slot {hwcur} holds an invalid buffer or length")
            pq[k] = w0
            pq[k + 1] = q[k + 1]
            if w0 & _CHANGED_BIT:
                q[k] = w0 ^ _CHANGED_BIT
            return
        sl = spans(hwcur, head, ring.num_slots)
        # A batch that wraps is first checked as the whole ring, one call for two: a
        # whole ring that passes passes every part of it (its flags may say more
        # than the batch's: at worst a needless clear below).  Otherwise, span by span.
        flags = -1 if len(sl) == 1 else check_slots(ring.slot_word, ring.slot_buf_idx,
                                                    ring.slot_len, self.nbufs, ring.buf_size)
        if flags < 0:
            flags = 0
            for s in sl:
                f = check_slots(ring.slot_word[s], ring.slot_buf_idx[s], ring.slot_len[s],
                                self.nbufs, ring.buf_size)
                if f < 0:
                    raise SlotError(f"slots {hwcur}..{head} hold an invalid buffer or length")
                flags |= f
        for s in sl:
            peer.raw[s] = ring.raw[s]
        if flags & NS_BUF_CHANGED:  # the OR above tells: usually nobody swapped a buffer
            clear_buf_changed(ring.slot_flags, hwcur, head, ring.num_slots)

    @staticmethod
    def _complete_until(ring: Ring, start: int, head: int) -> int:
        """End of the last complete packet in ``[start, head)`` (MOREFRAG hold-back)."""
        n = ring.num_slots
        flags = np.concatenate([ring.slot_flags[s] for s in spans(start, head, n)])
        ends = np.flatnonzero((flags & NS_MOREFRAG) == 0)
        return start if not len(ends) else (start + int(ends[-1]) + 1) % n

    def rxsync(self, kring: KRing, head: int) -> None:
        w = kring.w
        hwcur = w[HWCUR]
        if head != hwcur:
            peer: KRing = kring.peer  # type: ignore[assignment]
            self._return_slots(kring.ring, peer.ring, hwcur, head)
            w[HWCUR] = head
            peer.notify()

    def _return_slots(self, ring: Ring, peer: Ring, hwcur: int, head: int) -> None:
        """The release of ``[hwcur, head)``: slots whose buffer the receiver swapped
        (``NS_BUF_CHANGED``) go back to the sender's TX ring, checked first.

        The others are not copied, as in netmap: the TX ring names the same
        buffers already, and what a receiver scribbles on a slot without the
        flag stays on its side until the sender's next publish overwrites it.
        One OR tells, so the usual release costs one NumPy call.
        """
        flags = ring.slot_flags
        if head == hwcur + 1:
            if not ring._h[8 * hwcur + 3] & NS_BUF_CHANGED:
                return
            swapped: np.ndarray | int = hwcur
        else:
            sl = spans(hwcur, head, ring.num_slots)
            # one OR, over the whole ring when the range wraps: none anywhere, none here
            if not int(_OR(flags[sl[0]] if len(sl) == 1 else flags)) & NS_BUF_CHANGED:
                return
            swapped = np.concatenate([np.flatnonzero(flags[s] & NS_BUF_CHANGED) + s.start
                                      for s in sl])
        bi, ln = np.atleast_1d(ring.slot_buf_idx[swapped]), np.atleast_1d(ring.slot_len[swapped])
        if bad_slots(bi, ln, self.nbufs, ring.buf_size):
            raise SlotError(f"slots {hwcur}..{head} hold an invalid buffer or length")
        peer.raw[swapped] = ring.raw[swapped]
        flags[swapped] &= NOT_BUF_CHANGED

    def peer_gone(self) -> bool:
        """POLLHUP: the other end was held, and no live process holds it now.

        Read from the peer rings' krings without the registry lock; only a
        recorded holder that died unclosed makes us sweep the registry
        (which then records a live holder, or none) and look again.
        """
        held = [r.kring for r in self.peers if r.kring.ever_held]
        if not held or not all(k.holder_gone() for k in held):
            return False
        if any(k.holders for k in held):
            with transaction():
                pass  # its sweep releases the opens of dead processes
            return all(k.holder_gone() for k in held)
        return True
