"""Native netmap (pynetmap.native) without a netmap kernel: the control structs and ioctl
numbers against NETMAP-SPEC §1.5-1.8, and the whole port path against a fake kernel that
answers REGISTER, lays out a netmap_if and rings in a bytearray, and loops each NIC TX ring
back to the RX ring of the same index on NIOCTXSYNC.  No test here has met a real
/dev/netmap (there is none on this machine).
"""

from __future__ import annotations

import ctypes
import errno

import numpy as np
import pytest

from pynetmap import POLLIN, NetmapError, PortInfo
from pynetmap import layout as L
from pynetmap import region as R
from pynetmap.constants import (
    NETMAP_API,
    NETMAP_REQ_REGISTER,
    NR_EXCLUSIVE,
    NR_REG_ALL_NIC,
    NR_REG_ONE_NIC,
    NR_REG_SW,
    NR_RX,
    NR_TX,
    NR_TX_RINGS_ONLY,
)
from pynetmap.kring import KRING_SIZE
from pynetmap.names import parse
from pynetmap.native import abi
from pynetmap.native.adapter import DEVICE, Device, NativeAdapter
from pynetmap.objects import init_ring

# -- the ABI against the spec's tables -----------------------------------------------------

HEADER = [("nr_version", 0, 2), ("nr_reqtype", 2, 2), ("nr_reserved", 4, 4),
          ("nr_name", 8, 64), ("nr_options", 72, 8), ("nr_body", 80, 8)]
REGISTER = [("nr_offset", 0, 8), ("nr_memsize", 8, 8), ("nr_tx_slots", 16, 4),
            ("nr_rx_slots", 20, 4), ("nr_tx_rings", 24, 2), ("nr_rx_rings", 26, 2),
            ("nr_host_tx_rings", 28, 2), ("nr_host_rx_rings", 30, 2), ("nr_mem_id", 32, 2),
            ("nr_ringid", 34, 2), ("nr_mode", 36, 4), ("nr_extra_bufs", 40, 4),
            ("nr_flags", 48, 8)]


@pytest.mark.parametrize("struct, size, table", [(abi.NmreqHeader, 88, HEADER),
                                                 (abi.NmreqRegister, 56, REGISTER)])
def test_struct_layout_is_the_specs(struct: type[ctypes.Structure], size: int,
                                    table: list) -> None:
    assert ctypes.sizeof(struct) == size
    got = [(f, getattr(struct, f).offset, getattr(struct, f).size) for f, _ in struct._fields_]
    assert got == table


@pytest.mark.parametrize("family, want", [
    ("linux", (0xC0586997, 0x6994, 0x6995)),
    ("bsd", (0xC0586997, 0x20006994, 0x20006995)),
])
def test_ioctl_numbers(family: str, want: tuple) -> None:
    assert abi.ioctls(family) == want


def test_ioc_encodes_the_legacy_numbers_too() -> None:
    """§1.8: NIOCGINFO / NIOCREGIF are _IOWR('i', 145/146, struct nmreq of 60 bytes)."""
    assert abi.ioc("linux", "rw", "i", 145, 60) == 0xC03C6991
    assert abi.ioc("linux", "rw", "i", 146, 60) == 0xC03C6992
    assert abi.ioc("bsd", "r", "i", 1, 4) == 0x40046901  # _IOR: IOC_OUT
    with pytest.raises(ValueError):
        abi.ioc("darwin", "", "i", 1, 0)


def test_os_family() -> None:
    assert abi.os_family("linux") == "linux" and abi.os_family("freebsd14") == "bsd"


def test_register_request_from_a_name() -> None:
    spec = parse("netmap:em0-2/x@conf:slots=512")
    conf = {"tx_slots": 512, "rx_slots": 512, "mem_id": 3}
    hdr, body = abi.register_request(spec.name, spec.mode, spec.ringid, spec.flags, conf, 8)
    raw = bytes(hdr)
    assert int.from_bytes(raw[0:2], "little") == NETMAP_API == 14
    assert int.from_bytes(raw[2:4], "little") == NETMAP_REQ_REGISTER
    assert raw[8:72].rstrip(b"\0") == b"em0" and raw[4:8] == bytes(4)
    assert int.from_bytes(raw[72:80], "little") == 0  # no options
    assert int.from_bytes(raw[80:88], "little") == ctypes.addressof(body)
    b = bytes(body)
    assert int.from_bytes(b[16:20], "little") == 512 == int.from_bytes(b[20:24], "little")
    assert int.from_bytes(b[32:34], "little") == 3  # mem_id
    assert int.from_bytes(b[34:36], "little") == 2  # ringid
    assert int.from_bytes(b[36:40], "little") == NR_REG_ONE_NIC
    assert int.from_bytes(b[40:44], "little") == 8  # extra buffers
    assert int.from_bytes(b[48:56], "little") == NR_EXCLUSIVE


def test_a_name_netmap_cannot_hold_is_refused() -> None:
    with pytest.raises(NetmapError) as e:
        abi.register_request("x" * 64, NR_REG_ALL_NIC, 0, 0, {}, 0)
    assert e.value.errno == errno.EINVAL and "63 bytes" in str(e.value)
    abi.register_request("x" * 63, NR_REG_ALL_NIC, 0, 0, {}, 0)
    with pytest.raises(ValueError, match="tx_rings must be in 0..65535"):
        abi.register_request("em0", NR_REG_ALL_NIC, 0, 0, {"tx_rings": 70000}, 0)


# -- the port path against a fake kernel ---------------------------------------------------

PAGE = 4096


class FakeKernel(Device):
    """``/dev/netmap`` in a bytearray: REGISTER, mmap, and syncs that loop TX i into RX i.

    It keeps its own hwcur/hwtail per ring (as the kernel's krings do) and
    publishes ``tail`` only on syncs, so nothing reaches the application
    without an ioctl.
    """

    def __init__(self, ifaces: dict[str, int], slots: int = 64, family: str = "linux") -> None:
        super().__init__(family)
        self.ifaces = ifaces  # name -> NIC ring pairs (each also has one host ring pair)
        self.slots = slots
        self.calls: list[int] = []
        self.closed: list[int] = []
        self.polls: list[int] = []
        self.mem = bytearray()
        self.wire = 0  # frames the TX rings handed over

    def open(self, path: str) -> int:
        assert path == DEVICE
        return 42

    def close(self, fd: int) -> None:
        self.closed.append(fd)

    def poll(self, fd: int, events: int, timeout_ms: float) -> None:
        self.polls.append(events)

    def mmap(self, fd: int, size: int) -> bytearray:
        assert size == len(self.mem)
        return self.mem

    def ioctl(self, fd: int, request: int, arg: object = 0) -> None:
        self.calls.append(request)
        if request == self.ctrl:
            self._register(arg)
        elif request == self.txsync:
            self._txsync()
        elif request == self.rxsync:
            self._rxsync()
        else:
            raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")

    def _register(self, hdr: object) -> None:
        raw = bytes(hdr)  # type: ignore[call-overload]
        assert raw[0:2] == NETMAP_API.to_bytes(2, "little")
        name = raw[8:72].rstrip(b"\0").decode()
        body = abi.NmreqRegister.from_address(int.from_bytes(raw[80:88], "little"))
        if name not in self.ifaces:
            raise OSError(errno.ENXIO, "No such device or address")
        nq, n = self.ifaces[name], self.slots
        mode, i = body.nr_mode, body.nr_ringid
        bound = {NR_REG_ALL_NIC: range(nq), NR_REG_ONE_NIC: range(i, i + 1),
                 NR_REG_SW: range(nq, nq + 1)}[mode]
        rings = 2 * (nq + 1)
        ring_obj = -(-(KRING_SIZE + L.ring_size(n)) // PAGE) * PAGE
        nifp_ofs, ring_pool = PAGE, 2 * PAGE
        buf_pool = ring_pool + rings * ring_obj
        nbufs = 2 + rings * n + body.nr_extra_bufs
        self.mem = bytearray(buf_pool + nbufs * 2048)
        region = R.Region.wrap(self.mem, 7, buf_pool, nbufs)
        nifp = np.ndarray((), L.IF_DTYPE, buffer=region.mem, offset=nifp_ofs)
        nifp["ni_name"] = name.encode()
        nifp["ni_tx_rings"] = nifp["ni_rx_rings"] = nq
        nifp["ni_host_tx_rings"] = nifp["ni_host_rx_rings"] = 1
        ring_ofs = np.ndarray(rings, "<i8", buffer=region.mem, offset=nifp_ofs + L.IF_HDR_SIZE)
        self.rings: dict[tuple[int, int], dict] = {}
        nxt = 2
        for d in (NR_TX, NR_RX):
            for r in range(nq + 1):
                k = d * (nq + 1) + r
                ofs = ring_pool + k * ring_obj + KRING_SIZE
                init_ring(region, ofs, n, d, r, np.arange(nxt, nxt + n, dtype=np.uint32))
                nxt += n
                if d == NR_TX and body.nr_flags & 0x2000 or d == NR_RX and body.nr_flags & 0x4000:
                    continue
                if r in bound:
                    ring_ofs[k] = ofs - nifp_ofs
                    hdr_ = np.ndarray((), L.RING_DTYPE, buffer=region.mem, offset=ofs)
                    slots = np.ndarray(n, L.SLOT_DTYPE, buffer=region.mem,
                                       offset=ofs + L.RING_HDR_SIZE)
                    self.rings[d, r] = {"hdr": hdr_, "slots": slots, "hwcur": 0,
                                        "hwtail": n - 1 if d == NR_TX else 0}
        extra = list(range(nxt, nxt + body.nr_extra_bufs))
        for a, b in zip(extra, [0, *extra][:len(extra)], strict=True):
            region.bufs[a, :4] = np.frombuffer(b.to_bytes(4, "little"), np.uint8)
        nifp["ni_bufs_head"] = extra[-1] if extra else 0
        self.bufs = region.bufs
        body.nr_offset, body.nr_memsize = nifp_ofs, len(self.mem)
        body.nr_tx_rings = body.nr_rx_rings = nq
        body.nr_host_tx_rings = body.nr_host_rx_rings = 1
        body.nr_tx_slots = body.nr_rx_slots = n
        body.nr_mem_id = 7

    def _txsync(self) -> None:
        n = self.slots
        for (d, r), tx in self.rings.items():
            if d != NR_TX:
                continue
            head = int(tx["hdr"]["head"])
            rx = self.rings.get((NR_RX, r))
            count = (head - tx["hwcur"]) % n
            if rx is not None:  # the wire loops back; without a bound RX ring frames are lost
                count = min(count, n - 1 - (rx["hwtail"] - rx["hwcur"]) % n)
                for k in range(count):  # a fake kernel may copy per packet
                    s, t = (tx["hwcur"] + k) % n, (rx["hwtail"] + k) % n
                    self.bufs[rx["slots"]["buf_idx"][t]] = self.bufs[tx["slots"]["buf_idx"][s]]
                    rx["slots"]["len"][t] = tx["slots"]["len"][s]
                rx["hwtail"] = (rx["hwtail"] + count) % n
            tx["hwcur"] = (tx["hwcur"] + count) % n
            self.wire += count
            tx["hdr"]["tail"] = tx["hwtail"] = (tx["hwcur"] - 1) % n

    def _rxsync(self) -> None:
        for (d, _), rx in self.rings.items():
            if d == NR_RX:
                rx["hwcur"] = int(rx["hdr"]["head"])
                rx["hdr"]["tail"] = rx["hwtail"]


def _open(kernel: FakeKernel, name: str, extra_bufs: int = 0, **kw: object):
    spec = parse(name)
    conf = {k: getattr(spec.conf(), k) for k in ("tx_slots", "rx_slots")}
    return NativeAdapter.open_kernel(spec, conf, extra_bufs, spec.flags, dict(kw),
                                     device=kernel)


def test_a_native_port_moves_frames_through_the_kernel() -> None:
    kernel = FakeKernel({"em0": 2})
    port = _open(kernel, "netmap:em0", extra_bufs=3)
    try:
        assert kernel.calls == [kernel.ctrl]
        assert [r.ringid for r in port.tx_rings] == [0, 1] == [r.ringid for r in port.rx_rings]
        assert port.info() == PortInfo("netmap", 2048, engine="netmap")
        assert port.mem_id == 7 and port.extra_bufs == 3 and len(port.extra_buffers()) == 3
        assert port.fileno() == 42
        frames = np.arange(5 * 60, dtype=np.uint8).reshape(5, 60)
        tx, rx = port.tx_rings[1], port.rx_rings[1]
        assert tx.send(frames) == 5
        assert rx.receive().count == 0
        port.txsync()
        assert rx.receive().count == 0  # the kernel publishes on rxsync, not before
        assert port.poll(POLLIN, 0) & POLLIN
        got = rx.receive()
        assert got.count == 5 and (got.to_array() == frames).all()
        assert port.rx_rings[0].receive().count == 0
        rx.release(got.count)
        port.rxsync()
        assert kernel.rings[NR_RX, 1]["hwcur"] == 5  # the release reached the kernel
        assert tx.space() == 63 and not tx.tx_pending()
    finally:
        port.close()
    assert kernel.closed == [42]
    with pytest.raises(NetmapError) as e:
        port.txsync()
    assert e.value.errno == errno.ENXIO


def test_poll_sleeps_on_the_descriptor() -> None:
    kernel = FakeKernel({"em0": 1})
    with _open(kernel, "netmap:em0") as port:
        port.spin_us = 0
        assert port.poll(POLLIN, 1) == 0
        assert kernel.polls and kernel.polls[0] & POLLIN
        syncs = [c for c in kernel.calls if c in (kernel.txsync, kernel.rxsync)]
        assert kernel.rxsync in syncs and kernel.txsync in syncs  # netmap's poll flushes TX


def test_the_kernels_ring_selection_and_flags_are_used() -> None:
    kernel = FakeKernel({"em0": 4})
    with _open(kernel, "netmap:em0-2/T") as port:
        assert [r.ringid for r in port.tx_rings] == [2] and port.rx_rings == []
        assert port.flags & NR_TX_RINGS_ONLY
    with _open(kernel, "netmap:em0^") as port:
        assert [r.ringid for r in port.tx_rings] == [4] == [r.ringid for r in port.rx_rings]


def test_the_core_never_writes_into_the_kernels_memory_before_a_ring() -> None:
    kernel = FakeKernel({"em0": 1})
    with _open(kernel, "netmap:em0") as port:
        ring = port.tx_rings[0]
        before = bytes(kernel.mem[ring.ofs - KRING_SIZE: ring.ofs])
        ring.kring.arm(12345)  # what a doorbell waiter would write
        ring.kring.hwcur = 9
        assert bytes(kernel.mem[ring.ofs - KRING_SIZE: ring.ofs]) == before


def test_a_refused_registration_closes_the_descriptor() -> None:
    kernel = FakeKernel({"em0": 1})
    with pytest.raises(NetmapError) as e:
        _open(kernel, "netmap:em9")
    assert e.value.errno == errno.ENXIO and "refused the registration" in str(e.value)
    assert kernel.closed == [42]


def test_what_native_ports_do_not_take_is_refused() -> None:
    kernel = FakeKernel({"em0": 1})
    with pytest.raises(NetmapError) as e:
        _open(kernel, "netmap:em0@extmem:file=/tmp/x")
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(TypeError, match="xdp_mode"):
        _open(kernel, "netmap:em0", xdp_mode="copy")
    with pytest.raises(ValueError, match="engine"):
        _open(kernel, "netmap:em0", engine="warp")
    assert kernel.calls == []


def test_another_engine_hands_the_open_to_the_nic_port_type(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr("pynetmap.register.open_port",
                        lambda cls, spec, *a: seen.append((cls.kind, spec.name)))
    _open(FakeKernel({"em0": 1}), "netmap:em0", engine="packet")
    monkeypatch.setenv("PYNETMAP_ENGINE", "xdp")
    _open(FakeKernel({"em0": 1}), "netmap:em0")
    assert seen == [("nic", "em0"), ("nic", "em0")]


def test_takes_interfaces_only_where_the_device_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pynetmap.native.adapter.available", lambda: True)
    assert NativeAdapter.takes(parse("netmap:em0"))
    assert not NativeAdapter.takes(parse("netmap:em0{1"))
    assert not NativeAdapter.takes(parse("vale0:a"))
    monkeypatch.setattr("pynetmap.native.adapter.available", lambda: False)
    assert not NativeAdapter.takes(parse("netmap:em0"))


def test_pkt_gen_runs_on_a_native_port(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    """pkt-gen, unchanged, through open() -> the core's kernel_register hook -> the kernel."""
    from pynetmap import adapters
    from pynetmap.apps import pktgen

    kernel = FakeKernel({"em0": 1}, slots=256)

    class Fake(NativeAdapter):
        @classmethod
        def takes(cls, spec: object) -> bool:
            return True

        @classmethod
        def open_kernel(cls, spec, conf, extra_bufs, flags, kw, device=None):  # type: ignore
            return super().open_kernel(spec, conf, extra_bufs, flags, kw, device=kernel)

    entry = f"{__name__}:Fake"
    monkeypatch.setattr(adapters, "ADAPTERS", [entry, *adapters.ADAPTERS])
    monkeypatch.setitem(adapters._loaded, entry, Fake)
    rc = pktgen.main(["-f", "tx", "-i", "netmap:em0/T", "-n", "3000", "-l", "60", "-w", "0"])
    out = capsys.readouterr().out
    assert rc == 0 and "Sent 3000 packets" in out, out
    assert kernel.wire == 3000
