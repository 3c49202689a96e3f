"""netmap pipes (spec §4.1): ``X{id`` (master) and ``X}id`` (slave).

TX ring i of one end and RX ring i of the other describe the same ``n``
buffers at the same slot indices.  The sender's txsync copies the
descriptors of ``[hwcur, head)`` to the peer's RX ring and publishes them by
moving the peer's ``hwtail`` -- only up to the end of the last complete
packet, so an ``NS_MOREFRAG`` chain is held back until its last fragment.
The receiver's rxsync copies released slots back to the sender's TX ring
(so buffers it swapped in flow back) and moves its own ``hwcur``, which the
sender turns into TX ``hwtail = hwcur - 1``.  Buffer indices cross, bytes
do not.

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
import os

import numpy as np

from .. import liveness, objects
from .. import region as R
from ..constants import (
    NM_MAXPIPES,
    NM_PIPE_MAXRINGS,
    NM_PIPE_MAXSLOTS,
    NR_EXCLUSIVE,
    NR_REG_ALL_NIC,
    NR_REG_ONE_NIC,
    NR_RX,
    NR_RX_RINGS_ONLY,
    NR_TX,
    NR_TX_RINGS_ONLY,
    NS_MOREFRAG,
)
from ..errors import NetmapError
from ..kring import K_HWCUR, K_HWTAIL, NOT_BUF_CHANGED, bad_slots, distance, spans
from ..names import PortSpec
from ..port import Port, SlotError
from ..registry import State, new_mem_id, on_release, release_open, transaction
from ..ring import Ring
from ..wake import kick

DEFAULT_SLOTS = 1024
#: buffers of a new parent region: room for 64 default pipes plus extras
DEFAULT_REGION_BUFS = 2 + NM_MAXPIPES * 2 * DEFAULT_SLOTS + 4096
_PEER = {"master": "slave", "slave": "master"}


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
    record = {
        "kind": "pipe", "parent": spec.port, "id": spec.pipe_id, "mem_id": region.mem_id,
        "rings": rings,
        "endpoints": {"master": {"opens": [], "ever": False},
                      "slave": {"opens": [], "ever": False}},
    }
    state["ports"][f"{spec.port}{{{spec.pipe_id}"] = record
    return record


def _bound(spec: PortSpec, ntx: int, nrx: int) -> tuple[list[int], list[int]]:
    """Ring indices bound by the name's mode (spec §1.6; pipes: ALL_NIC or ONE_NIC)."""
    if spec.mode == NR_REG_ALL_NIC:
        tx, rx = list(range(ntx)), list(range(nrx))
    elif spec.mode == NR_REG_ONE_NIC:
        if spec.ringid >= ntx and spec.ringid >= nrx:
            raise NetmapError(errno.EINVAL, f"{spec.spec}: ring {spec.ringid} does not exist "
                              f"({ntx} tx, {nrx} rx rings)")
        tx = [spec.ringid if spec.ringid < ntx else 0]
        rx = [spec.ringid if spec.ringid < nrx else 0]
    else:
        raise NetmapError(errno.EINVAL,
                          f"{spec.spec}: pipes have no host rings (only '-N' or no suffix)")
    if spec.flags & NR_RX_RINGS_ONLY:
        tx = []
    if spec.flags & NR_TX_RINGS_ONLY:
        rx = []
    return tx, rx


def _check_exclusive(record: dict, ep: str, tx: list[int], rx: list[int], flags: int) -> None:
    for o in record["endpoints"][ep]["opens"]:
        shared = set(o["tx"]) & set(tx) or set(o["rx"]) & set(rx)
        if shared and (o["flags"] & NR_EXCLUSIVE or flags & NR_EXCLUSIVE):
            raise NetmapError(errno.EBUSY, f"{ep} end of pipe {record['parent']}"
                              f"{{{record['id']} is in exclusive use")


def open_pipe(spec: PortSpec, conf: dict, extra_bufs: int, flags: int) -> Port:
    """Register one end of a pipe: create the pair if new, bind its rings."""
    ep = spec.pipe_role
    assert ep is not None
    with transaction() as state:
        record = state["ports"].get(f"{spec.port}{{{spec.pipe_id}")
        if record is None:
            record = _create_pair(state, spec, conf, spec.mem_id or conf.get("mem_id", 0))
        elif (spec.mem_id or conf.get("mem_id")) not in (None, 0, record["mem_id"]):
            raise NetmapError(errno.EINVAL, f"{spec.spec}: the pipe lives in memory region "
                              f"{record['mem_id']}")
        region = R.attach(state, record["mem_id"])
        mine, peer = record["rings"][ep], record["rings"][_PEER[ep]]
        tx, rx = _bound(spec, len(mine["tx"]), len(mine["rx"]))
        _check_exclusive(record, ep, tx, rx, flags)
        nifp = objects.create_if(state, region, spec.name, len(mine["tx"]), len(mine["rx"]),
                                 0, 0, {i: mine["tx"][i] for i in tx},
                                 {i: mine["rx"][i] for i in rx})
        head, got = objects.make_extra_list(region, extra_bufs)
        region.buf[nifp + 32 : nifp + 36] = head.to_bytes(4, "little")
        record["endpoints"][ep]["opens"].append({
            "pid": os.getpid(), "token": liveness.token(), "if": nifp, "flags": flags,
            "tx": tx, "rx": rx, "extra": got,
        })
        record["endpoints"][ep]["ever"] = True
        R.hold(region)
    tx_rings = [Ring(region, mine["tx"][i], NR_TX, i) for i in tx]
    rx_rings = [Ring(region, mine["rx"][i], NR_RX, i) for i in rx]
    adapter = PipeAdapter(spec, region, nifp,
                          {i: Ring(region, peer["rx"][i], NR_RX, i) for i in tx},
                          {i: Ring(region, peer["tx"][i], NR_TX, i) for i in rx})
    port = Port(spec, region, nifp, flags, tx_rings, rx_rings, adapter)
    port.extra_bufs = got
    return port


class PipeAdapter:
    """The kernel side of one pipe end."""

    def __init__(self, spec: PortSpec, region: R.Region, nifp: int,
                 peer_rx: dict[int, Ring], peer_tx: dict[int, Ring]) -> None:
        self.spec = spec
        self.region = region
        self.nifp = nifp
        self.peer_rx = peer_rx  # for my TX ring i: the peer's RX ring i
        self.peer_tx = peer_tx  # for my RX ring i: the peer's TX ring i
        self.nbufs = region.nbufs
        self.key = f"{spec.port}{{{spec.pipe_id}"

    def txsync(self, ring: Ring, head: int) -> None:
        k = ring._k
        hwcur = k[K_HWCUR]
        peer = self.peer_rx[ring.ringid]
        pk = peer._k
        n = ring.num_slots
        if head != hwcur:
            self._pass_slots(ring, peer, hwcur, head)
            k[K_HWCUR] = head
            last = head - 1 if head else n - 1
            if ring.slot_flags[last] & NS_MOREFRAG:
                publish = self._complete_until(ring, pk[K_HWTAIL], head)
            else:
                publish = head
            if publish != pk[K_HWTAIL]:
                pk[K_HWTAIL] = publish
                kick(pk)
        hwtail = pk[K_HWCUR] - 1
        k[K_HWTAIL] = hwtail if hwtail >= 0 else n - 1

    def _pass_slots(self, ring: Ring, peer: Ring, hwcur: int, head: int) -> None:
        """Copy the descriptors of ``[hwcur, head)`` to the peer ring, checked first.

        ``NS_BUF_CHANGED`` travels with the descriptor and is cleared here.
        One slot (ping-pong traffic) takes a scalar path: a third of the time.
        """
        if head == hwcur + 1:
            bi, ln = int(ring.slot_buf_idx[hwcur]), int(ring.slot_len[hwcur])
            if bi < 2 or bi >= self.nbufs or ln > ring.buf_size:
                raise SlotError(f"slot {hwcur} holds an invalid buffer or length")
            peer.raw[hwcur] = ring.raw[hwcur]
            ring.slot_flags[hwcur] &= NOT_BUF_CHANGED
            return
        for s in spans(hwcur, head, ring.num_slots):
            if bad_slots(ring.slot_buf_idx[s], ring.slot_len[s], self.nbufs, ring.buf_size):
                raise SlotError(f"slots {hwcur}..{head} hold an invalid buffer or length")
        for s in spans(hwcur, head, ring.num_slots):
            peer.raw[s] = ring.raw[s]
            np.bitwise_and(ring.slot_flags[s], NOT_BUF_CHANGED, out=ring.slot_flags[s])

    @staticmethod
    def _complete_until(ring: Ring, start: int, head: int) -> int:
        """End of the last complete packet in ``[start, head)`` (MOREFRAG hold-back)."""
        n = ring.num_slots
        count = distance(start, head, n)
        idx = (start + np.arange(count)) % n
        ends = np.flatnonzero((ring.slot_flags[idx] & NS_MOREFRAG) == 0)
        return start if not len(ends) else int(idx[ends[-1]] + 1) % n

    def rxsync(self, ring: Ring, head: int) -> None:
        k = ring._k
        hwcur = k[K_HWCUR]
        if head != hwcur:
            peer = self.peer_tx[ring.ringid]
            self._pass_slots(ring, peer, hwcur, head)
            k[K_HWCUR] = head
            kick(peer._k)

    def peer_gone(self) -> bool:
        """POLLHUP: the other end was opened once and no live process holds it now."""
        with transaction() as state:
            record = state["ports"].get(self.key)
            if record is None:
                return True
            peer = record["endpoints"][_PEER[self.spec.pipe_role]]
            return peer["ever"] and not peer["opens"]

    def close(self) -> None:
        for r in list(self.peer_rx.values()) + list(self.peer_tx.values()):
            r.release_views()
        with transaction() as state:
            record = state["ports"].get(self.key)
            if record is None:
                return
            ep = record["endpoints"][self.spec.pipe_role]
            for o in ep["opens"]:
                if o["pid"] == os.getpid() and o["if"] == self.nifp:
                    release_open(state, record, o)
                    break


@on_release("pipe")
def _release(state: State, record: dict, o: dict) -> None:
    """Free an open's ``netmap_if`` and extras; free the pair after its last open."""
    region = R.attach(state, record["mem_id"])
    try:
        objects.free_if(state, region, o["if"], o["extra"])
        if any(e["opens"] for e in record["endpoints"].values()):
            return
        # Each slot's buffer is in the RX ring while delivered but not released,
        # in the TX ring otherwise.
        for sender in ("master", "slave"):
            for t_ofs, r_ofs in zip(record["rings"][sender]["tx"],
                                    record["rings"][_PEER[sender]]["rx"], strict=True):
                t, r = objects.ring_slots(region, t_ofs), objects.ring_slots(region, r_ofs)
                rk = objects.kring(region, r_ofs)
                n = len(t)
                held = (np.arange(n) - int(rk[K_HWCUR])) % n < distance(
                    int(rk[K_HWCUR]), int(rk[K_HWTAIL]), n)
                region.free_bufs(np.where(held, r["buf_idx"], t["buf_idx"]))
                objects.free_ring(state, region, t_ofs)
                objects.free_ring(state, region, r_ofs)
        record["endpoints"] = {"master": {"opens": [], "ever": True},
                               "slave": {"opens": [], "ever": True}}
    finally:
        if region.users == 0:
            R.drop_unused(region)
