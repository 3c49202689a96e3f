"""netmap pipes in one process: zero copy, crossover, MOREFRAG hold-back,
backpressure (functional test 008), exclusive open (003), extra buffers
(006), both directions (023), limits, bad slots and ring reinit."""

import errno
import os
import stat
import uuid

import numpy as np
import pytest

import pynetmap
from pynetmap import (
    NR_REG_ONE_NIC,
    NS_BUF_CHANGED,
    NS_MOREFRAG,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLOUT,
    NetmapError,
    RingError,
)
from pynetmap.registry import transaction


def uniq():
    return "t" + uuid.uuid4().hex[:10]


def frames(n, size=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size), dtype=np.uint8)


def recv_all(port, ring_i=0):
    port.rxsync()
    r = port.rx_rings[ring_i]
    b = r.receive()
    out = b.frames()
    r.release(b.count)
    port.rxsync()
    return out


@pytest.fixture
def pipe():
    p = uniq()
    a = pynetmap.open(f"netmap:{p}{{0")
    b = pynetmap.open(f"netmap:{p}}}0")
    yield a, b
    a.close()
    b.close()


def test_send_receive_zero_copy(pipe):
    a, b = pipe
    tx = a.tx_rings[0]
    data = frames(10)
    assert tx.send(data) == 10
    a.txsync()
    b.rxsync()
    rx = b.rx_rings[0]
    assert rx.space() == 10
    batch = rx.receive()
    assert [f for f in batch.frames()] == [bytes(r) for r in data]
    # zero copy: the receiver's slots point at the sender's buffers
    assert np.array_equal(batch.buf_idx, tx.slot_buf_idx[:10])
    assert b.region is a.region


def test_both_directions(pipe):  # functional 023
    a, b = pipe
    b.tx_rings[0].send(frames(3, seed=1))
    b.txsync()
    a.tx_rings[0].send(frames(5, seed=2))
    a.txsync()
    assert recv_all(a) == [bytes(r) for r in frames(3, seed=1)]
    assert recv_all(b) == [bytes(r) for r in frames(5, seed=2)]


def test_initial_ring_state(pipe):
    a, b = pipe
    tx, rx = a.tx_rings[0], b.rx_rings[0]
    n = tx.num_slots
    assert (tx.head, tx.cur, tx.tail) == (0, 0, n - 1)
    assert (rx.head, rx.cur, rx.tail) == (0, 0, 0)
    assert n == 1024 and tx.buf_size == 2048
    assert len(set(tx.slot_buf_idx.tolist())) == n and tx.slot_buf_idx.min() >= 2
    assert (tx.slot_len == 2048).all()
    nifp = a.nifp
    assert nifp["ni_tx_rings"] == 1 and nifp["ni_host_tx_rings"] == 1


def test_crossover_rings():
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{1@conf:rings=3,slots=64") as a, \
            pynetmap.open(f"netmap:{p}}}1") as b:
        assert len(a.tx_rings) == len(b.rx_rings) == 3
        for i in range(3):
            a.tx_rings[i].send(frames(i + 1, seed=i))
        a.txsync()
        b.rxsync()
        for i in range(3):
            assert b.rx_rings[i].space() == i + 1
            assert b.rx_rings[i].num_slots == 64


def test_conf_swapped_for_slave():
    p = uniq()
    with pynetmap.open(f"netmap:{p}}}a@conf:tx-rings=2,rx-rings=3,tx-slots=32,rx-slots=16") \
            as s, pynetmap.open(f"netmap:{p}{{a") as m:
        assert [len(s.tx_rings), len(s.rx_rings)] == [2, 3]
        assert [len(m.tx_rings), len(m.rx_rings)] == [3, 2]
        assert s.tx_rings[0].num_slots == 32 and m.rx_rings[0].num_slots == 32
        assert m.tx_rings[0].num_slots == 16


def test_one_ring_and_direction_flags():
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0-1@conf:rings=2") as a:
        assert [r.ringid for r in a.tx_rings] == [1] and [r.ringid for r in a.rx_rings] == [1]
        assert a.spec.mode == NR_REG_ONE_NIC
        with pynetmap.open(f"netmap:{p}}}0/T") as t:
            assert len(t.tx_rings) == 2 and t.rx_rings == []
        with pynetmap.open(f"netmap:{p}}}0/R") as r:
            assert r.tx_rings == [] and len(r.rx_rings) == 2
        with pytest.raises(NetmapError) as e:
            pynetmap.open(f"netmap:{p}{{0-5")
        assert e.value.errno == errno.EINVAL


def test_pipe_master_rejects_host_modes():  # ctrl-api-test pipe_master
    p = uniq()
    for suffix in ("*", "^", "^0"):
        with pytest.raises(NetmapError) as e:
            pynetmap.open(f"netmap:{p}{{pipeid1{suffix}")
        assert e.value.errno == errno.EINVAL
    with pynetmap.open(f"netmap:{p}{{pipeid1"):
        pass
    with pynetmap.open(f"netmap:{p}}}pipeid2"):  # pipe_slave
        pass


def test_morefrag_held_back(pipe):
    a, b = pipe
    tx = a.tx_rings[0]
    b4 = tx.reserve(4)
    b4.fill(bytes(range(50)))
    b4.flags = np.array([NS_MOREFRAG, NS_MOREFRAG, NS_MOREFRAG, 0], np.uint16)
    tx.advance(3)  # three fragments of an incomplete packet
    a.txsync()
    b.rxsync()
    assert b.rx_rings[0].space() == 0
    tx.advance(1)  # the last fragment
    a.txsync()
    b.rxsync()
    rx = b.rx_rings[0]
    assert rx.space() == 4
    assert list(rx.receive().flags) == [NS_MOREFRAG] * 3 + [0]


def test_partial_read_backpressure():  # functional 008
    p = uniq()
    with pynetmap.open(f"netmap:{p}}}1") as snd, pynetmap.open(f"netmap:{p}{{1") as rcv:
        tx = snd.tx_rings[0]
        max_pkts = tx.num_slots - 1
        assert tx.send(frames(10, 274)) == 10
        snd.txsync()
        rcv.rxsync()
        rx = rcv.rx_rings[0]
        got = rx.receive(7)
        assert got.count == 7
        rx.release(7)
        rcv.rxsync()
        snd.txsync()
        assert max_pkts - tx.space() == 3  # exactly 3 still pending
        avail = tx.space()
        assert tx.send(frames(avail + 1, 274)) == avail  # one more does not fit
        snd.txsync()
        assert tx.space() == 0


def test_flow_control_full_ring():
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0@conf:slots=8") as a, pynetmap.open(f"netmap:{p}}}0") as b:
        tx = a.tx_rings[0]
        assert tx.send(frames(20)) == 7  # n-1 slots
        a.txsync()
        assert a.poll(POLLOUT, 0) & POLLOUT == 0
        assert b.poll(POLLIN, 0) & POLLIN
        rx = b.rx_rings[0]
        rx.release(rx.receive().count)
        b.rxsync()
        assert a.poll(POLLOUT, 0) & POLLOUT
        assert tx.space() == 7


def test_pollhup_stays_set_once_the_peer_is_gone():
    """POLLHUP is a state, as netmap's: every poll says it, not one every 0.2 s."""
    p = uniq()
    a = pynetmap.open(f"netmap:{p}{{0")
    try:
        pynetmap.open(f"netmap:{p}}}0").close()
        got = [a.poll(POLLIN, 0) for _ in range(5)]
        assert all(r & POLLHUP for r in got), got
    finally:
        a.close()


def test_closing_one_end_wakes_the_other_ends_armed_waiter():
    """An event loop waiting on fileno() after arm() learns at once that the peer
    closed: the closing end rings the bell, and the next arm() says POLLHUP."""
    import select

    p = uniq()
    a = pynetmap.open(f"netmap:{p}{{0")
    try:
        b = pynetmap.open(f"netmap:{p}}}0")
        assert a.arm(POLLIN) == 0
        b.close()
        readable, _, _ = select.select([a.fileno()], [], [], 5.0)  # a bound, not a timing
        assert readable
        assert a.arm(POLLIN) & POLLHUP
    finally:
        a.close()


def test_a_sync_between_arm_and_the_wait_leaves_the_wakeup():
    """An event loop arms, then something calls rxsync() before it waits: the
    datagram the peer sent stays for fileno() (it once was drained by that sync,
    and a sync that raced the publish left the waiter asleep for good)."""
    import select

    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0") as a, pynetmap.open(f"netmap:{p}}}0") as b:
        assert b.arm(POLLIN) == 0
        a.tx_rings[0].send([b"x" * 60])
        a.txsync()  # rings b's bell
        b.rxsync()
        readable, _, _ = select.select([b.fileno()], [], [], 5.0)  # a bound, not a timing
        assert readable
        assert b.arm(POLLIN) & POLLIN


def test_poll_for_rx_flushes_only_tx_rings_with_work():
    """As netmap's poll: waiting for POLLIN syncs a TX ring only if slots were
    submitted (head != hwcur); waiting for POLLOUT syncs every TX ring."""
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0@conf:slots=8") as a, pynetmap.open(f"netmap:{p}}}0") as b:
        tx = a.tx_rings[0]
        k = tx.kring
        heads = []
        real = k.sync
        k.sync = lambda kring, head: (heads.append(head), real(kring, head))[1]
        assert a.poll(POLLIN, 0) == 0
        assert heads == []  # idle: not synced
        tx.send(frames(3))
        assert a.poll(POLLIN, 0) == 0
        assert heads == [3]  # flushed: the peer has them
        assert b.poll(POLLIN, 0) & POLLIN
        b.rx_rings[0].release(3)
        b.rxsync()
        assert tx.tail == 7  # the release is not seen without a TX sync
        assert a.poll(POLLIN, 0) == 0 and heads == [3] and tx.tail == 7
        assert a.poll(POLLOUT, 0) & POLLOUT
        assert heads == [3, 3] and tx.tail == 2  # 7 slots free again


def test_exclusive_open():  # functional 003
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0/x"):
        for name in (f"netmap:{p}{{0", f"netmap:{p}{{0/x"):
            with pytest.raises(NetmapError, match="in exclusive use by pid") as e:
                pynetmap.open(name)
            assert e.value.errno == errno.EBUSY
        with pynetmap.open(f"netmap:{p}}}0"):  # the other end is free
            pass
    with pynetmap.open(f"netmap:{p}{{0"):  # released on close
        with pytest.raises(NetmapError, match="cannot take ring 0 exclusively"):
            pynetmap.open(f"netmap:{p}{{0/x")


def test_share_opens_in_the_other_ports_region():
    """``@share=PORT`` takes the region of an open port; a different explicit
    ``@N`` is EINVAL (spec §3), a port that is not open ENXIO."""
    p = uniq()
    with pynetmap.open(f"netmap:{p}a{{0") as a, pynetmap.open(f"netmap:{p}z{{0") as z:
        assert z.mem_id != a.mem_id  # another parent, another region
        with pynetmap.open(f"netmap:{p}b{{0@share=netmap:{p}a{{0") as b:
            assert b.mem_id == a.mem_id
        with pytest.raises(NetmapError) as e:
            pynetmap.open(f"netmap:{p}c{{0@{z.mem_id}@share=netmap:{p}a{{0")
        assert e.value.errno == errno.EINVAL
        with pytest.raises(NetmapError) as e:
            pynetmap.open(f"netmap:{p}d{{0@share=netmap:{p}none{{0")
        assert e.value.errno == errno.ENXIO


def test_extra_buffers_send(pipe):  # functional 006
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{e", extra_bufs=5) as a, pynetmap.open(f"netmap:{p}}}e") as b:
        extras = a.extra_buffers()
        assert len(extras) == 5 and a.extra_bufs == 5
        assert len(set(extras) & set(a.tx_rings[0].slot_buf_idx.tolist())) == 0
        tx = a.tx_rings[0]
        data = frames(5, 100, seed=9)
        old = tx.slot_buf_idx[:5].copy()
        for i, e in enumerate(extras):
            tx.bufs[e, :100] = data[i]
        tx.slot_buf_idx[:5] = extras
        tx.slot_len[:5] = 100
        tx.slot_flags[:5] = NS_BUF_CHANGED
        # the replaced buffers become the extra list, same length as before
        for i in range(5):
            tx.bufs[old[i], :4] = np.array([old[i + 1] if i < 4 else 0], "<u4").view(np.uint8)
        a.bufs_head = int(old[0])
        tx.advance(5)
        a.txsync()
        got = recv_all(b)
        assert got == [bytes(r) for r in data]
        assert a.extra_buffers() == old.tolist()


def test_limits():
    p = uniq()
    with pytest.raises(ValueError):
        pynetmap.open(f"netmap:{p}{{0@conf:rings=257")
    with pytest.raises(ValueError):
        pynetmap.open(f"netmap:{p}{{0", slots=4097)
    ports = [pynetmap.open(f"netmap:{p}{{{i}@conf:slots=4") for i in range(64)]
    try:
        with pytest.raises(NetmapError) as e:
            pynetmap.open(f"netmap:{p}{{64")
        assert e.value.errno == errno.ENOMEM
        assert "64 pipes" in str(e.value)
        assert len({port.mem_id for port in ports}) == 1  # one region per parent
    finally:
        for port in ports:
            port.close()


def test_bad_arguments():
    with pytest.raises(TypeError):
        pynetmap.open(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pynetmap.open("netmap:x{0", slots="8")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pynetmap.open("netmap:x{0", slots=-1)
    with pytest.raises(TypeError):
        pynetmap.open("netmap:x{0", color=3)
    with pytest.raises(ValueError):
        pynetmap.open("netmap:x{")


def test_bad_head_resets_ring_and_reports(pipe):
    a, b = pipe
    tx = a.tx_rings[0]
    tx.send(frames(2))
    a.txsync()
    tx.head = tx.tail + 1 if tx.tail + 1 < tx.num_slots else 0  # past tail
    with pytest.raises(RingError):
        a.txsync()
    assert (tx.head, tx.cur) == (2, 2) and tx.tail == tx.num_slots - 1
    tx.cur = 5000
    assert a.poll(POLLOUT, 0) & POLLERR
    assert tx.cur == 2
    assert recv_all(b) == [bytes(r) for r in frames(2)]  # the peer is unaffected


@pytest.mark.parametrize("field,value", [("buf_idx", 0), ("buf_idx", 1), ("buf_idx", 10**9),
                                         ("len", 2049)])
def test_bad_slot_never_reaches_peer(pipe, field, value):
    a, b = pipe
    tx = a.tx_rings[0]
    good = tx.slot_buf_idx[3]
    tx.send(frames(4))
    tx.slots[field][1] = value
    with pytest.raises(RingError):
        a.txsync()
    b.rxsync()
    assert b.rx_rings[0].space() == 0
    assert tx.head == 0 and tx.slot_buf_idx[3] == good
    if field == "buf_idx":
        assert tx.slot_buf_idx[1] == 0 and tx.slot_len[1] == 0  # sanitized as netmap does


def test_user_tail_write_is_restored(pipe):
    a, _ = pipe
    tx = a.tx_rings[0]
    tx._hdr[7] = 3
    a.txsync()
    assert tx.tail == tx.num_slots - 1


def test_region_private_and_removed_after_close():
    p = uniq()
    a = pynetmap.open(f"netmap:{p}{{0")
    name = a.region.name.lstrip("/")
    if os.path.exists("/dev/shm"):
        mode = stat.S_IMODE(os.stat(f"/dev/shm/{name}").st_mode)
        assert mode == 0o600
    b = pynetmap.open(f"netmap:{p}}}0")
    a.close()
    with transaction() as st:
        assert p in st["parents"]
    b.close()
    with transaction() as st:
        assert p not in st["parents"] and f"{p}{{0" not in st["ports"]
    if os.path.exists("/dev/shm"):
        assert not os.path.exists(f"/dev/shm/{name}")


def test_reopen_after_close_keeps_data():
    p = uniq()
    a = pynetmap.open(f"netmap:{p}{{0")
    b = pynetmap.open(f"netmap:{p}}}0")
    a.tx_rings[0].send(frames(3))
    a.txsync()
    b.close()  # the sender keeps the pair alive
    with pynetmap.open(f"netmap:{p}}}0") as b2:
        assert recv_all(b2) == [bytes(r) for r in frames(3)]
    a.close()


def test_swap_zero_copy_forward():
    p, q = uniq(), uniq()
    with pynetmap.open(f"netmap:{p}{{0") as a, pynetmap.open(f"netmap:{p}}}0") as b, \
            pynetmap.open(f"netmap:{p}{{1") as c, pynetmap.open(f"netmap:{p}}}1") as d:
        a.tx_rings[0].send(frames(6, seed=4))
        a.txsync()
        b.rxsync()
        moved = pynetmap.swap(b.rx_rings[0], c.tx_rings[0])
        assert moved == 6
        b.rxsync()
        c.txsync()
        assert recv_all(d) == [bytes(r) for r in frames(6, seed=4)]
        with pynetmap.open(f"netmap:{q}{{0") as other:
            with pytest.raises(ValueError):
                pynetmap.swap(b.rx_rings[0], other.tx_rings[0])


@pytest.mark.parametrize("count", [1, 5])  # the one-slot path and the batch path
@pytest.mark.parametrize("start", [0, 6])  # a release that wraps, from 6
def test_release_returns_only_swapped_buffers(count, start):
    """As netmap's pipe rxsync: a released slot goes back to the sender only with
    NS_BUF_CHANGED (checked first); what a receiver writes without it stays its own."""
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0@conf:slots=8", extra_bufs=2) as a, \
            pynetmap.open(f"netmap:{p}}}0") as b:
        tx, rx = a.tx_rings[0], b.rx_rings[0]
        for _ in range(start):  # move both rings' heads to ``start``
            tx.send(frames(1))
            a.txsync()
            recv_all(b)
        a.txsync()
        before = tx.slot_buf_idx.copy()
        tx.send(frames(count))
        a.txsync()
        b.rxsync()
        assert rx.space() == count
        first, last = start % 8, (start + count - 1) % 8
        spare = a.extra_buffers()[0]
        rx.slot_buf_idx[first] = spare  # swapped in and said so
        rx.slot_flags[first] |= NS_BUF_CHANGED
        if count > 1:
            rx.slot_buf_idx[last] = 1  # scribbled without the flag
            rx.slot_len[last] = 9999
        rx.release(count)
        b.rxsync()
        a.txsync()
        assert tx.slot_buf_idx[first] == spare and tx.slot_flags[first] & NS_BUF_CHANGED
        assert not rx.slot_flags[first] & NS_BUF_CHANGED  # cleared once passed on
        if count > 1:
            assert tx.slot_buf_idx[last] == before[last] and tx.slot_len[last] <= 2048
        assert tx.space() == 7  # every slot is back


@pytest.mark.parametrize("field,value", [("buf_idx", 1), ("buf_idx", 10**9), ("len", 2049)])
def test_bad_swapped_buffer_never_reaches_the_sender(pipe, field, value):
    a, b = pipe
    tx, rx = a.tx_rings[0], b.rx_rings[0]
    tx.send(frames(3))
    a.txsync()
    b.rxsync()
    before = tx.slot_buf_idx[:3].copy()
    rx.slots[field][1] = value
    rx.slot_flags[1] |= NS_BUF_CHANGED
    rx.release(3)
    with pytest.raises(RingError):
        b.rxsync()
    a.txsync()
    assert (tx.slot_buf_idx[:3] == before).all() and tx.slot_len[1] == 60
    assert tx.space() == tx.num_slots - 1 - 3  # nothing was released


@pytest.mark.parametrize("bad_at,refused", [(3, False), (7, True), (0, True)])
def test_wrapped_batch_checks_only_its_own_slots(bad_at, refused):
    """A batch that wraps (slots 6, 7, 0) is checked as the whole ring first: a bad
    slot outside it (3) must not refuse it, one inside must."""
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0@conf:slots=8") as a, \
            pynetmap.open(f"netmap:{p}}}0") as b:
        tx = a.tx_rings[0]
        for _ in range(6):
            tx.send(frames(1))
            a.txsync()
            recv_all(b)
        a.txsync()
        tx.send(frames(3, seed=5))  # slots 6, 7, 0
        tx.slot_buf_idx[bad_at] = 1
        if refused:
            with pytest.raises(RingError):
                a.txsync()
        else:
            a.txsync()
            assert recv_all(b) == [bytes(r) for r in frames(3, seed=5)]


def test_wraparound_batches():
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0@conf:slots=16") as a, \
            pynetmap.open(f"netmap:{p}}}0") as b:
        tx, rx = a.tx_rings[0], b.rx_rings[0]
        sent = received = 0
        expect = []
        got = []
        for rnd in range(20):
            data = frames(11, 60, seed=rnd)
            k = tx.send(data)
            expect += [bytes(r) for r in data[:k]]
            sent += k
            a.txsync()
            b.rxsync()
            batch = rx.receive()
            got += batch.frames()
            rx.release(batch.count)
            received += batch.count
            b.rxsync()
            a.txsync()
        assert got == expect and sent == received > 100


def test_poll_spin_adapts_to_the_peers_pace() -> None:
    """A wake-up soon after sleeping makes the next spin cover it; idle resets it."""
    name = f"spin{os.getpid()}"
    with pynetmap.open(f"netmap:{name}{{0") as p, pynetmap.open(f"netmap:{name}}}0"):
        assert p._spin_now == p.spin_us == 50
        p._learn_spin(300e-6, slept=True)  # woken 300 µs after sleeping: spin 600 µs next
        assert p._spin_now == 600
        p._learn_spin(100e-6, slept=True)  # a quicker wake-up never shrinks it at once
        assert p._spin_now == 600
        p._learn_spin(10e-6, slept=False)  # found while spinning: shrink slowly
        assert p._spin_now == pytest.approx(588)
        p._learn_spin(0.9e-3, slept=True)  # capped at spin_max_us
        assert p._spin_now == p.spin_max_us == 1000
        p._learn_spin(5e-3, slept=True)  # a long wait: an idle peer, back to spin_us
        assert p._spin_now == 50
        p._learn_spin(300e-6, slept=True)
        assert p.poll(pynetmap.POLLIN, 0) == 0  # a timeout resets it too
        assert p._spin_now == 50
