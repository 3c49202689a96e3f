"""AF_PACKET TPACKET_V2 rings (the fallback NIC path) and interface facts, on a veth pair.

Everything runs on a veth pair between two namespaces the fixture creates and deletes
(tests/netns.py).  Every loop is bounded in frames and seconds.  Tests skip, saying
why, without CAP_NET_ADMIN.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator

import netns
import numpy as np
import pytest

from pynetmap.errors import NetmapError
from pynetmap.linux import ifinfo, shmring, tpacket

RING = 64  # frames per ring: small, so a test of a few hundred frames wraps it
K = 300
BURST = 32
TIMEOUT = 5.0


@pytest.fixture(params=["unfenced", "fenced"])
def ordering(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the data path as on x86 (no fence) and with the fence weakly ordered CPUs use."""
    monkeypatch.setattr(shmring, "NEEDED", request.param == "fenced")
    return request.param


@pytest.fixture
def engine(veth: netns.VethPair, ordering: str) -> Iterator[tpacket.PacketSocket]:
    """A packet socket with RX and TX rings on the veth end in ns A."""
    with netns.enter(veth.ns_a):
        ps = tpacket.PacketSocket(veth.if_a, rx_frames=RING, tx_frames=RING)
    with ps:
        yield ps


def _as_rows(frames: list[bytes], width: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Test helper: frames as rows of a 2-D buffer, and their lengths."""
    rows = np.zeros((len(frames), width), np.uint8)
    for i, f in enumerate(frames):
        rows[i, :len(f)] = np.frombuffer(f, np.uint8)
    return rows, np.array([len(f) for f in frames], np.uint32)


def test_ring_geometry(engine: tpacket.PacketSocket) -> None:
    assert engine.rx is not None and engine.tx is not None
    assert engine.rx.size == engine.tx.size == RING
    assert engine.rx.frames.shape == (RING, 2048)
    assert engine.rx.status.strides == (2048,)
    assert (engine.rx.status == tpacket.TP_STATUS_KERNEL).all()
    assert engine.tx.free(RING) == RING and engine.tx.max_len == 2048 - 32


def test_tpacket_rx(engine: tpacket.PacketSocket, veth: netns.VethPair) -> None:
    """K frames sent from ns B are found in the RX ring in order, byte for byte."""
    rx = engine.rx
    assert rx is not None
    frames = netns.make_frames(K, veth.mac_a, veth.mac_b, seed=4, sizes=(60, 1514))
    dst = np.zeros((K, 2048), np.uint8)
    lens = np.zeros(K, np.uint32)
    got = 0
    deadline = time.monotonic() + TIMEOUT
    with netns.raw_socket(veth.ns_b, veth.if_b) as tx:
        for i in range(0, K, BURST):
            burst = frames[i:i + BURST]
            assert netns.send_frames(tx, burst) == len(burst)
            want = got + len(burst)
            while got < want and time.monotonic() < deadline:
                n = rx.ready(RING)
                if not n:
                    engine.wait(0.05)
                    continue
                idx, snap, mac = rx.peek(n)
                assert (idx == (rx.cursor + np.arange(n)) % RING).all()
                assert (mac == 66).all() and (snap == rx.length[idx]).all()
                lens[got:got + n] = rx.copy_to(dst, n, rows=np.arange(got, got + n))
                rx.release(n)
                got += n
    time.sleep(0.2)
    assert rx.ready(RING) == 0, "frames nobody sent"
    assert got == K
    assert [dst[i, :lens[i]].tobytes() for i in range(K)] == frames
    assert engine.statistics() == {"packets": K, "drops": 0}


def test_tpacket_tx(engine: tpacket.PacketSocket, veth: netns.VethPair) -> None:
    """K frames queued in the TX ring arrive at the peer, counted by a socket and ip -s."""
    tx = engine.tx
    assert tx is not None
    frames = netns.make_frames(K, veth.mac_b, veth.mac_a, seed=5)
    src, lens = _as_rows(frames)
    before = veth.link_stats("b")
    sent = 0
    deadline = time.monotonic() + TIMEOUT
    with netns.raw_socket(veth.ns_b, veth.if_b) as rx:
        while sent < K and time.monotonic() < deadline:
            n = tx.produce(src[sent:], lens[sent:])
            sent += n
            engine.kick()
            if not n:
                time.sleep(0.001)
        while tx.in_flight() and time.monotonic() < deadline:
            engine.kick()
            time.sleep(0.001)
        got = netns.recv_frames(rx, K, timeout=TIMEOUT)
    assert sent == K and tx.in_flight() == 0
    assert got == frames
    assert veth.link_stats("b")["rx_packets"] - before["rx_packets"] == K


def test_tpacket_tx_gather_by_rows(engine: tpacket.PacketSocket, veth: netns.VethPair) -> None:
    """produce(rows=...) gathers frames from a buffer pool by index, as netmap slots do."""
    tx = engine.tx
    assert tx is not None
    frames = netns.make_frames(10, veth.mac_b, veth.mac_a, seed=6)
    pool, lens = _as_rows(frames)
    order = np.array([9, 3, 3, 0, 7])
    with netns.raw_socket(veth.ns_b, veth.if_b) as rx:
        assert tx.produce(pool, lens[order], rows=order) == len(order)
        engine.kick()
        got = netns.recv_frames(rx, len(order), timeout=TIMEOUT)
    assert got == [frames[i] for i in order]


def test_tpacket_tx_rejects_bad_lengths(engine: tpacket.PacketSocket) -> None:
    tx = engine.tx
    assert tx is not None
    src = np.zeros((4, 2048), np.uint8)
    for bad in (np.array([60, 13, 60, 60]), np.array([60, 60, 2048 - 31, 60])):
        with pytest.raises(ValueError):
            tx.produce(src, bad)
    assert tx.cursor == 0 and tx.free(RING) == RING and tx.in_flight() == 0


def test_tpacket_fanout(veth: netns.VethPair) -> None:
    with netns.enter(veth.ns_a):
        ps = tpacket.PacketSocket(veth.if_a, rx_frames=RING, tx_frames=0,
                                  fanout=(0x4242, tpacket.PACKET_FANOUT_HASH))
    frames = netns.make_frames(8, veth.mac_a, veth.mac_b, seed=7)
    with ps, netns.raw_socket(veth.ns_b, veth.if_b) as tx:
        assert ps.tx is None and ps.rx is not None
        netns.send_frames(tx, frames)
        deadline = time.monotonic() + TIMEOUT
        while ps.rx.ready(RING) < len(frames) and time.monotonic() < deadline:
            ps.wait(0.05)
        assert ps.rx.ready(RING) == len(frames)


def test_interface_facts_and_errors(veth: netns.VethPair) -> None:
    with netns.enter(veth.ns_a):
        assert ifinfo.if_index(veth.if_a) == veth.index_a
        assert ifinfo.if_name(veth.index_a) == veth.if_a
        assert ifinfo.mtu(veth.if_a) == 1500
        assert ifinfo.mac(veth.if_a) == veth.mac_a
        assert ifinfo.is_up(veth.if_a)
        assert ifinfo.queue_counts(veth.if_a) == (1, 1)
        assert ifinfo.require_up(veth.if_a) == veth.index_a
        with pytest.raises(NetmapError) as e:
            ifinfo.mtu("pnm-nope")
        assert e.value.errno == errno.ENXIO and str(e.value).endswith("'pnm-nope'")
        with pytest.raises(NetmapError) as e:
            tpacket.PacketSocket("pnm-nope")
        assert e.value.errno == errno.ENXIO
    netns.run(veth.ns_a, "ip", "link", "set", veth.if_a, "down")
    with netns.enter(veth.ns_a):
        assert not ifinfo.is_up(veth.if_a)
        with pytest.raises(NetmapError) as e:
            tpacket.PacketSocket(veth.if_a)
    assert e.value.errno == errno.ENETDOWN
    assert f"interface {veth.if_a} is down (ip link set {veth.if_a} up)" in str(e.value)


def test_queue_counts_of_multiqueue_veth(_netns_session: None) -> None:
    with netns.veth_pair(queues=4) as pair, netns.enter(pair.ns_a):
        assert ifinfo.queue_counts(pair.if_a) == (4, 4)


def test_capability_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ifinfo, "has_capability", lambda cap: False)
    with pytest.raises(NetmapError) as e:
        ifinfo.require_capability(ifinfo.CAP_NET_ADMIN, what="opening netmap:eth0")
    assert e.value.errno == errno.EPERM
    assert str(e.value).endswith("opening netmap:eth0 needs CAP_NET_ADMIN "
                                 "(run as root or grant it)")


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def test_netns_helpers(veth: netns.VethPair) -> None:
    """The namespace helpers: call() answers or is killed in time; stale runs are swept."""
    assert netns.call(veth.ns_b, ifinfo.if_index, veth.if_b) == veth.index_b
    with pytest.raises(NetmapError):
        netns.call(veth.ns_b, ifinfo.if_index, veth.if_a)  # the other end is not there
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        netns.call(veth.ns_b, _sleep, 30, timeout=0.5)
    assert time.monotonic() - t0 < 5
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{netns.PREFIX}{dead.pid}-0-a"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        assert name in netns.sweep_stale()
        assert name not in os.listdir(netns.NETNS_DIR)
        assert veth.ns_a in os.listdir(netns.NETNS_DIR)  # a live run's are kept
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
