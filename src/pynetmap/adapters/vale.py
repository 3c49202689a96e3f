"""VALE ports (spec §4.2): ``valeX:Y`` -- port ``Y`` of learning switch ``valeX``.

A switch exists while it has ports; a port is created by its first open
and destroyed after its last close (netmap's ephemeral ports), each in a
private memory region unless ``@N``/``conf={"mem_id": N}`` names one.
Unrelated processes share a switch through two things:

- the **registry** (control path): the switch record -- netmap's port
  index permutation, so a freed index is reused first -- and the port
  records, changed only inside registry transactions;
- the **switch segment** (data path), one small shared-memory segment per
  switch: a generation word, per port index its region, RX ring offsets,
  last learned MAC and per-ring drop counters, and the 1024-entry learning
  table.  A sender reads the generation once per batch and rebuilds its
  view of the other ports (mapping their regions) only when it changed.

Forwarding happens in the sender's txsync, as in netmap: the batch's
headers are read with one gather, :mod:`pynetmap.switch` decides each
packet's destination, and each destination ring gets its packets with one
locked copy (its buffers, its slots, its ``hwtail``) and one wake-up.  A
ring without room drops the excess, counted in the switch segment; the TX
ring is always fully reclaimed (``tail = head - 1``).  The receiver's
rxsync only moves ``hwcur``: senders see the room at their next batch.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import socket
from dataclasses import dataclass

import numpy as np

from .. import objects, osl
from .. import region as R
from ..adapter import Adapter, Found, PortInfo
from ..constants import (
    IFNAMSIZ,
    NR_REG_SW,
    NR_RX,
    NR_TX,
    NS_BUF_CHANGED,
    NS_INDIRECT,
    NS_MOREFRAG,
)
from ..errors import NetmapError
from ..kring import (
    HWCUR,
    HWTAIL,
    KRing,
    SlotError,
    bad_slots,
    clear_buf_changed,
    gather,
    rx_room,
    scatter,
    spans,
)
from ..names import PortSpec
from ..registry import State, new_mem_id, rundir, shm_prefix, transaction, undo
from ..ring import Ring
from ..switch import (
    DROP,
    FLOOD,
    MAC_MASK,
    PORT_SHIFT,
    TABLE_SIZE,
    HashCache,
    destinations,
    packets,
    route,
    route_flow,
)

NM_BRIDGES = 8  #: switches per user (netmap's default ``max_bridges``)
NM_BDG_MAXPORTS = 254  #: port table entries; a new port needs ``active + 2 < 254``
NM_BDG_MAXRINGS = 16
NM_BRIDGE_RINGSIZE = 1024
NM_BDG_MAXSLOTS = 4096
NM_BDG_MAXEXTRA = 524288
ETH_HLEN = 14
VALE_SPARE_BUFS = 32768  #: free buffers in a new port's region (64 MiB, sparse)

# -- the switch segment: uint64 words ------------------------------------------------------
_MAGIC = 0x454C4156_4D4E5950  # "PYNMVALE"
W_MAGIC, W_GEN = 0, 1
_PORTS = 8
PE = 48  #: words per port entry
P_ACTIVE, P_MEM, P_NTX, P_NRX, P_LAST = 0, 1, 2, 3, 4
P_RXOFS = 8  #: NM_BDG_MAXRINGS RX ring offsets
P_DROPS = P_RXOFS + NM_BDG_MAXRINGS  #: packets dropped per RX ring (its ring was full)
_ENTRIES = NM_BDG_MAXPORTS  #: port entries in the segment (the limit is checked apart)
_TABLE = _PORTS + _ENTRIES * PE
_WORDS = _TABLE + TABLE_SIZE


def _switch_of(spec: PortSpec) -> tuple[str, str]:
    sw, _, port = spec.name.partition(":")
    return sw, port


def _is_os_interface(name: str) -> bool:
    """Is ``name`` an interface of the OS (netmap refuses to REGISTER ``valeX:eth0``)?

    Asked through a socket, so it is the calling thread's network namespace
    that answers (``/sys/class/net`` shows the namespace /sys was mounted in).
    """
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _geometry(conf: dict) -> tuple[int, int, int, int]:
    out = []
    for key, default, top in (("tx_rings", 1, NM_BDG_MAXRINGS), ("rx_rings", 1, NM_BDG_MAXRINGS),
                              ("tx_slots", NM_BRIDGE_RINGSIZE, NM_BDG_MAXSLOTS),
                              ("rx_slots", NM_BRIDGE_RINGSIZE, NM_BDG_MAXSLOTS)):
        v = conf.get(key, 0) or default
        if not 1 <= v <= top:
            what = key.replace("_", " ")
            raise ValueError(f"VALE port {what} must be 1..{top}, got {v}")
        out.append(v)
    return out[0], out[1], out[2], out[3]


class _SwitchMap:
    """This process's mapping of one switch segment (shared by its ports of the switch)."""

    def __init__(self, shm_name: str, lock_path: str) -> None:
        self.shm = osl.shm_attach(shm_name)
        self.words = np.ndarray(_WORDS, np.uint64, buffer=self.shm.buf)
        self.ports = self.words[_PORTS:_TABLE].reshape(_ENTRIES, PE)
        self.table = self.words[_TABLE:]
        self.lock = osl.RangeLock(lock_path)
        self.users = 0

    def close(self) -> None:
        del self.words, self.ports, self.table  # views of the segment, before closing it
        self.lock.close()
        osl.shm_close(self.shm)


_maps: dict[str, _SwitchMap] = {}


def _map_switch(shm_name: str, lock_path: str) -> _SwitchMap:
    m = _maps.get(shm_name)
    if m is None:
        m = _maps[shm_name] = _SwitchMap(shm_name, lock_path)
    m.users += 1
    return m


def _unmap_switch(shm_name: str) -> None:
    m = _maps.get(shm_name)
    if m is not None:
        m.users -= 1
        if m.users <= 0:
            del _maps[shm_name]
            m.close()


def _lock_path(sw: str) -> str:
    return os.path.join(rundir(), f"vale-{sw}.lock")


def _switches(state: State) -> dict:
    return state.setdefault("switches", {})


def _create_switch(state: State, sw: str) -> dict:
    switches = _switches(state)
    if len(switches) >= NM_BRIDGES:
        raise NetmapError(errno.ENOMEM, f"{sw}: too many VALE switches ({NM_BRIDGES} exist: "
                          f"{', '.join(sorted(switches))})")
    n = state.setdefault("next_switch", 0)
    state["next_switch"] = n + 1
    name = f"{shm_prefix()}v{n}"
    shm = osl.shm_create(name, _WORDS * 8)
    assert shm.buf is not None
    words = np.ndarray(_WORDS, np.uint64, buffer=shm.buf)
    words[:] = 0
    words[W_MAGIC] = _MAGIC
    del words
    osl.shm_close(shm)
    undo(lambda: osl.shm_unlink(name))
    rec = {"shm": name, "perm": list(range(_ENTRIES)), "active": 0}
    switches[sw] = rec
    return rec


def _words_of(rec: dict) -> tuple[object, np.ndarray]:
    """The switch segment's words, attached for one control-path change."""
    shm = osl.shm_attach(rec["shm"])
    return shm, np.ndarray(_WORDS, np.uint64, buffer=shm.buf)


@dataclass(frozen=True)
class ValePort:
    """One port of a switch, as :func:`list_ports` reports it."""

    switch: str
    index: int  #: the port's index in its switch (netmap's ``port_idx``)
    name: str  #: ``valeX:Y``
    mem_id: int
    tx_rings: int
    rx_rings: int
    pids: tuple[int, ...]  #: processes holding it open
    rx_drops: int  #: packets senders dropped because its RX rings were full


def list_ports() -> list[ValePort]:
    """Every VALE port of this user, by switch and index (``vale-ctl -l``)."""
    out = []
    with transaction() as state:
        for sw, rec in sorted(_switches(state).items()):
            shm, words = _words_of(rec)
            try:
                ports = words[_PORTS:_TABLE].reshape(_ENTRIES, PE)
                for key, prec in state["ports"].items():
                    if prec["kind"] != "vale" or prec["switch"] != sw:
                        continue
                    i = prec["index"]
                    ntx, nrx = prec["counts"]["port"][:2]
                    out.append(ValePort(sw, i, key, prec["mem_id"], ntx, nrx,
                                        tuple(o["pid"] for o in prec["endpoints"]["port"]["opens"]),
                                        int(ports[i, P_DROPS:P_DROPS + nrx].sum())))
            finally:
                del words
                osl.shm_close(shm)  # type: ignore[arg-type]
    return sorted(out, key=lambda p: (p.switch, p.index))


class ValeAdapter(Adapter):
    """One open of a VALE port: its syncs forward (TX) and release (RX)."""

    kind = "vale"

    @classmethod
    def takes(cls, spec: PortSpec) -> bool:
        return spec.is_vale()

    @classmethod
    def prepare(cls, spec: PortSpec, conf: dict, kw: dict) -> dict:
        attach = bool(kw.pop("vale_attach", False))
        super().prepare(spec, conf, kw)
        sw, port = _switch_of(spec)
        if len(sw) >= IFNAMSIZ:
            raise NetmapError(errno.EINVAL, f"{spec.spec}: switch name {sw!r} is longer than "
                              f"{IFNAMSIZ - 1} characters")
        host = spec.mode == NR_REG_SW and attach
        pname = port + ("^" if host else "")
        if len(pname) >= IFNAMSIZ or not re.fullmatch(r"[^\s/:]+", port):
            raise NetmapError(errno.EINVAL, f"{spec.spec}: port name {pname!r} must be 1.."
                              f"{IFNAMSIZ - 1} characters without spaces, '/' or ':'")
        if not attach and _is_os_interface(port):
            raise NetmapError(errno.EINVAL, f"{spec.spec}: {port} is an interface of the OS; "
                              f"attach it to the switch with: vale-ctl -a {sw}:{port}")
        extra = conf.get("extra_bufs", 0)
        if not 0 <= extra <= NM_BDG_MAXEXTRA:
            raise ValueError(f"VALE ports take 0..{NM_BDG_MAXEXTRA} extra buffers, got {extra}")
        pre: dict = {"geometry": _geometry(conf), "key": f"{sw}:{pname}", "switch": sw}
        if host:
            pre["spec"] = spec.with_ring(1, 0)  # the host stack's port: a port like any other
        return pre

    @classmethod
    def record_key(cls, spec: PortSpec, pre: dict) -> tuple[str, str]:
        return pre["key"], "port"

    @classmethod
    def get(cls, state: State, spec: PortSpec, conf: dict, pre: dict) -> Found:
        key, sw = pre["key"], pre["switch"]
        mem_id = spec.mem_id or conf.get("mem_id", 0)
        record = state["ports"].get(key)
        if record is None:
            record = cls._create_port(state, key, sw, pre["geometry"], mem_id,
                                      conf.get("extra_bufs", 0))
        elif mem_id not in (0, record["mem_id"]):
            raise NetmapError(errno.EINVAL, f"{spec.spec}: the port lives in memory region "
                              f"{record['mem_id']}")
        return Found(key, record, "port", R.attach(state, record["mem_id"]))

    @classmethod
    def _create_port(cls, state: State, key: str, sw: str, geom: tuple[int, int, int, int],
                     mem_id: int, extra: int) -> dict:
        ntx, nrx, txs, rxs = geom
        srec = _switches(state).get(sw) or _create_switch(state, sw)
        if srec["active"] + 2 >= NM_BDG_MAXPORTS:
            raise NetmapError(errno.ENOMEM, f"{key}: bridge full ({srec['active']} ports on {sw})")
        nbufs = ntx * txs + nrx * rxs
        if mem_id:
            region = R.attach(state, mem_id)
        else:
            ring_bytes = (ntx + nrx) * (64 + 256 + 16 * max(txs, rxs))
            # Room beyond the port's own rings for more opens' extra buffers and for
            # pipes in its memory (lb's outputs, netmap:valeX:Y{N): the segment is
            # sparse, so room costs memory only when used.
            region = R.create(state, new_mem_id(state), R.Geometry(
                if_pool_size=64 << 10, ring_pool_size=2 * ring_bytes + (4 << 20),
                nbufs=nbufs + extra + 2 + VALE_SPARE_BUFS))
        rings: dict = {"tx": [], "rx": []}
        for d, nr, ns in (("tx", ntx, txs), ("rx", nrx, rxs)):
            for i in range(nr):
                rings[d].append(objects.create_ring(state, region, ns, NR_TX if d == "tx"
                                                    else NR_RX, i, region.alloc_bufs(ns)))
        index = srec["perm"][srec["active"]]
        srec["active"] += 1
        record = {
            "kind": "vale", "switch": sw, "index": index, "mem_id": region.mem_id,
            "rings": {"port": rings}, "counts": {"port": [ntx, nrx, 0, 0]},
            "endpoints": {"port": {"opens": []}},
        }
        state["ports"][key] = record
        shm, words = _words_of(srec)
        try:
            e = words[_PORTS + index * PE:_PORTS + (index + 1) * PE]
            e[:] = 0
            e[P_MEM], e[P_NTX], e[P_NRX] = region.mem_id, ntx, nrx
            e[P_RXOFS:P_RXOFS + nrx] = rings["rx"]
            e[P_ACTIVE] = 1
            words[W_GEN] += 1
            del e
            # what a port that went away learned must not steer traffic to this one
            table = words[_TABLE:]
            table[(table >> np.uint64(PORT_SHIFT)) == index + 1] = 0
        finally:
            del words
            osl.shm_close(shm)  # type: ignore[arg-type]
        return record

    @classmethod
    def release(cls, state: State, record: dict, o: dict, region: R.Region) -> None:
        """After the last open: leave the switch, free rings and buffers, maybe the switch."""
        if record["endpoints"]["port"]["opens"]:
            return
        sw, index = record["switch"], record["index"]
        srec = _switches(state).get(sw)
        if srec is not None:
            shm, words = _words_of(srec)
            try:
                words[_PORTS + index * PE + P_ACTIVE] = 0
                words[W_GEN] += 1
                table = words[_TABLE:]
                table[(table >> np.uint64(PORT_SHIFT)) == index + 1] = 0
                del table
            finally:
                del words
                osl.shm_close(shm)  # type: ignore[arg-type]
            # netmap's permutation: the freed index goes just past the active ones (LIFO)
            perm, k = srec["perm"], srec["active"] - 1
            at = perm.index(index)
            perm[at], perm[k] = perm[k], perm[at]
            srec["active"] = k
            if k == 0:
                osl.shm_unlink(srec["shm"])
                del _switches(state)[sw]
                try:
                    os.unlink(_lock_path(sw))
                except FileNotFoundError:
                    pass
        for d in ("tx", "rx"):
            for ofs in record["rings"]["port"][d]:
                region.free_bufs(objects.ring_slots(region, ofs)["buf_idx"])
                objects.free_ring(state, region, ofs)
        record["rings"]["port"] = {"tx": [], "rx": []}

    # -- data path ------------------------------------------------------------------------
    def __init__(self, spec: PortSpec, found: Found, region: R.Region, pre: dict) -> None:
        super().__init__(spec, found, region, pre)
        sw = found.record["switch"]
        self.switch = sw
        self.index: int = found.record["index"]
        self._shm_name = ""
        self._sw: _SwitchMap | None = None
        self._gen = -1
        #: per other port index: (region, RX rings) of this process's view of the switch
        self._view: dict[int, tuple[R.Region, list[Ring]]] = {}
        self._nrx: dict[int, int] = {}
        self._hash = HashCache()

    def register(self, state: State, tx: list[Ring], rx: list[Ring]) -> None:
        super().register(state, tx, rx)
        srec = _switches(state)[self.switch]
        self._shm_name = srec["shm"]
        self._sw = _map_switch(srec["shm"], _lock_path(self.switch))
        undo(lambda: _unmap_switch(srec["shm"]))

    def unregister(self) -> None:
        for region, rings in self._view.values():
            for r in rings:
                r.release_views()
            R.drop(region)
        self._view.clear()
        self._nrx.clear()
        if self._sw is not None:
            self._sw = None
            _unmap_switch(self._shm_name)

    def info(self) -> PortInfo:
        return PortInfo(self.kind, self.region.buf_size)

    def rxsync(self, kring: KRing, head: int) -> None:
        """Give released slots back to the senders: ``hwcur = head``, nothing else.

        Nothing to check either: a sender writes a slot's flags whole when it
        delivers (``NS_BUF_CHANGED`` included), and sends a buffer index that
        is out of the region to a reserved buffer (see ``_deliver``).
        """
        kring.w[HWCUR] = head

    def txsync(self, kring: KRing, head: int) -> None:
        w = kring.w
        hwcur = w[HWCUR]
        n = kring.num_slots
        if head != hwcur:
            self._forward(kring, hwcur, head)
            w[HWCUR] = head
        w[HWTAIL] = head - 1 if head else n - 1

    # -- forwarding -------------------------------------------------------------------------
    def _refresh(self, sw: _SwitchMap) -> None:
        """Rebuild the view of the switch's other ports (their regions and RX rings)."""
        while True:
            gen = int(sw.words[W_GEN])
            entries = sw.ports.copy()
            if int(sw.words[W_GEN]) == gen:
                break
        keep: dict[int, tuple[R.Region, list[Ring]]] = {}
        nrx: dict[int, int] = {}
        for i in np.flatnonzero(entries[:, P_ACTIVE]).tolist():
            if i == self.index:
                continue  # no hairpin: a port never delivers to itself
            e = entries[i]
            mem_id, n = int(e[P_MEM]), int(e[P_NRX])
            ofs = e[P_RXOFS:P_RXOFS + n].tolist()
            old = self._view.pop(i, None)
            if old is not None and old[0].mem_id == mem_id and \
                    [r.ofs for r in old[1]] == ofs:
                keep[i] = old
            else:
                if old is not None:
                    self._drop_view(old)
                try:
                    region = R.map_id(mem_id)
                except NetmapError:
                    continue  # it left while we looked: the next generation says so
                keep[i] = (region, [Ring(region, o, NR_RX, j) for j, o in enumerate(ofs)])
            nrx[i] = n
        for old in self._view.values():
            self._drop_view(old)
        self._view, self._nrx, self._gen = keep, nrx, gen

    @staticmethod
    def _drop_view(v: tuple[R.Region, list[Ring]]) -> None:
        for r in v[1]:
            r.release_views()
        R.drop(v[0])

    def _forward(self, kring: KRing, hwcur: int, head: int) -> None:
        """Send the slots ``[hwcur, head)`` of TX ring ``kring`` through the switch.

        One flow per batch (what pkt-gen and most senders produce: single
        slots, one pair of MACs) takes a short path: one decision, one
        destination list.  Anything else is routed packet by packet, with
        arrays.
        """
        sw = self._sw
        assert sw is not None
        ring = kring.ring
        n = kring.num_slots
        sl = gather(ring.slots, hwcur, head, n)  # one copy of the batch's slots
        fl = sl["flags"]
        seen = int(np.bitwise_or.reduce(fl))
        if seen & NS_BUF_CHANGED:
            clear_buf_changed(ring.slot_flags, hwcur, head, n)
        bi = sl["buf_idx"].astype(np.intp)
        ln = sl["len"]
        indirect = None
        if seen & NS_INDIRECT:
            indirect = (fl & NS_INDIRECT) != 0
            ptr = sl["ptr"]
            if bool((ptr[indirect] == 0).any()):
                raise SlotError(f"slots {hwcur}..{head}: an NS_INDIRECT slot has no address")
            direct = ~indirect
            if bad_slots(bi[direct], ln[direct], kring.nbufs, kring.buf_size):
                raise SlotError(f"slots {hwcur}..{head} hold an invalid buffer or length")
            src_data = _Source(self.region, bi, ln, ptr, indirect)
        else:
            if bad_slots(bi, ln, kring.nbufs, kring.buf_size):
                raise SlotError(f"slots {hwcur}..{head} hold an invalid buffer or length")
            src_data = _Source(self.region, bi, ln, None, None)
        if int(sw.words[W_GEN]) != self._gen:
            self._refresh(sw)
        me = self.index
        pe = sw.ports[me]
        last = int(pe[P_LAST]) - 1
        if seen & NS_MOREFRAG:
            starts, nfrags = packets(fl)
            multi: np.ndarray | None = nfrags
        else:
            starts, multi = np.arange(len(fl)), None
        hdr = src_data.headers(starts)
        if bool((hdr == hdr[0]).all()) and int(np.minimum.reduce(ln[starts])) >= ETH_HLEN:
            macs = hdr[0].tobytes()
            d, writes, new_last = route_flow(int.from_bytes(macs[6:], "little"),
                                             int.from_bytes(macs[:6], "little"),
                                             sw.table, me, last, self._hash)
            plan = self._one_flow(d, kring.ringid, starts, multi)
        else:
            h = np.zeros((len(starts), 16), np.uint8)
            h[:, :12] = hdr
            h64 = h.view("<u8")
            src = (h64[:, 0] >> np.uint64(48)) | (h64[:, 1] << np.uint64(16))
            dst = h64[:, 0] & np.uint64(MAC_MASK)
            runt = ln[starts] < ETH_HLEN
            dport = np.full(len(starts), DROP, np.int64)
            keep = np.flatnonzero(~runt)
            dport[keep], writes, new_last = route(src[keep], dst[keep], sw.table, me, last,
                                                  self._hash)
            plan = [(p, r, starts[pk], None if multi is None else multi[pk])
                    for p, r, pk in destinations(dport, me, kring.ringid, self._nrx)]
        for b, v in writes.items():
            sw.table[b] = v
        if new_last != last:
            pe[P_LAST] = new_last + 1
        for p, r, first, nf in plan:
            view = self._view.get(p)
            if view is not None and len(first):
                self._deliver(sw, p, r, view, src_data, first, nf)

    def _one_flow(self, d: int, tx_ring: int, starts: np.ndarray,
                  nf: np.ndarray | None) -> list:
        """The delivery plan of a one-flow batch going to ``d`` (a port, FLOOD or DROP)."""
        if d == DROP:
            return []
        if d == FLOOD:
            return [(p, 0, starts, nf) for p in self._nrx]
        nrx = self._nrx.get(d)
        return [] if nrx is None else [(d, tx_ring % nrx, starts, nf)]

    def _deliver(self, sw: _SwitchMap, p: int, r: int, view: tuple[R.Region, list[Ring]],
                 src: _Source, first: np.ndarray, nf: np.ndarray | None) -> None:
        """Copy the packets starting at slots ``first`` (``nf`` slots each; None: one)
        into RX ring ``r`` of port ``p``: one lock, one copy, one publish, one wake-up.
        """
        region, rings = view
        dring = rings[r]
        dk = dring.kring
        dw = dk.w
        n = dring.num_slots
        lockno = p * NM_BDG_MAXRINGS + r
        sw.lock.acquire(lockno)
        try:
            hwtail, space = rx_room(dk)
            if nf is None:
                k = m = min(len(first), space)
                frag = first[:k]
            else:
                cum = np.cumsum(nf)
                k = int(np.searchsorted(cum, space, side="right"))
                m = int(cum[k - 1]) if k else 0
                frag = np.repeat(first[:k] - (cum[:k] - nf[:k]), nf[:k]) + np.arange(m)
            if m:
                end = (hwtail + m) % n
                dbi = gather(dring.slot_buf_idx, hwtail, end, n).astype(np.intp)
                dbi[(dbi < 2) | (dbi >= region.nbufs)] = 0  # a receiver's bad slot: reserved buf
                scatter(dring.slot_len, hwtail, src.copy_to(region, dbi, frag,
                                                            dring.buf_size), n)
                if nf is None:
                    for s in spans(hwtail, end, n):
                        dring.slot_flags[s] = 1 << 8  # one fragment (NS_RFRAGS)
                else:
                    # netmap: every fragment carries the count, all but the last NS_MOREFRAG
                    count = np.repeat(nf[:k], nf[:k]).astype(np.uint16) << 8
                    more = np.full(m, NS_MOREFRAG, np.uint16)
                    more[cum[:k] - 1] = 0
                    scatter(dring.slot_flags, hwtail, count | more, n)
                dw[HWTAIL] = end
            if k < len(first):
                sw.ports[p, P_DROPS + r] += len(first) - k
        finally:
            sw.lock.release(lockno)
        if m:
            dk.notify()


class _Source:
    """Where a TX batch's bytes are: the sender's buffers, or user memory (``NS_INDIRECT``)."""

    def __init__(self, src: R.Region, bi: np.ndarray, ln: np.ndarray, ptr: np.ndarray | None,
                 indirect: np.ndarray | None) -> None:
        if indirect is not None:
            bi = np.where(indirect, 0, bi)  # their buf_idx is not checked, nor used
        self.src, self.bi, self.ln, self.ptr, self.indirect = src, bi, ln, ptr, indirect

    def headers(self, starts: np.ndarray) -> np.ndarray:
        """The first 12 bytes (the MACs) of each packet, one row each."""
        h = self.src.rows(12)[self.bi[starts]].view(np.uint8).reshape(len(starts), -1)[:, :12]
        if self.indirect is not None:
            assert self.ptr is not None
            ind = np.flatnonzero(self.indirect[starts])
            for p, idx in _by_address(self.ptr[starts[ind]], ind):
                k = min(12, int(self.ln[starts[idx]].min()))
                h[idx, :k] = _user_bytes(p, k)
        return h

    def copy_to(self, dst: R.Region, dbi: np.ndarray, frag: np.ndarray,
                dsize: int) -> np.ndarray:
        """Copy fragments ``frag`` into ``dst``'s buffers ``dbi``; returns the lengths
        delivered (0 for a fragment longer than the destination buffer, as netmap does)."""
        lens = self.ln[frag]
        top = int(np.maximum.reduce(lens))
        if top > dsize:
            lens = np.where(lens > dsize, 0, lens)
            top = int(np.maximum.reduce(lens))
        if not top:
            return lens
        if self.indirect is None or not self.indirect[frag].any():
            dst.rows(top)[dbi] = self.src.rows(top)[self.bi[frag]]
            return lens
        ind = self.indirect[frag]
        d = np.flatnonzero(~ind)
        if len(d):
            dst.rows(top)[dbi[d]] = self.src.rows(top)[self.bi[frag[d]]]
        i = np.flatnonzero(ind)
        assert self.ptr is not None
        key = self.ptr[frag[i]] ^ (lens[i].astype(np.uint64) << np.uint64(48))
        for _k, idx in _by_address(key, i):
            length = int(lens[idx[0]])
            if length:
                dst.bufs[dbi[idx], :length] = _user_bytes(int(self.ptr[frag[idx[0]]]), length)
        return lens


def _by_address(keys: np.ndarray, idx: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Group ``idx`` by ``keys`` (one copy per distinct user address, not per packet)."""
    if not len(keys):
        return []
    u, inv = np.unique(keys, return_inverse=True)
    return [(int(k), idx[inv.reshape(-1) == j]) for j, k in enumerate(u.tolist())]


def _user_bytes(address: int, length: int) -> np.ndarray:
    """``length`` bytes of this process's memory at ``address`` (an ``NS_INDIRECT`` slot)."""
    return np.ctypeslib.as_array((ctypes.c_uint8 * length).from_address(address))
