"""Monitors (spec §4.3): ``PORT/r``, ``/t``, ``/rt`` (copies) and ``/z`` (zero copy).

A monitor is a port of its own -- one TX ring that refuses to send (EIO)
and one RX ring per ring of the watched ("parent") port -- and the parent,
in whatever process syncs it, feeds it:

- a copy monitor gets TX slots when the parent *submits* them (before its
  txsync: ``[hwcur, head)``, flagged ``NS_TXMON``) and RX slots when the
  parent *receives* them (after its rxsync: the new ``[hwtail, hwtail')``),
  copied into the monitor's own buffers (a private region);
- a zero-copy monitor lives in the parent's region and gets slots once the
  parent is done with them -- TX slots it reclaimed, RX slots it released --
  by swapping buffers: the parent slot takes the monitor's old buffer and
  ``NS_BUF_CHANGED``.

Either way a monitor ring short of room skips the *oldest* new slots.
The parent pays only when watched: its kring carries a monitor count
(:data:`pynetmap.kring.MON_COUNT`) that the sync reads, and a generation
that tells its process to reload which monitors watch the ring (from the
registry, once per change).  Each copy or swap is one batch: one lock of
the monitor ring, NumPy over the range, one wake-up.
"""

from __future__ import annotations

import errno
import os
from dataclasses import replace

import numpy as np

from .. import objects, osl
from .. import region as R
from ..adapter import Adapter, Found, PortInfo
from ..constants import (
    NR_MONITOR_RX,
    NR_MONITOR_TX,
    NR_RX,
    NR_TX,
    NR_ZCOPY_MON,
    NS_BUF_CHANGED,
    NS_TXMON,
)
from ..errors import NetmapError
from ..kring import (
    HOLDERS,
    HWCUR,
    HWTAIL,
    MON_COUNT,
    MON_GEN,
    MON_TAIL,
    KRing,
    clear_buf_changed,
    distance,
    gather,
    kring_words,
    rx_room,
    scatter,
    spans,
)
from ..names import PortSpec
from ..registry import State, new_mem_id, rundir, transaction
from ..ring import Ring

MON_FLAGS = NR_MONITOR_TX | NR_MONITOR_RX | NR_ZCOPY_MON
MAX_SLOTS = 4096



def _lock_path(serial: int) -> str:
    return os.path.join(rundir(), f"monitor-{serial}.lock")


def _parent_spec(spec: PortSpec) -> PortSpec:
    s = replace(spec, flags=spec.flags & ~MON_FLAGS, spec="")
    return replace(s, spec=str(s))


def _recount(state: State, parent: dict, ep: str, opening: dict | None = None) -> None:
    """Write each watched parent ring's monitor count (from the records: monitors
    with an open, and ``opening``, whose open is recorded next) and bump its
    generation, so the processes syncing it reload their monitors."""
    region = R.attach(state, parent["mem_id"])
    counts: dict[int, int] = {}
    for rec in state["ports"].values():
        if rec["kind"] == "monitor" and rec["parent_serial"] == parent.get("mon_serial") \
                and rec["parent_ep"] == ep and (rec["endpoints"]["mon"]["opens"] or
                                                rec is opening):
            for d in ("tx", "rx"):
                for _i, ofs in rec["watch"][d]:
                    counts[ofs] = counts.get(ofs, 0) + 1
    for d in ("tx", "rx"):
        for ofs in parent["rings"][ep][d]:
            if ofs:
                w = kring_words(region.mem, ofs)
                if not w[MON_COUNT]:
                    w[MON_TAIL] = w[HWTAIL]  # a new monitor sees what arrives from now on
                w[MON_COUNT] = counts.get(ofs, 0)
                w[MON_GEN] += 1


class MonitorAdapter(Adapter):
    """One monitor: its RX rings are fed by the parent's syncs; its rxsync releases."""

    kind = "monitor"

    @classmethod
    def takes(cls, spec: PortSpec) -> bool:
        return bool(spec.flags & MON_FLAGS)

    @classmethod
    def prepare(cls, spec: PortSpec, conf: dict, kw: dict) -> dict:
        from . import adapter_for

        parent_spec = _parent_spec(spec)
        parent_cls = adapter_for(parent_spec)
        ppre = parent_cls.prepare(parent_spec, {}, kw)
        key, ep = parent_cls.record_key(parent_spec, ppre)
        zcopy = bool(spec.flags & NR_ZCOPY_MON)
        slots = conf.get("rx_slots", 0)
        if not 0 <= slots <= MAX_SLOTS:
            raise ValueError(f"monitor slots must be 1..{MAX_SLOTS}, got {slots}")
        return {"parent_spec": parent_spec, "parent_key": key, "parent_ep": ep,
                "zcopy": zcopy, "slots": slots,
                "tx": zcopy or bool(spec.flags & NR_MONITOR_TX),
                "rx": zcopy or bool(spec.flags & NR_MONITOR_RX)}

    @classmethod
    def get(cls, state: State, spec: PortSpec, conf: dict, pre: dict) -> Found:
        from ..register import select_rings

        pkey, ep = pre["parent_key"], pre["parent_ep"]
        parent = state["ports"].get(pkey)
        if parent is None or not parent["endpoints"][ep]["opens"]:
            raise NetmapError(errno.EINVAL, f"{spec.spec}: {pre['parent_spec']} is not open; "
                              "a monitor watches a port that some process has open")
        if "mon_serial" not in parent:
            parent["mon_serial"] = state["next_monitor"] = state.get("next_monitor", 0) + 1
        counts = parent["counts"][ep]
        ptx, prx = select_rings(pre["parent_spec"], parent["kind"], *counts)
        rings = parent["rings"][ep]
        watch = {"tx": [(i, rings["tx"][i]) for i in ptx if pre["tx"] and rings["tx"][i]],
                 "rx": [(i, rings["rx"][i]) for i in prx if pre["rx"] and rings["rx"][i]]}
        if not watch["tx"] and not watch["rx"]:
            raise NetmapError(errno.EINVAL, f"{spec.spec}: no ring of {pre['parent_spec']} "
                              "to watch (its rings are not bound)")
        pregion = R.attach(state, parent["mem_id"])
        nmon = max(counts[0] + counts[2], counts[1] + counts[3])
        slots = [pre["slots"] or _slots_of(pregion, rings, i) for i in range(nmon)]
        if pre["zcopy"]:
            region = pregion
        else:
            region = R.create(state, new_mem_id(state), R.Geometry(
                if_pool_size=64 << 10, ring_pool_size=(nmon + 1) * (64 + 256) +
                16 * (sum(slots) + slots[0]) + (64 << 10), nbufs=sum(slots) + 2 + 256))
        tx = [objects.create_ring(state, region, slots[0], NR_TX, 0, None)]
        rx = [objects.create_ring(state, region, n, NR_RX, i, region.alloc_bufs(n))
              for i, n in enumerate(slots)]
        serial = state["next_monitor"] = state.get("next_monitor", 0) + 1
        letters = ("z" if pre["zcopy"] else "") + ("r" if pre["rx"] and not pre["zcopy"]
                                                  else "") + \
            ("t" if pre["tx"] and not pre["zcopy"] else "")
        key = f"{pkey}/{letters}#{serial}"
        record = {
            "kind": "monitor", "mem_id": region.mem_id, "serial": serial,
            "parent": pkey, "parent_ep": ep, "parent_mem": parent["mem_id"],
            "parent_serial": parent["mon_serial"], "watch": watch, "zcopy": pre["zcopy"],
            "rings": {"mon": {"tx": tx, "rx": rx}}, "counts": {"mon": [1, nmon, 0, 0]},
            "endpoints": {"mon": {"opens": []}},
        }
        state["ports"][key] = record
        return Found(key, record, "mon", region)

    @classmethod
    def krings_get(cls, state: State, found: Found, tx: list[int], rx: list[int],
                   pre: dict) -> dict:
        return {}

    @classmethod
    def release(cls, state: State, record: dict, o: dict, region: R.Region) -> None:
        """The monitor's last open went: stop the parent feeding it, free its rings."""
        if record["endpoints"]["mon"]["opens"]:
            return
        parent = state["ports"].get(record["parent"])
        if parent is not None and parent.get("mon_serial") == record["parent_serial"]:
            _recount(state, parent, record["parent_ep"])
        rings = record["rings"]["mon"]
        for ofs in rings["rx"]:
            region.free_bufs(objects.ring_slots(region, ofs)["buf_idx"])
        for ofs in rings["tx"] + rings["rx"]:
            objects.free_ring(state, region, ofs)
        record["rings"]["mon"] = {"tx": [], "rx": []}
        try:
            os.unlink(_lock_path(record["serial"]))
        except FileNotFoundError:
            pass

    # -- data path (the monitor's own process) --------------------------------------------
    def __init__(self, spec: PortSpec, found: Found, region: R.Region, pre: dict) -> None:
        super().__init__(spec, found, region, pre)
        self.record = found.record
        self.parent: R.Region | None = None
        self.watched: list[np.ndarray] = []
        self.gone = False

    def register(self, state: State, tx: list[Ring], rx: list[Ring]) -> None:
        super().register(state, tx, rx)
        parent = state["ports"][self.record["parent"]]
        self.parent = R.attach(state, parent["mem_id"])
        R.hold(self.parent)
        self.watched = [kring_words(self.parent.mem, ofs)
                        for d in ("tx", "rx") for _i, ofs in self.record["watch"][d]]
        _recount(state, parent, self.record["parent_ep"], opening=self.record)

    def unregister(self) -> None:
        self.watched = []
        if self.parent is not None:
            R.drop(self.parent)
            self.parent = None

    def info(self) -> PortInfo:
        return PortInfo(self.kind, self.region.buf_size)

    def txsync(self, kring: KRing, head: int) -> None:
        """EIO for anything submitted (an idle TX ring lets ``poll`` run as usual)."""
        if head != kring.w[HWCUR]:
            raise NetmapError(errno.EIO, f"{self.spec.spec}: a monitor does not transmit")

    def rxsync(self, kring: KRing, head: int) -> None:
        if self.peer_gone():
            raise NetmapError(errno.EIO, f"{self.spec.spec}: the monitored port was closed; "
                              "open the monitor again")
        w = kring.w
        hwcur = w[HWCUR]
        if head != hwcur:
            clear_buf_changed(kring.ring.slot_flags, hwcur, head, kring.num_slots)
            w[HWCUR] = head

    def peer_gone(self) -> bool:
        """The parent's watched rings have no holder left (it closed or died)."""
        if not self.gone and self.watched and not any(w[HOLDERS] for w in self.watched):
            self.gone = True
        return self.gone


def _slots_of(region: R.Region, rings: dict, i: int) -> int:
    for d in ("tx", "rx"):
        if i < len(rings[d]) and rings[d][i]:
            return int(objects.ring_slots(region, rings[d][i]).shape[0])
    return 1024


# -- the parent's side: feeding its monitors -----------------------------------------------

class _Watcher:
    """One monitor ring, as the process syncing a watched ring sees it."""

    def __init__(self, ring: Ring, region: R.Region, lock: osl.RangeLock, zcopy: bool) -> None:
        self.ring, self.region, self.lock, self.zcopy = ring, region, lock, zcopy

    def close(self) -> None:
        self.ring.release_views()
        self.lock.close()
        R.drop(self.region)


def _reload(kring: KRing) -> None:
    """Rebuild this ring's watchers from the registry (its monitors changed)."""
    kring.drop_watchers()
    gen = int(kring.w[MON_GEN])
    if kring.owner is None:
        kring.mon_gen = gen
        return
    key, ep = kring.owner
    d = "tx" if kring.dir == NR_TX else "rx"
    with transaction() as state:
        parent = state["ports"].get(key)
        for rec in list(state["ports"].values()):
            if rec["kind"] != "monitor" or parent is None or rec["parent"] != key or \
                    rec["parent_ep"] != ep or \
                    rec["parent_serial"] != parent.get("mon_serial") or \
                    not rec["endpoints"]["mon"]["opens"]:
                continue
            for i, _ofs in rec["watch"][d]:
                if i != kring.ringid:
                    continue
                region = R.map_id(rec["mem_id"])
                ofs = rec["rings"]["mon"]["rx"][i]
                kring.watchers.append(_Watcher(Ring(region, ofs, NR_RX, i), region,
                                               osl.RangeLock(_lock_path(rec["serial"])),
                                               rec["zcopy"]))
    kring.mon_gen = gen


def before_sync(kring: KRing, head: int) -> None:
    """TX: copy monitors see what is submitted; RX: zero-copy ones what is released."""
    if kring.w[MON_GEN] != kring.mon_gen:
        _reload(kring)
    hwcur = int(kring.w[HWCUR])
    if head == hwcur:
        return
    tx = kring.dir == NR_TX
    for wt in kring.watchers:
        if wt.zcopy != tx:  # TX: copies; RX: zero copy
            _feed(kring, wt, hwcur, head)


def after_sync(kring: KRing, hwcur0: int, hwtail0: int) -> None:
    """TX: zero-copy monitors see what was reclaimed; RX: copy ones what arrived.

    Arrivals are counted from ``MON_TAIL``, not from the ``hwtail`` this sync
    started with: a pipe's sender moves the receiver's ``hwtail`` itself.
    """
    tx = kring.dir == NR_TX
    n = kring.num_slots
    w = kring.w
    if tx:
        a, b = (hwtail0 + 1) % n, (int(w[HWTAIL]) + 1) % n
    else:
        a, b = int(w[MON_TAIL]), int(w[HWTAIL])
        w[MON_TAIL] = b
    if a == b:
        return
    for wt in kring.watchers:
        if wt.zcopy == tx:
            _feed(kring, wt, a, b)


def _feed(kring: KRing, wt: _Watcher, a: int, b: int) -> None:
    """Give the slots ``[a, b)`` of ``kring`` to monitor ring ``wt``: the newest that fit."""
    src = kring.ring
    n = kring.num_slots
    m = wt.ring
    mk = m.kring
    mw = mk.w
    mn = m.num_slots
    flag = NS_TXMON if kring.dir == NR_TX else 0
    wt.lock.acquire(m.ringid)
    try:
        hwtail, space = rx_room(mk)
        count = distance(a, b, n)
        if count > space:  # short of room: skip the oldest
            a = (a + count - space) % n
            count = space
        if not count:
            return
        end = (hwtail + count) % mn
        sbi = gather(src.slot_buf_idx, a, b, n).astype(np.intp)
        lens = gather(src.slot_len, a, b, n)
        dbi = gather(m.slot_buf_idx, hwtail, end, mn).astype(np.intp)
        if np.minimum.reduce(dbi) < 2 or np.maximum.reduce(dbi) >= wt.region.nbufs:
            return  # the monitor's user broke its own slots: it loses these, the port syncs
        if wt.zcopy:
            scatter(src.slot_buf_idx, a, dbi.astype(np.uint32), n)
            for s in spans(a, b, n):
                src.slot_flags[s] |= NS_BUF_CHANGED
            scatter(m.slot_buf_idx, hwtail, sbi.astype(np.uint32), mn)
        else:
            lens = np.minimum(lens, m.buf_size)
            top = int(np.maximum.reduce(lens))
            if top:
                wt.region.rows(top)[dbi] = src.region.rows(top)[sbi]
        scatter(m.slot_len, hwtail, lens, mn)
        for s in spans(hwtail, end, mn):
            m.slot_flags[s] = flag
        mw[HWTAIL] = end
    finally:
        wt.lock.release(m.ringid)
    mk.notify()
