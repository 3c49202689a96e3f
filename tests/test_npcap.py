"""The Windows layer on Linux, with Npcap and Windows replaced by fakes: send-queue records
read back by libpcap's own offline reader, the struct layouts (Win64 and LP64 agree on every
field declared here), the DLL loader's checks, Windows names as netmap names, and the Npcap
engine's syncs over a real pynetmap ring, and ``pynetmap.open("netmap:Ethernet_2")`` through
the NIC adapter with its OS flag set to Windows.  Nothing here has run on Windows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import sys
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from test_bpf_buffer import _build

import pynetmap
from pynetmap import NetmapError
from pynetmap.bsd import bpfbuf
from pynetmap.constants import NR_FORWARD, NS_FORWARD
from pynetmap.windows import interfaces as I
from pynetmap.windows import names as N
from pynetmap.windows import npcap as W
from pynetmap.windows.sendqueue import PcapSendQueue, SendQueueBuilder, frames_sent

# -- send queues ---------------------------------------------------------------------------


class _PktHdr(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
                ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


def _libpcap_read(path: str) -> list[bytes]:
    """Every packet of a pcap file, by libpcap's pcap_open_offline / pcap_next_ex."""
    name = "libpcap.so.0.8"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        found = ctypes.util.find_library("pcap")
        if not found:
            pytest.skip("libpcap is not installed (Debian: apt-get install libpcap0.8)")
        lib = ctypes.CDLL(found)
    lib.pcap_open_offline.restype = ctypes.c_void_p
    lib.pcap_open_offline.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.pcap_next_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    err = ctypes.create_string_buffer(256)
    p = lib.pcap_open_offline(path.encode(), err)
    assert p, err.value
    hdr = ctypes.POINTER(_PktHdr)()
    data = ctypes.POINTER(ctypes.c_ubyte)()
    out = []
    try:
        while True:
            rc = lib.pcap_next_ex(p, ctypes.byref(hdr), ctypes.byref(data))
            if rc == -2:
                return out
            assert rc == 1, rc  # -1 would be a malformed record
            assert hdr.contents.caplen == hdr.contents.len
            out.append(ctypes.string_at(data, hdr.contents.caplen))
    finally:
        lib.pcap_close(p)


def test_send_queue_records_are_pcap_records(tmp_path: Any) -> None:
    rng = np.random.default_rng(3)
    pool = rng.integers(0, 256, (64, 2048), np.uint8)
    idx = np.array([5, 2, 63, 9, 9, 40])
    lens = np.array([60, 1514, 14, 2048, 100, 61])
    b = SendQueueBuilder()
    records = b.records(pool, idx, lens)
    assert len(records) == int((lens + 16).sum())  # 16-byte headers, no padding
    q = b.queue(records)
    assert q.len == q.maxlen == len(records)
    assert ctypes.string_at(q.buffer, q.len) == records  # the queue is the records, not a copy
    path = tmp_path / "q.pcap"
    # a file header then the queue's buffer as it is: a capture libpcap reads
    hdr = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
    path.write_bytes(hdr + records)
    got = _libpcap_read(str(path))
    assert got == [pool[i, :n].tobytes() for i, n in zip(idx, lens, strict=True)]
    assert b.records(pool, idx[:0], lens[:0]) == b""


def test_frames_sent_counts_whole_records() -> None:
    lens = np.array([60, 100, 60])
    assert [frames_sent(lens, k) for k in (0, 75, 76, 191, 192, 268, 10**6)] == \
        [0, 0, 1, 1, 2, 3, 3]


def test_struct_layouts() -> None:
    assert ctypes.sizeof(PcapSendQueue) == 16 and PcapSendQueue.buffer.offset == 8
    assert (W.Packet.Buffer.offset, W.Packet.Length.offset,
            W.Packet.ulBytesReceived.offset) == (40, 48, 52)
    assert ctypes.sizeof(W.BpfProgram) == 16
    a = I.IpAdapterAddresses
    assert (a.IfIndex.offset, a.Next.offset, a.AdapterName.offset, a.Description.offset,
            a.FriendlyName.offset, a.PhysicalAddress.offset, a.PhysicalAddressLength.offset,
            a.Mtu.offset, a.OperStatus.offset) == (4, 8, 16, 64, 72, 80, 88, 96, 104)


# -- loading the DLLs ----------------------------------------------------------------------

class _FakeFn:
    def __init__(self, result: object = 0) -> None:
        self.result = result

    def __call__(self, *args: object) -> object:
        return self.result


class _FakeDll:
    def __init__(self, path: str, version: bytes) -> None:
        self.path = path
        self.pcap_lib_version = _FakeFn(version)

    def __getattr__(self, name: str) -> _FakeFn:
        fn = _FakeFn()
        setattr(self, name, fn)
        return fn


def test_the_dlls_load_by_absolute_path_packet_first() -> None:
    loaded: list[str] = []

    def loader(path: str) -> _FakeDll:
        loaded.append(path)
        return _FakeDll(path, b"Npcap version 1.87, based on libpcap version 1.10.5")

    n = W.Npcap(system_root="D:\\Win", loader=loader)
    assert [p.replace("/", "\\") for p in loaded] == [
        "D:\\Win\\System32\\Npcap\\Packet.dll", "D:\\Win\\System32\\Npcap\\wpcap.dll"]
    assert n.version.startswith("Npcap") and n.wpcap.pcap_sendqueue_transmit.restype is not None


def test_winpcap_or_no_npcap_is_refused_with_what_to_do() -> None:
    with pytest.raises(NetmapError) as e:
        W.Npcap(system_root="C:\\W", loader=lambda p: _FakeDll(p, b"WinPcap version 4.1.3"))
    assert e.value.errno == errno.ENOENT and "not Npcap" in str(e.value)
    assert "npcap.com" in str(e.value)

    def missing(path: str) -> None:
        raise OSError(126, "The specified module could not be found")

    with pytest.raises(NetmapError) as e:
        W.Npcap(system_root="C:\\W", loader=missing)
    assert "Npcap is not installed" in str(e.value)


# -- names -----------------------------------------------------------------------------------

G1 = "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}"
G2 = "{0B1E7A3C-1111-2222-3333-444455556666}"
G3 = "{AAAABBBB-CCCC-DDDD-EEEE-FFFF00001111}"
G4 = "{12345678-9ABC-DEF0-1234-56789ABCDEF0}"
DEVICES = [N.PcapDevice(f"\\Device\\NPF_{g}", d) for g, d in
           ((G1, "Intel(R) Ethernet"), (G2, "Wireless"), (G3, "Hyper-V"), (G4, "Disabled"))]
DEVICES.append(N.PcapDevice(N.LOOPBACK, "Adapter for loopback traffic capture"))
ADAPTERS = [
    N.Adapter(G1, "Ethernet 2", "Intel(R) Ethernet Connection", bytes.fromhex("00155d010203"),
              12),
    N.Adapter(G2, "Wi-Fi", "Intel(R) Wi-Fi 6", bytes.fromhex("a0b1c2d3e4f5"), 7, up=False),
    N.Adapter(G3, "Wi Fi", "Hyper-V Virtual Ethernet", bytes.fromhex("00155d000001"), 3),
]


def test_windows_names_become_netmap_names() -> None:
    table = N.interfaces(DEVICES, ADAPTERS)
    assert [i.netmap_name for i in table] == [
        "Ethernet_2", "Wi_Fi_7", "Wi_Fi", "123456789abcdef0123456789abcdef0", "NPF_Loopback"]
    assert table[0].guid == "3f2504e04f891" "1d39a0c0305e82c3301"
    assert table[0].mac == bytes.fromhex("00155d010203") and table[0].ifindex == 12
    assert not table[1].up and table[1].description == "Intel(R) Wi-Fi 6"
    for itf in table:  # every netmap name parses as a whole port name, rings and flags too
        spec = pynetmap.parse(f"netmap:{itf.netmap_name}-0/T")
        assert spec.name == itf.netmap_name and spec.ringid == 0


def test_lookup_by_netmap_name_guid_or_friendly_name() -> None:
    table = N.interfaces(DEVICES, ADAPTERS)
    assert N.lookup("ethernet_2", table).device == f"\\Device\\NPF_{G1}"
    assert N.lookup("3F2504E04F8911D39A0C0305E82C3301", table).friendly == "Ethernet 2"
    assert N.lookup("Ethernet 2", table).netmap_name == "Ethernet_2"
    assert N.lookup("Wi_Fi_7", table).guid == N.guid_hex(G2)
    with pytest.raises(NetmapError) as e:
        N.lookup("eth0", table)
    assert e.value.errno == errno.ENXIO and "Ethernet_2" in str(e.value)


def test_safe_name_and_guid_hex() -> None:
    assert N.safe_name(" vEthernet (Default Switch) ") == "vEthernet_(Default_Switch)"
    assert N.safe_name("a-b*c^d/e@f{g}h") == "a_b_c_d_e_f_g_h"
    assert N.guid_hex(f"\\Device\\NPF_{G1}") == N.guid_hex(G1) == \
        "3f2504e04f8911d39a0c0305e82c3301"


def test_interfaces_command_lists_netmap_names(capsys: pytest.CaptureFixture) -> None:
    assert I.main([]) == 0
    lines = capsys.readouterr().out.split()
    assert lines and all(line.startswith("netmap:") for line in lines)
    if sys.platform.startswith("linux"):
        assert "netmap:lo" in lines  # what libpcap lists: the loopback, by name


def test_windows_rows() -> None:
    r = I.rows(N.interfaces(DEVICES, ADAPTERS))[0]
    assert r["netmap"] == "netmap:Ethernet_2" and r["mac"] == "00:15:5d:01:02:03"


# -- the engine's syncs with a fake Npcap ----------------------------------------------------

class FakeNpcap(W.Npcap):
    """Npcap without DLLs: transmit parses the queue, receive hands out prepared reads."""

    def __init__(self, accept: int | None = None) -> None:
        self.version = "Npcap 1.87 (fake)"
        self.sent: list[bytes] = []
        self.reads: list[bytes] = []
        self.accept = accept  # bytes a transmit takes (None: all)
        self.closed: list[int] = []
        self.send_to_rx_on: list[int] = []
        self.waits: list[tuple[list[int], float]] = []  # wait_events calls (the adapter's)
        self.on_wait: Callable[[], None] = lambda: None  # what happens while one sleeps

    def open(self, device: str, snaplen: int, buffer_bytes: int,
             not_from: bytes | None) -> int:
        self.opened = (device, snaplen, not_from)
        return 7

    def send_to_rx(self, p: int, device: str) -> None:
        self.send_to_rx_on.append(p)

    def event(self, p: int) -> int:
        return 99

    def reader(self, p: int, buf: np.ndarray, size: int) -> Any:
        return buf, size

    def receive(self, p: int, pkt: Any) -> int:
        buf, size = pkt
        data = self.reads.pop(0) if self.reads else b""
        assert len(data) <= size
        buf[: len(data)] = np.frombuffer(data, np.uint8)
        return len(data)

    def transmit(self, p: int, queue: Any) -> int:
        n = queue.len if self.accept is None else min(self.accept, queue.len)
        raw = ctypes.string_at(queue.buffer, queue.len)
        at = 0
        while at + 16 <= n:
            cap = int.from_bytes(raw[at + 8: at + 12], "little")
            if at + 16 + cap > n:
                break
            self.sent.append(raw[at + 16: at + 16 + cap])
            at += 16 + cap
        return n

    def error(self, p: int) -> str:
        return "the adapter is gone"

    def close(self, p: int) -> None:
        self.closed.append(p)


ITF = N.Interface("Ethernet_2", f"\\Device\\NPF_{G1}", N.guid_hex(G1), "Ethernet 2", "",
                  bytes.fromhex("00155d010203"), 12, True, 1500)


@pytest.fixture
def ring_port():
    """A pynetmap port whose rings the Npcap queue drives (its pipe peer is never opened)."""
    with pynetmap.open(f"netmap:npq{uuid.uuid4().hex[:6]}{{0", slots=64) as port:
        yield port


def _attach(port: Any, fake: FakeNpcap, **kw: Any) -> W.NpcapQueue:
    tx, rx = port.tx_rings[0], port.rx_rings[0]
    q = W.NpcapQueue(fake, ITF, port.region, tx, rx, **kw)
    tx.kring.sync = q.txsync
    rx.kring.sync = q.rxsync
    return q


def test_a_tx_batch_is_one_transmit(ring_port: Any) -> None:
    fake = FakeNpcap()
    q = _attach(ring_port, fake)
    assert fake.opened == (ITF.device, 2048, ITF.mac)  # our own frames filtered out by MAC
    frames = [bytes([i]) * (60 + i) for i in range(10)]
    tx = ring_port.tx_rings[0]
    assert tx.send(frames) == 10
    ring_port.txsync()
    assert fake.sent == frames
    assert tx.space() == 63  # sent is reclaimed at once
    q.close()
    assert fake.closed == [7]


def test_a_partial_transmit_keeps_the_rest_and_an_empty_one_raises(ring_port: Any) -> None:
    fake = FakeNpcap(accept=2 * (16 + 60) + 5)
    _attach(ring_port, fake)
    tx = ring_port.tx_rings[0]
    tx.send([b"a" * 60] * 4)
    ring_port.txsync()
    assert len(fake.sent) == 2 and tx.kring.hwcur == 2 and tx.tx_pending()
    fake.accept = 0
    with pytest.raises(NetmapError, match="the adapter is gone"):
        ring_port.txsync()


def test_rx_drains_a_read_in_numpy_and_keeps_what_does_not_fit(ring_port: Any) -> None:
    fake = FakeNpcap()
    _attach(ring_port, fake)
    pkts = [bytes([i % 256]) * (60 + i % 50) for i in range(100)]
    buf, _ = _build(bpfbuf.NPCAP, pkts)
    fake.reads = [buf.tobytes()]
    rx = ring_port.rx_rings[0]
    ring_port.rxsync()
    got = rx.receive()
    assert got.count == 63 and got.frames() == pkts[:63]
    rx.release(got.count)
    ring_port.rxsync()  # the 37 left from that read come first, without another read
    got = rx.receive()
    assert got.count == 37 and got.frames() == pkts[63:]
    assert fake.reads == []


def test_what_npcap_cannot_do_is_refused(ring_port: Any) -> None:
    fake = FakeNpcap()
    with pytest.raises(NetmapError) as e:
        W.NpcapQueue(fake, ITF, ring_port.region, None, ring_port.rx_rings[0], host=True)
    assert e.value.errno == errno.EOPNOTSUPP and "host TX ring alone" in str(e.value)
    q = W.NpcapQueue(fake, ITF, ring_port.region, ring_port.tx_rings[0], None, host=True)
    assert fake.send_to_rx_on == [7] and fake.opened[2] is None
    with pytest.raises(NetmapError, match="no selectable descriptor"):
        q.fileno()
    _attach(ring_port, fake)
    ring_port.rx_rings[0].flags = NR_FORWARD
    with pytest.raises(NetmapError, match="BlockRxAdapters"):
        ring_port.rxsync()


# -- the NIC adapter on Windows: pynetmap.open() with the engine faked -----------------------

@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> FakeNpcap:
    """``linux/nic.py`` as on Windows: its OS flags patched, Npcap and the adapter list faked.

    ``wait_events`` (WaitForMultipleObjects) is faked too: each call is recorded in
    ``fake.waits`` and runs ``fake.on_wait`` (an arrival, in the test that waits).
    """
    from pynetmap.linux import nic

    fake = FakeNpcap()

    def wait_events(handles: list[int], timeout_s: float) -> None:
        fake.waits.append((handles, timeout_s))
        fake.on_wait()

    def pcap_devices(npcap: Any) -> list[N.PcapDevice]:
        assert npcap is fake  # the table comes from the Npcap the queues use
        return DEVICES

    monkeypatch.setattr(nic, "WINDOWS", True)
    monkeypatch.setattr(nic, "LINUX", False)
    monkeypatch.setattr(W, "Npcap", lambda: fake)
    monkeypatch.setattr(W, "wait_events", wait_events)
    monkeypatch.setattr(I, "pcap_devices", pcap_devices)
    monkeypatch.setattr(I, "adapters", lambda: ADAPTERS)
    return fake


def test_open_on_windows_sends_and_receives_through_npcap(windows: FakeNpcap) -> None:
    fake = windows
    frames = [bytes([i]) * (60 + i) for i in range(10)]
    pkts = [bytes([200 + i % 50]) * (64 + i) for i in range(100)]
    with pynetmap.open("netmap:Ethernet_2", slots=64) as port:
        info = port.info()
        assert (info.engine, info.mode, info.mac, info.mtu) == (
            "npcap", "copy", "00:15:5d:01:02:03", 1500)
        assert fake.opened == (ITF.device, info.max_frame, ITF.mac)
        tx, rx = port.tx_rings[0], port.rx_rings[0]
        assert tx.send(frames) == 10
        assert port.poll(pynetmap.POLLOUT, 0) & pynetmap.POLLOUT
        assert fake.sent == frames and tx.space() == 63
        # nothing read yet: poll sleeps on the capture's event; the packets "arrive" then
        fake.on_wait = lambda: fake.reads.append(
            _build(bpfbuf.NPCAP, pkts)[0].tobytes())
        assert port.poll(pynetmap.POLLIN, 5000) & pynetmap.POLLIN
        [(handles, timeout_s)] = fake.waits
        assert handles == [99] and 0 < timeout_s <= 5  # the RX capture's event, slept on once
        got = rx.receive()
        assert got.count == 63 and got.frames() == pkts[:63]
        # 37 read from the driver wait outside the ring: no sleep on the event for them
        n_waits = len(fake.waits)
        port.adapter.wait(5.0, False)
        assert len(fake.waits) == n_waits
        rx.release(got.count)
        assert port.poll(pynetmap.POLLIN, 0) & pynetmap.POLLIN
        got = rx.receive()
        assert got.count == 37 and got.frames() == pkts[63:]
        with pytest.raises(NetmapError) as e:
            port.fileno()
        assert e.value.errno == errno.EOPNOTSUPP and "poll()" in str(e.value)
    assert fake.closed == [7]


def test_windows_names_guid_host_tx_ring_and_refusals(windows: FakeNpcap) -> None:
    fake = windows
    # the GUID names the same interface: its record and region, its queue taken
    with pynetmap.open(f"netmap:{N.guid_hex(G1)}/T") as a, \
            pynetmap.open("netmap:ethernet_2/R") as b:
        assert a.adapter.ifname == b.adapter.ifname == "Ethernet_2"
        assert a.region.mem_id == b.region.mem_id
        with pytest.raises(NetmapError, match="already bound"):
            pynetmap.open("netmap:Ethernet 2/T")
    fake.closed.clear()
    # the host TX ring: a capture in send-to-RX mode, no RX ring behind it
    with pynetmap.open("netmap:Ethernet_2^/T") as host:
        assert fake.send_to_rx_on == [7] and fake.opened[2] is None
        assert host.tx_rings[0].send([b"h" * 60]) == 1
        host.txsync()
        assert fake.sent == [b"h" * 60]
        assert host.poll(pynetmap.POLLIN, 20) == 0 and fake.waits == []  # no RX event
    errors = []
    for name, kw in (("netmap:Ethernet_2^", {}), ("netmap:Ethernet_2", {"engine": "xdp"}),
                     ("netmap:Wi_Fi_7", {}), ("netmap:eth0", {})):
        with pytest.raises(NetmapError) as e:
            pynetmap.open(name, **kw).close()
        errors.append((e.value.errno, str(e.value)))
    assert errors[0][0] == errno.EOPNOTSUPP and "host TX ring alone" in errors[0][1]
    assert errors[1] == (errno.EOPNOTSUPP, "[Errno 95] netmap:Ethernet_2: the xdp engine is "
                         "not available on Windows; NIC ports here use engine='npcap' (Npcap)")
    assert errors[2] == (errno.ENETDOWN, "[Errno 100] interface Wi_Fi_7 (Wi-Fi) is down")
    assert errors[3][0] == errno.ENXIO and "Ethernet_2" in errors[3][1]
    with pynetmap.open("netmap:Ethernet_2", engine="npcap") as port:  # the refusal freed it
        rx = port.rx_rings[0]
        fake.reads = [_build(bpfbuf.NPCAP, [b"f" * 60])[0].tobytes()]
        port.rxsync()
        rx.flags = NR_FORWARD  # a released slot marked to forward: the adapter refuses
        rx.slot_flags[rx.cur] |= NS_FORWARD
        rx.release(rx.receive().count)
        with pytest.raises(NetmapError, match="BlockRxAdapters"):
            port.rxsync()


def test_mtu_too_large_on_windows_says_the_netsh_command(
        windows: FakeNpcap, monkeypatch: pytest.MonkeyPatch) -> None:
    jumbo = [N.Adapter(G1, "Ethernet 2", "Intel", bytes(6), 12, mtu=9000)]
    monkeypatch.setattr(I, "adapters", lambda: jumbo)
    with pytest.raises(NetmapError) as e:
        pynetmap.open("netmap:Ethernet_2").close()
    assert e.value.errno == errno.EINVAL
    assert str(e.value).endswith('lower it: netsh interface ipv4 set subinterface '
                                 '"Ethernet 2" mtu=1778')


def test_the_npcap_engine_is_refused_outside_windows() -> None:
    with pytest.raises(NetmapError) as e:
        pynetmap.open("netmap:nosuch0", engine="npcap")
    assert str(e.value) == ("[Errno 95] netmap:nosuch0: the npcap engine needs Windows "
                            "(Npcap); leave engine='auto' to get this OS's")


def test_the_modules_windows_loads_import_without_posix_modules() -> None:
    """What ``open("netmap:NAME")`` imports on Windows, imported with fcntl/termios missing.

    The core is imported first (its OS layer picks the POSIX module on this machine);
    then the NIC adapter, the shared TX check, the libpcap declarations and the Windows
    modules must import with no POSIX-only module at hand.  AF_XDP's queue must not.
    """
    code = """if True:
        import sys
        import pynetmap, pynetmap.port, pynetmap.register
        for m in ("fcntl", "termios", "resource"):
            sys.modules[m] = None
        for m in ("pynetmap.linux.nic", "pynetmap.nic_tx", "pynetmap.libpcap",
                  "pynetmap.pcap_queue", "pynetmap.windows.npcap",
                  "pynetmap.windows.interfaces"):
            __import__(m)
        try:
            import pynetmap.linux.xdp_queue
        except ImportError as e:
            print("xdp_queue:", e)
    """
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "xdp_queue: import of fcntl halted; None in sys.modules\n"


def test_libpcap_refuses_to_load_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    from pynetmap import libpcap

    monkeypatch.setattr(libpcap.sys, "platform", "win32")
    with pytest.raises(NetmapError) as e:
        libpcap.load("wpcap.dll")
    assert e.value.errno == errno.EOPNOTSUPP and "engine='npcap'" in str(e.value)
