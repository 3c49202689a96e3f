"""The adapter interface and registration in the core (pynetmap.adapter, pynetmap.register).

A port type written here, in the test, with nothing but the interface --
a loopback whose TX ring i feeds its own RX ring i -- proves that a new
port type is one class plus one entry in the adapter list.  Then the core's
ring selection as a pure table, and what a refused open leaves behind.
"""

from __future__ import annotations

import errno
import os
import uuid

import numpy as np
import pytest

import pynetmap
from pynetmap import NetmapError, PortInfo, adapters, objects
from pynetmap import region as R
from pynetmap.adapter import Adapter, Found
from pynetmap.constants import (
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
from pynetmap.kring import KRing, distance, gather, scatter
from pynetmap.names import parse
from pynetmap.register import select_rings
from pynetmap.registry import State, new_mem_id, shm_prefix, transaction


class Loopback(Adapter):
    """``netmap:loopN``: TX ring i is delivered to RX ring i of the same port (copies)."""

    kind = "loop-test"

    @classmethod
    def takes(cls, spec) -> bool:
        return spec.port.startswith("loop") and not spec.is_pipe()

    @classmethod
    def get(cls, state: State, spec, conf: dict, pre: dict) -> Found:
        key = f"loop:{spec.port}"
        record = state["ports"].get(key)
        if record is None:
            n, slots = conf.get("tx_rings") or 2, conf.get("tx_slots") or 64
            region = R.create(state, new_mem_id(state), R.Geometry(1 << 16, 1 << 20, 4 * n * slots))
            mk = [[objects.create_ring(state, region, slots, d, i, region.alloc_bufs(slots))
                   for i in range(n)] for d in (NR_TX, NR_RX)]
            record = state["ports"][key] = {
                "kind": cls.kind, "mem_id": region.mem_id,
                "rings": {"loop": {"tx": mk[0], "rx": mk[1]}}, "counts": {"loop": [n, n, 0, 0]},
                "endpoints": {"loop": {"opens": []}},
            }
        return Found(key, record, "loop", R.attach(state, record["mem_id"]))

    @classmethod
    def release(cls, state: State, record: dict, o: dict, region: R.Region) -> None:
        if record["endpoints"]["loop"]["opens"]:
            return
        rings = record["rings"]["loop"]
        for ofs in rings["tx"] + rings["rx"]:
            region.free_bufs(objects.ring_slots(region, ofs)["buf_idx"].astype(np.int64))
            objects.free_ring(state, region, ofs)

    def register(self, state, tx, rx) -> None:
        super().register(state, tx, rx)
        self.rx = {r.ringid: r.kring for r in rx}

    def txsync(self, kring: KRing, head: int) -> None:
        """Copy ``[hwcur, head)`` into the RX ring's buffers, as far as it has room."""
        rx, n = self.rx[kring.ringid], kring.num_slots
        room = n - 1 - distance(rx.hwcur, rx.hwtail, n)
        count = min(distance(kring.hwcur, head, n), room)
        if count:
            src = gather(kring.ring.slot_buf_idx, kring.hwcur, (kring.hwcur + count) % n, n)
            lens = gather(kring.ring.slot_len, kring.hwcur, (kring.hwcur + count) % n, n)
            dst = gather(rx.ring.slot_buf_idx, rx.hwtail, (rx.hwtail + count) % n, n)
            self.region.bufs[dst] = self.region.bufs[src]
            scatter(rx.ring.slot_len, rx.hwtail, lens, n)
            rx.hwtail = (rx.hwtail + count) % n
            kring.hwcur = (kring.hwcur + count) % n
        kring.hwtail = (kring.hwcur - 1) % n  # copied is as good as sent

    def rxsync(self, kring: KRing, head: int) -> None:
        kring.hwcur = head

    def info(self) -> PortInfo:
        return PortInfo(self.kind, self.region.buf_size, mtu=1500)


@pytest.fixture
def loop_type(monkeypatch: pytest.MonkeyPatch) -> type[Loopback]:
    """Loopback first in the adapter list, and findable by kind (for releases and sweeps)."""
    entry = f"{__name__}:Loopback"
    monkeypatch.setattr(adapters, "ADAPTERS", [entry, *adapters.ADAPTERS])
    monkeypatch.setitem(adapters._loaded, entry, Loopback)
    return Loopback


def _ours_in_dev_shm() -> set[str]:
    return {f for f in os.listdir("/dev/shm") if f.startswith(shm_prefix())}


def test_a_port_type_is_one_class_and_one_list_entry(loop_type: type[Loopback]) -> None:
    name = f"netmap:loop{uuid.uuid4().hex[:6]}"
    frames = np.arange(5 * 64, dtype=np.uint8).reshape(5, 64)
    with pynetmap.open(name, rings=2, slots=64) as port:
        assert port.info() == PortInfo("loop-test", 2048, mtu=1500)
        assert [r.ringid for r in port.tx_rings] == [0, 1] and port.num_rx_rings == 2
        assert port.tx_rings[1].send(frames) == 5
        port.txsync()
        assert port.poll(pynetmap.POLLIN, 0) & pynetmap.POLLIN
        got = port.rx_rings[1].receive()
        assert got.count == 5 and (got.to_array() == frames).all()
        assert port.rx_rings[0].receive().count == 0
        port.rx_rings[1].release(got.count)
        port.rxsync()
        with pytest.raises(NetmapError) as e:  # the core's exclusivity, not the adapter's
            pynetmap.open(name + "-1/x")
        assert e.value.errno == errno.EBUSY
    with transaction() as state:
        assert not any(r["kind"] == "loop-test" for r in state["ports"].values())


def test_exclusive_open_is_the_cores(loop_type: type[Loopback]) -> None:
    name = f"netmap:loop{uuid.uuid4().hex[:6]}"
    with pynetmap.open(name + "-1/x"):
        with pytest.raises(NetmapError) as e:
            pynetmap.open(name + "-1")
        assert e.value.errno == errno.EBUSY and "exclusive" in str(e.value)
        with pynetmap.open(name + "-0") as other:  # another ring is free
            assert [r.ringid for r in other.rx_rings] == [0]


def test_an_unimplemented_option_is_refused(loop_type: type[Loopback]) -> None:
    with pytest.raises(NetmapError) as e:
        pynetmap.open(f"netmap:loop{uuid.uuid4().hex[:6]}@extmem:file=/tmp/x")
    assert e.value.errno == errno.EOPNOTSUPP and "@extmem" in str(e.value)


class Refuses(Loopback):
    """A loopback whose register fails after the record, region and rings exist."""

    kind = "refuses-test"

    def register(self, state, tx, rx) -> None:
        raise NetmapError(errno.EIO, "the device said no")


def test_a_refused_register_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = f"{__name__}:Refuses"
    monkeypatch.setattr(adapters, "ADAPTERS", [entry, *adapters.ADAPTERS])
    monkeypatch.setitem(adapters._loaded, entry, Refuses)
    before = _ours_in_dev_shm()
    mapped = set(R._cache)
    with pytest.raises(NetmapError) as e:
        pynetmap.open(f"netmap:loop{uuid.uuid4().hex[:6]}", extra_bufs=8)
    assert e.value.errno == errno.EIO
    assert _ours_in_dev_shm() == before
    with transaction() as state:
        assert not any(r["kind"] == "refuses-test" for r in state["ports"].values())
    assert set(R._cache) == mapped  # and this process no longer maps the region it made


def test_a_refused_open_in_an_existing_region_gives_its_buffers_back() -> None:
    p = f"b{uuid.uuid4().hex[:8]}"
    with pynetmap.open(f"netmap:{p}{{0") as a:
        free = int((a.region.bitmap == 0).sum())
        with pytest.raises(NetmapError):
            pynetmap.open(f"netmap:{p}{{1", extra_bufs=10**9)  # new pipe, same region
        with pytest.raises(NetmapError):
            pynetmap.open(f"netmap:{p}}}0-3")  # ring 3 of a 1-ring pipe
        assert int((a.region.bitmap == 0).sum()) == free


class KernelRun(Loopback):
    """A port whose kernel runs the ring protocol: the core must not run prologues."""

    kind = "kernel-test"
    kernel_sync = True

    def kernel_txsync(self) -> list[str]:
        self.calls.append("tx")
        return []

    def kernel_rxsync(self) -> list[str]:
        self.calls.append("rx")
        return ["rx ring 0: the kernel reset it"]

    def register(self, state, tx, rx) -> None:
        super().register(state, tx, rx)
        self.calls: list[str] = []


def test_kernel_sync_ports_skip_the_core_prologue(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = f"{__name__}:KernelRun"
    monkeypatch.setattr(adapters, "ADAPTERS", [entry, *adapters.ADAPTERS])
    monkeypatch.setitem(adapters._loaded, entry, KernelRun)
    with pynetmap.open(f"netmap:loop{uuid.uuid4().hex[:6]}") as port:
        port.tx_rings[0].head = 1000  # illegal: the core would reset it, the kernel decides
        port.txsync()
        assert port.tx_rings[0].head == 1000
        with pytest.raises(pynetmap.RingError):
            port.rxsync()
        assert port.adapter.calls == ["tx", "rx"]


# -- ring selection: the core's table (spec §1.6), no I/O ------------------------------------

@pytest.mark.parametrize("name, counts, want", [
    ("netmap:e", (2, 2, 1, 1), ([0, 1], [0, 1])),
    ("netmap:e-1", (2, 2, 1, 1), ([1], [1])),
    ("netmap:e^", (2, 2, 1, 1), ([2], [2])),
    ("netmap:e^0", (2, 2, 1, 1), ([2], [2])),
    ("netmap:e*", (2, 2, 1, 1), ([0, 1, 2], [0, 1, 2])),
    ("netmap:e/R", (2, 2, 1, 1), ([], [0, 1])),
    ("netmap:e-0/T", (2, 2, 1, 1), ([0], [])),
    ("netmap:e-2", (3, 1, 0, 0), ([2], [0])),  # asymmetric: rx falls back to ring 0
    ("netmap:e^1", (1, 1, 2, 2), ([2], [2])),
])
def test_select_rings(name: str, counts: tuple, want: tuple) -> None:
    assert select_rings(parse(name), "t", *counts) == want


@pytest.mark.parametrize("name, counts, words", [
    ("netmap:e-2", (2, 2, 1, 1), "ring 2 does not exist"),
    ("netmap:e^", (2, 2, 0, 0), "no host rings"),
    ("netmap:e*", (1, 1, 0, 0), "no host rings"),
    ("netmap:e^1", (2, 2, 1, 1), "host ring 1 does not exist"),
])
def test_select_rings_errors(name: str, counts: tuple, words: str) -> None:
    with pytest.raises(NetmapError) as e:
        select_rings(parse(name), "t", *counts)
    assert e.value.errno == errno.EINVAL and words in str(e.value)


def test_modes_in_the_table_are_the_parsers() -> None:
    assert [parse(n).mode for n in ("netmap:e", "netmap:e-1", "netmap:e^", "netmap:e^0",
                                    "netmap:e*")] == [NR_REG_ALL_NIC, NR_REG_ONE_NIC, NR_REG_SW,
                                                      NR_REG_ONE_SW, NR_REG_NIC_SW]
    assert parse("netmap:e/R").flags & NR_RX_RINGS_ONLY
    assert parse("netmap:e/T").flags & NR_TX_RINGS_ONLY
    assert parse("netmap:e/x").flags & NR_EXCLUSIVE


def test_release_finds_the_adapter_by_kind_through_the_list() -> None:
    assert adapters.adapter_of_kind("pipe").__name__ == "PipeAdapter"
    assert adapters.adapter_of_kind("nic").__name__ == "NicAdapter"
    assert adapters.adapter_of_kind("vale").__name__ == "ValeAdapter"
    with pytest.raises(NetmapError):
        adapters.adapter_of_kind("no-such-kind")
