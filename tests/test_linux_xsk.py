"""AF_XDP: the XDP program, its attachment, and XSK RX/TX on a veth pair.

Everything runs on a veth pair between two namespaces the fixture creates and deletes
(tests/netns.py); no frame touches any other interface.  Every loop is bounded in
frames and seconds.  Tests skip, saying why, without CAP_NET_ADMIN/CAP_BPF.
"""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import netns
import numpy as np
import pytest

from pynetmap.errors import NetmapError
from pynetmap.linux import bpf, shmring, xdp_attach, xsk

pytest.importorskip("pyroute2")  # xdp_attach needs it (imported lazily there)

FRAME = xsk.FRAME_SIZE
NFRAMES = 512  # UMEM chunks
RING = 64  # every ring: small, so that a test of a few hundred frames wraps them all
K = 300  # frames per test
BURST = 32
TIMEOUT = 5.0


@pytest.fixture(params=["unfenced", "fenced"])
def ordering(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the data path as on x86 (no fence) and with the fence weakly ordered CPUs use."""
    monkeypatch.setattr(shmring, "NEEDED", request.param == "fenced")
    return request.param


@pytest.fixture
def bpf_ok(_netns_session: None) -> None:
    netns.require_privileges(bpf=True)


@dataclass
class XdpEnv:
    pair: netns.VethPair
    prog: bpf.XskProgram
    sock: xsk.XskSocket
    umem: np.ndarray  # (NFRAMES, FRAME) uint8 over the UMEM
    mode: str  # the XDP attach mode obtained


@pytest.fixture
def xdp_env(veth: netns.VethPair, bpf_ok: None, ordering: str) -> Iterator[XdpEnv]:
    """Program attached to the veth end in ns A, an XSK on queue 0 registered in its map."""
    area = mmap.mmap(-1, NFRAMES * FRAME)
    with netns.enter(veth.ns_a):
        prog = bpf.XskProgram()
        try:
            mode = xdp_attach.attach(veth.index_a, prog.fd)
            sock = xsk.XskSocket(veth.if_a, 0, area, rx_size=RING, tx_size=RING,
                                 fill_size=RING, comp_size=RING)
            prog.set(0, sock.fileno())
        except BaseException:
            prog.close()
            raise
    umem = np.frombuffer(area, np.uint8).reshape(NFRAMES, FRAME)
    try:
        yield XdpEnv(veth, prog, sock, umem, mode)
    finally:
        sock.close()
        with netns.enter(veth.ns_a):
            xdp_attach.detach(veth.index_a, prog.id)
        prog.close()


def _load(umem: np.ndarray, chunks: np.ndarray, frames: list[bytes]) -> np.ndarray:
    """Test helper: write frames at the start of the given chunks; their lengths."""
    lens = np.array([len(f) for f in frames], np.uint32)
    for c, f in zip(chunks, frames, strict=True):
        umem[c, :len(f)] = np.frombuffer(f, np.uint8)
    return lens


def _receive(env: XdpEnv, count: int, deadline: float) -> list[bytes]:
    """Drain up to ``count`` frames from the XSK before ``deadline``, refilling as we go."""
    s, flat = env.sock, env.umem.reshape(-1)
    got: list[bytes] = []
    while len(got) < count and time.monotonic() < deadline:
        if not s.rx.available():
            s.wakeup_rx()
            s.wait(0.05)
            continue
        addr, length = s.rx.peek(RING)
        got += [flat[a:a + n].tobytes() for a, n in zip(addr, length, strict=True)]
        assert (addr % FRAME == s.rx_offset).all()
        s.rx.release(len(addr))
        assert s.fill.produce(addr - addr % FRAME) == len(addr)
    return got


def test_xdp_program_and_xsk_modes(xdp_env: XdpEnv) -> None:
    info = bpf.prog_info(xdp_env.prog.fd)
    assert info.name == bpf.PROG_NAME and info.type == bpf.BPF_PROG_TYPE_XDP
    assert bpf.map_info(xdp_env.prog.map_fd).name == f"{bpf.MAP_PREFIX}{os.getpid()}"
    with netns.enter(xdp_env.pair.ns_a):
        attached = xdp_attach.query(xdp_env.pair.index_a)
    assert attached is not None and attached.prog_id == xdp_env.prog.id
    assert attached.ours and not attached.stale and attached.owner_pid == os.getpid()
    assert xdp_env.mode == attached.mode == "drv"  # veth has a native XDP hook
    assert xdp_env.sock.mode in ("copy", "zerocopy")
    assert xdp_env.sock.mode == "copy"  # veth has no zero-copy AF_XDP support


def test_xsk_rx(xdp_env: XdpEnv) -> None:
    """K frames sent from ns B arrive at the XSK, byte for byte, and nothing else does."""
    pair, s = xdp_env.pair, xdp_env.sock
    assert s.fill.produce(np.arange(RING, dtype=np.uint64) * FRAME) == RING
    frames = netns.make_frames(K, pair.mac_a, pair.mac_b, seed=1, sizes=(60, 1514))
    tx = netns.raw_socket(pair.ns_b, pair.if_b)
    got: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    with tx:
        for i in range(0, K, BURST):  # bursts no larger than the rings, drained in between
            burst = frames[i:i + BURST]
            assert netns.send_frames(tx, burst) == len(burst)
            got += _receive(xdp_env, len(burst), deadline)
    time.sleep(0.2)
    assert s.rx.available() == 0, "frames nobody sent"
    assert got == frames
    st = s.statistics()
    assert st["rx_dropped"] == st["rx_invalid_descs"] == st["rx_ring_full"] == 0


def test_xsk_tx(xdp_env: XdpEnv) -> None:
    """K frames sent from the XSK arrive at the peer, counted by a raw socket and ip -s."""
    pair, s, umem = xdp_env.pair, xdp_env.sock, xdp_env.umem
    frames = netns.make_frames(K, pair.mac_b, pair.mac_a, seed=2)
    rx = netns.raw_socket(pair.ns_b, pair.if_b)
    before = pair.link_stats("b")
    free = list(range(NFRAMES))  # test bookkeeping of UMEM chunks (not a data path)
    sent = completed = 0
    deadline = time.monotonic() + TIMEOUT
    with rx:
        while completed < K and time.monotonic() < deadline:
            n = min(s.tx.free(), K - sent, len(free))
            if n:
                chunks = np.array(free[:n])
                del free[:n]
                lens = _load(umem, chunks, frames[sent:sent + n])
                assert s.tx.produce(chunks.astype(np.uint64) * FRAME, lens) == n
                sent += n
            s.kick()
            done = s.comp.consume(RING)
            completed += len(done)
            free += (done // FRAME).tolist()
            if not n and not len(done):
                time.sleep(0.001)
        got = netns.recv_frames(rx, K, timeout=TIMEOUT)
    assert completed == sent == K
    assert got == frames
    after = pair.link_stats("b")
    assert after["rx_packets"] - before["rx_packets"] == K
    assert s.statistics()["tx_invalid_descs"] == 0


def test_xsk_errors(veth: netns.VethPair) -> None:
    area = mmap.mmap(-1, 64 * FRAME)
    with netns.enter(veth.ns_a):
        with pytest.raises(NetmapError) as e:
            xsk.XskSocket(veth.if_a, 0, area, mode="zerocopy")
        assert e.value.errno == errno.EOPNOTSUPP and "zero-copy" in str(e.value)
        with xsk.XskSocket(veth.if_a, 0, area, mode="copy") as first:
            assert first.mode == "copy"
            with pytest.raises(NetmapError) as e:
                xsk.XskSocket(veth.if_a, 0, mmap.mmap(-1, 64 * FRAME))
            assert e.value.errno == errno.EBUSY and "already bound" in str(e.value)
            with pytest.raises(ValueError):
                xsk.XskSocket(veth.if_a, 0, first)  # sharing a UMEM on the same queue
        with pytest.raises(NetmapError) as e:
            xsk.XskSocket(veth.if_a, 7, area)  # this veth has a single queue
        assert e.value.errno == errno.EINVAL and "queue" in str(e.value)
        with pytest.raises(NetmapError) as e:
            xsk.XskSocket("pnm-nope", 0, area)
        assert e.value.errno == errno.ENXIO and "no such interface 'pnm-nope'" in str(e.value)
        with memoryview(area)[100:100 + 8 * FRAME] as unaligned:
            with pytest.raises(NetmapError) as e:
                xsk.XskSocket(veth.if_a, 0, unaligned)
            assert e.value.errno == errno.EINVAL and "page-aligned" in str(e.value)
            del e  # its traceback refers to the memoryview
        with pytest.raises(ValueError):
            xsk.XskSocket(veth.if_a, 0, area, rx_size=100)
        netns.run(veth.ns_a, "ip", "link", "set", veth.if_a, "down")
        with pytest.raises(NetmapError) as e:
            xsk.XskSocket(veth.index_a, 0, area)
        assert e.value.errno == errno.ENETDOWN and "ip link set pnm0 up" in str(e.value)
        netns.run(veth.ns_a, "ip", "link", "set", veth.if_a, "up")
        # the failed attempts left nothing bound: the queue is free again; and the UMEM
        # may also be given as (address, length)
        view = np.frombuffer(area, np.uint8)
        with xsk.XskSocket(veth.if_a, 0, (view.ctypes.data, view.nbytes)) as s:
            assert s.umem.ctypes.data == view.ctypes.data and s.umem.nbytes == view.nbytes
        del view
    area.close()


def test_detach_leaves_no_program(veth: netns.VethPair, bpf_ok: None) -> None:
    with netns.enter(veth.ns_a), bpf.XskProgram() as prog:
        assert xdp_attach.query(veth.index_a) is None
        assert xdp_attach.attach(veth.index_a, prog.fd, "skb") == "skb"
        assert xdp_attach.attach(veth.index_a, prog.fd) == "skb"  # already there: no-op
        with pytest.raises(NetmapError) as e:
            xdp_attach.detach(veth.index_a, prog.id + 100000)  # not ours: left alone
        assert e.value.errno == errno.EBUSY
        assert xdp_attach.query(veth.index_a).prog_id == prog.id
        xdp_attach.detach(veth.index_a, prog.id)
        assert xdp_attach.query(veth.index_a) is None
        xdp_attach.detach(veth.index_a)  # nothing attached: fine
    out = subprocess.run(["ip", "-n", veth.ns_a, "link", "show", veth.if_a],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    assert "xdp" not in out


@pytest.mark.parametrize("fallback", [bpf.XDP_PASS, bpf.XDP_DROP])
def test_fallback_for_queues_without_socket(veth: netns.VethPair, bpf_ok: None,
                                            fallback: int) -> None:
    """With no XSK in the map the program passes frames to the stack, or drops them."""
    frames = netns.make_frames(16, veth.mac_a, veth.mac_b, seed=8)
    with netns.enter(veth.ns_a), bpf.XskProgram(fallback=fallback) as prog:
        xdp_attach.attach(veth.index_a, prog.fd)
    try:
        with netns.raw_socket(veth.ns_a, veth.if_a) as stack, \
                netns.raw_socket(veth.ns_b, veth.if_b) as tx:
            netns.send_frames(tx, frames)
            got = netns.recv_frames(stack, len(frames), timeout=1.0)
    finally:
        with netns.enter(veth.ns_a):
            xdp_attach.detach(veth.index_a)
    assert got == (frames if fallback == bpf.XDP_PASS else [])


def _attach_and_die(ifname: str) -> int:
    """In a child process: load and attach our program, then exit without detaching."""
    from pynetmap.linux import ifinfo

    prog = bpf.XskProgram()
    xdp_attach.attach(ifinfo.if_index(ifname), prog.fd)
    return prog.id


def test_stale_program_is_replaced(veth: netns.VethPair, bpf_ok: None) -> None:
    old_id = netns.call(veth.ns_a, _attach_and_die, veth.if_a)  # the child has exited
    with netns.enter(veth.ns_a), bpf.XskProgram() as prog:
        old = xdp_attach.query(veth.index_a)
        assert old is not None and old.prog_id == old_id
        assert old.ours and old.stale and old.owner_pid != os.getpid()
        assert xdp_attach.attach(veth.index_a, prog.fd) == "drv"
        now = xdp_attach.query(veth.index_a)
        assert now is not None and now.prog_id == prog.id and not now.stale
        xdp_attach.detach(veth.index_a, prog.id)


def test_foreign_program_is_left_alone(veth: netns.VethPair, bpf_ok: None) -> None:
    with netns.enter(veth.ns_a), bpf.XskProgram() as prog:
        foreign = bpf.prog_load_xdp(bpf.xsk_redirect_insns(prog.map_fd), name="someone_else")
        try:
            xdp_attach.attach(veth.index_a, foreign)
            with pytest.raises(NetmapError) as e:
                xdp_attach.attach(veth.index_a, prog.fd)
            assert e.value.errno == errno.EBUSY
            assert "someone_else" in str(e.value) and "xdp off" in str(e.value)
            assert xdp_attach.query(veth.index_a).name == "someone_else"
        finally:
            xdp_attach.detach(veth.index_a)
            os.close(foreign)


def test_stale_needs_a_dead_owner() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = bpf.PROG_NAME
    assert xdp_attach.AttachedProg(1, "drv", name, dead.pid).stale
    assert not xdp_attach.AttachedProg(1, "drv", name, os.getppid()).stale
    assert not xdp_attach.AttachedProg(1, "drv", name, os.getpid()).stale
    assert not xdp_attach.AttachedProg(1, "drv", name, None).stale
    assert not xdp_attach.AttachedProg(1, "drv", "other", dead.pid).stale


def test_verifier_log_in_error(bpf_ok: None) -> None:
    with pytest.raises(NetmapError) as e:
        bpf.prog_load_xdp(bpf._insn(0x95))  # exit without setting r0
    assert "R0 !read_ok" in str(e.value)
    with pytest.raises(ValueError):
        bpf.xsk_redirect_insns(0, fallback=bpf.XDP_TX)


def test_shared_umem_second_queue(bpf_ok: None, _netns_session: None) -> None:
    """An XSK on queue 1 sharing queue 0's UMEM sends; completions come to its own ring."""
    area = mmap.mmap(-1, 128 * FRAME)
    umem = np.frombuffer(area, np.uint8).reshape(-1, FRAME)
    with netns.veth_pair(queues=2) as pair:
        with netns.enter(pair.ns_a):
            first = xsk.XskSocket(pair.if_a, 0, area, rx_size=RING, tx_size=RING,
                                  fill_size=RING, comp_size=RING)
            second = xsk.XskSocket(pair.if_a, 1, first, rx_size=0, tx_size=RING,
                                   fill_size=RING, comp_size=RING)
        with first, second:
            assert second.umem is first.umem and second.mode == first.mode
            frames = netns.make_frames(40, pair.mac_b, pair.mac_a, seed=3)
            chunks = np.arange(64, 104)
            lens = _load(umem, chunks, frames)
            with netns.raw_socket(pair.ns_b, pair.if_b) as rx:
                assert second.tx.produce(chunks.astype(np.uint64) * FRAME, lens) == 40
                done: list[np.ndarray] = []
                deadline = time.monotonic() + TIMEOUT
                while sum(map(len, done)) < 40 and time.monotonic() < deadline:
                    second.kick()
                    done.append(second.comp.consume(RING))
                    time.sleep(0.001)
                got = netns.recv_frames(rx, 40, timeout=TIMEOUT)
            assert sorted(np.concatenate(done) // FRAME) == chunks.tolist()
            assert first.comp.available() == 0
            assert got == frames
    del umem
    area.close()
