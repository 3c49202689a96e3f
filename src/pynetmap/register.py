"""Registration, once for every port type: netmap's ``netmap_do_regif`` and its undo.

:func:`open_port` binds a name to its port record in one registry
transaction: the adapter finds or creates the record (``get``), the core
selects the rings the name asks for, checks exclusivity, lets the adapter
make the rings exist, builds the ``netmap_if`` and its extra-buffer list,
starts the adapter, records the open and the rings' holders, and holds the
region.  If anything fails the transaction rolls back as one: the registry
file is not written, and shared memory created or buffers taken on the way
are given back (:func:`pynetmap.registry.undo`), so a refused open leaves
nothing behind.

:func:`release_open` is the reverse, for a port closed by its process or an
open whose process died (the registry's sweep).
"""

from __future__ import annotations

import errno
import os

from . import objects, osl
from . import region as R
from .adapter import Adapter
from .adapters import adapter_of_kind
from .constants import (
    NR_EXCLUSIVE,
    NR_REG_ALL_NIC,
    NR_REG_NIC_SW,
    NR_REG_ONE_NIC,
    NR_REG_ONE_SW,
    NR_REG_SW,
    NR_RX,
    NR_RX_RINGS_ONLY,
    NR_TX,
    NR_TX_RINGS_ONLY,
)
from .errors import NetmapError
from .kring import kring_words, set_holders
from .names import PortSpec
from .port import Port
from .registry import State, transaction
from .ring import Ring


def select_rings(spec: PortSpec, kind: str, ntx: int, nrx: int, nhtx: int,
                 nhrx: int) -> tuple[list[int], list[int]]:
    """Ring ids the name binds (spec §1.6); host rings are numbered after the NIC rings."""
    mode, i = spec.mode, spec.ringid
    if mode in (NR_REG_SW, NR_REG_ONE_SW, NR_REG_NIC_SW) and not (nhtx or nhrx):
        raise NetmapError(errno.EINVAL, f"{spec.spec}: {kind} ports have no host rings "
                          "(only '-N' or no suffix)")
    if mode == NR_REG_ALL_NIC:
        tx, rx = list(range(ntx)), list(range(nrx))
    elif mode == NR_REG_ONE_NIC:
        if i >= ntx and i >= nrx:
            raise NetmapError(errno.EINVAL, f"{spec.spec}: ring {i} does not exist "
                              f"({ntx} tx, {nrx} rx rings)")
        tx, rx = [i if i < ntx else 0], [i if i < nrx else 0]
    elif mode == NR_REG_SW:
        tx, rx = list(range(ntx, ntx + nhtx)), list(range(nrx, nrx + nhrx))
    elif mode == NR_REG_ONE_SW:
        if i >= nhtx and i >= nhrx:
            raise NetmapError(errno.EINVAL, f"{spec.spec}: host ring {i} does not exist "
                              f"({max(nhtx, nhrx)} host ring pair{'s' if nhtx > 1 else ''})")
        tx, rx = [ntx + (i if i < nhtx else 0)], [nrx + (i if i < nhrx else 0)]
    elif mode == NR_REG_NIC_SW:
        tx, rx = list(range(ntx + nhtx)), list(range(nrx + nhrx))
    else:
        raise NetmapError(errno.EINVAL, f"{spec.spec}: ring mode {mode} is not for {kind} ports")
    if spec.flags & NR_RX_RINGS_ONLY:
        tx = []
    if spec.flags & NR_TX_RINGS_ONLY:
        rx = []
    return tx, rx


def check_exclusive(cls: type[Adapter], spec: PortSpec, record: dict, ep: str, ntx: int,
                    tx: list[int], rx: list[int], flags: int) -> None:
    """``EBUSY`` if a ring is taken: by an exclusive open, or at all where rings take one."""
    for o in record["endpoints"][ep]["opens"]:
        busy = sorted(set(o["tx"]) & set(tx) | set(o["rx"]) & set(rx))
        if not busy:
            continue
        what = "the host rings" if busy[0] >= ntx else f"{cls.ring_word} {busy[0]}"
        if cls.exclusive_rings:
            raise NetmapError(errno.EBUSY, f"{spec.port}: {what} already bound by pid "
                              f"{o['pid']} (one port per {cls.ring_word})")
        if o["flags"] & NR_EXCLUSIVE:
            raise NetmapError(errno.EBUSY, f"{spec.spec}: {what} is in exclusive use by pid "
                              f"{o['pid']}")
        if flags & NR_EXCLUSIVE:
            raise NetmapError(errno.EBUSY, f"{spec.spec}: cannot take {what} exclusively: "
                              f"pid {o['pid']} uses it")


def open_port(cls: type[Adapter], spec: PortSpec, conf: dict, extra_bufs: int, flags: int,
              kw: dict) -> Port:
    """Register ``spec`` with port type ``cls``: one transaction, one rollback."""
    if cls.kernel_register:  # native netmap: the kernel keeps the registry
        return cls.open_kernel(spec, conf, extra_bufs, flags, kw)  # type: ignore[attr-defined]
    for opt in spec.options:
        if opt not in cls.options:
            raise NetmapError(errno.EOPNOTSUPP, f"{spec.spec}: option @{opt} is not "
                              f"implemented for {cls.kind} ports")
    conf = {**conf, "extra_bufs": extra_bufs}
    pre = cls.prepare(spec, conf, kw)
    spec = pre.pop("spec", spec)  # a port type may rename (VALE: the host stack's port IF^)
    with transaction() as state:
        found = cls.get(state, spec, conf, pre)
        record, ep, region = found.record, found.ep, found.region
        ntx, nrx, nhtx, nhrx = record["counts"][ep]
        tx, rx = select_rings(spec, cls.kind, ntx, nrx, nhtx, nhrx)
        check_exclusive(cls, spec, record, ep, ntx, tx, rx, flags)
        private = cls.krings_get(state, found, tx, rx, pre)
        mine = record["rings"][ep]
        head, got = objects.make_extra_list(region, extra_bufs)
        nifp = objects.create_if(state, region, spec.name, ntx, nrx, nhtx, nhrx,
                                 {i: mine["tx"][i] for i in tx}, {i: mine["rx"][i] for i in rx},
                                 bufs_head=head)
        tx_rings = [Ring(region, mine["tx"][i], NR_TX, i) for i in tx]
        rx_rings = [Ring(region, mine["rx"][i], NR_RX, i) for i in rx]
        adapter = cls(spec, found, region, pre)
        for r in tx_rings + rx_rings:
            r.kring.owner = (found.key, ep)
        try:
            adapter.register(state, tx_rings, rx_rings)
            o = {"pid": os.getpid(), "token": osl.process_token(), "if": nifp, "flags": flags,
                 "tx": tx, "rx": rx, "extra": got, **private}
            record["endpoints"][ep]["opens"].append(o)
            for r in tx_rings + rx_rings:
                if not r.kring.holders:
                    r.kring.reset_user()  # nobody holds it: no earlier holder's head carries over
            _count_holders(region, record, ep)
        except BaseException:
            adapter.unregister()
            for r in tx_rings + rx_rings:
                r.release_views()
            raise
        R.hold(region)
    port = Port(spec, region, nifp, flags, tx_rings, rx_rings, adapter)
    port.extra_bufs = got
    return port


def _count_holders(region: R.Region, record: dict, ep: str) -> None:
    """Write each ring's holder count and one live holder into its kring (see KRing)."""
    opens = record["endpoints"][ep]["opens"]
    for d in ("tx", "rx"):
        for i, ofs in enumerate(record["rings"][ep][d]):
            if not ofs:
                continue
            holding = [o for o in opens if i in o[d]]
            last = holding[-1] if holding else {"pid": 0, "token": 0}
            set_holders(kring_words(region.mem, ofs), len(holding), last["pid"], last["token"])


def release_open(state: State, record: dict, o: dict) -> None:
    """Drop one open (closed, or its process died); the adapter frees the rest."""
    cls = adapter_of_kind(record["kind"])
    try:
        region = R.attach(state, record["mem_id"])
    except NetmapError as e:
        if e.errno != errno.ENOENT:
            raise
        # Its memory is gone (removed by hand, or left so by an older version): forget
        # the open, so that the registry heals; nothing of it is left to free.
        for eprec in record["endpoints"].values():
            if o in eprec["opens"]:
                eprec["opens"].remove(o)
        return
    try:
        for ep, eprec in record["endpoints"].items():
            if o in eprec["opens"]:
                eprec["opens"].remove(o)
                _count_holders(region, record, ep)
        objects.free_if(state, region, o["if"], o["extra"])
        cls.release(state, record, o, region)
    finally:
        if region.users <= 0:
            R.drop_unused(region)


def close_port(port: Port) -> None:
    """Unregister and release ``port``'s open (``Port.close``)."""
    adapter = port.adapter
    adapter.unregister()
    with transaction() as state:
        record = state["ports"].get(adapter.key)
        if record is None:
            return
        for o in record["endpoints"][adapter.ep]["opens"]:
            if o["pid"] == os.getpid() and o["if"] == port.nifp_ofs:
                release_open(state, record, o)
                break
