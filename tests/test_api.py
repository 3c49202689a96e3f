"""The public API as a user meets it: buffers that take bytes, argument checks with
clear errors, reprs, batch iteration, ``traffic.send`` with one frame, ports left
open at exit.  Each test is a regression test for a reported problem; all run
unprivileged over netmap pipes with unique names."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

import pynetmap
from pynetmap import POLLIN, Buffer, NetmapError
from pynetmap.registry import rundir
from pynetmap.traffic import FrameTable, receive, send


def uniq() -> str:
    return "api" + uuid.uuid4().hex[:10]


@pytest.fixture
def pipe() -> Iterator[tuple[pynetmap.Port, pynetmap.Port]]:
    name = uniq()
    a = pynetmap.open(f"netmap:{name}{{0")
    b = pynetmap.open(f"netmap:{name}}}0")
    yield a, b
    a.close()
    b.close()


# -- 1. buffers take bytes ---------------------------------------------------------------

def test_buf_takes_bytes_and_reads_back(pipe: tuple[pynetmap.Port, pynetmap.Port]) -> None:
    a, b = pipe
    tx, rx = a.tx_rings[0], b.rx_rings[0]
    i = tx.head
    tx.buf(i)[:5] = b"hello"  # the README's first example
    tx.slots["len"][i] = 5
    tx.head = tx.cur = tx.next(i)
    a.txsync()
    assert b.poll(POLLIN, 1000) & POLLIN
    j = rx.head
    assert bytes(rx.buf(j)[: rx.slots["len"][j]]) == b"hello"


@pytest.mark.parametrize("value", [b"abc", bytearray(b"abc"), memoryview(b"xabc")[1:],
                                   np.frombuffer(b"abc", np.uint8), [97, 98, 99]])
def test_buf_takes_any_bytes_like_and_arrays(pipe: tuple[pynetmap.Port, pynetmap.Port],
                                             value: object) -> None:
    tx = pipe[0].tx_rings[0]
    buf = tx.buf(0)
    assert isinstance(buf, Buffer) and isinstance(buf, np.ndarray) and buf.dtype == np.uint8
    buf[10:13] = value
    assert bytes(tx.buf(0)[10:13]) == b"abc"
    assert bytes(tx.bufs[tx.slot_buf_idx[0], 10:13]) == b"abc"  # the same memory


def test_buf_refuses_str(pipe: tuple[pynetmap.Port, pynetmap.Port]) -> None:
    with pytest.raises(TypeError, match="not str"):
        pipe[0].tx_rings[0].buf(0)[:5] = "hello"


# -- 2. receive() sees what a sync imported ----------------------------------------------

def test_ring_write_and_read_one_slot(pipe: tuple[pynetmap.Port, pynetmap.Port]) -> None:
    a, b = pipe
    tx, rx = a.tx_rings[0], b.rx_rings[0]
    tx.write(0, b"hello, netmap", flags=pynetmap.NS_MOREFRAG)
    assert (tx.slot_len[0], tx.slot_flags[0]) == (13, pynetmap.NS_MOREFRAG)
    tx.write(1, bytearray(b"x" * 60))
    assert (tx.slot_len[1], tx.slot_flags[1]) == (60, 0)
    assert bytes(tx.buf(0)[:13]) == b"hello, netmap" and tx.read(0) == b"hello, netmap"
    tx.advance(2)
    a.txsync()
    b.rxsync()
    assert [rx.read(0), rx.read(1)] == [b"hello, netmap", b"x" * 60]
    rx.slot_len[1] = 5000  # a len past the buffer reads the buffer, no more
    assert len(rx.read(1)) == rx.buf_size
    with pytest.raises(ValueError, match="does not fit"):
        tx.write(2, bytes(tx.buf_size + 1))
    tx.slot_buf_idx[2] = a.region.nbufs  # outside the pool
    with pytest.raises(ValueError, match="outside the pool"):
        tx.write(2, b"x")
    with pytest.raises(ValueError, match="outside the pool"):
        tx.read(2)


def test_receive_needs_a_sync_first(pipe: tuple[pynetmap.Port, pynetmap.Port]) -> None:
    """What the README's batch example now does (its old version skipped the sync)."""
    a, b = pipe
    assert a.tx_rings[0].send([b"x" * 60] * 3) == 3
    a.txsync()
    assert b.rx_rings[0].receive().count == 0  # nothing imported yet: the model, not a bug
    b.poll(POLLIN, 1000)
    assert b.rx_rings[0].receive().count == 3


# -- 3. send(): one bytes-like is one frame, str is refused -------------------------------

@pytest.mark.parametrize("frame", [b"hello", bytearray(b"hello"), memoryview(b"hello")])
def test_traffic_send_one_frame(pipe: tuple[pynetmap.Port, pynetmap.Port],
                                frame: bytes) -> None:
    a, b = pipe
    assert send(a, frame) == 1
    got = receive(b, count=10, timeout_ms=200)
    assert got.frames() == [b"hello"]


def test_ring_send_one_frame(pipe: tuple[pynetmap.Port, pynetmap.Port]) -> None:
    a, b = pipe
    assert a.tx_rings[0].send(b"hello") == 1
    a.txsync()
    assert receive(b, count=10, timeout_ms=200).frames() == [b"hello"]


@pytest.mark.parametrize("frames,match", [("hello", "str is not a frame"),
                                          (["ok", b"ok"], r"frames\[0\] is a str"),
                                          ([b"ok", 5], r"frames\[1\] is a int"),
                                          (42, "cannot send int")])
def test_send_refuses_what_is_not_frames(pipe: tuple[pynetmap.Port, pynetmap.Port],
                                         frames: object, match: str) -> None:
    a, b = pipe
    with pytest.raises(TypeError, match=match):
        send(a, frames)
    with pytest.raises(TypeError, match=match):
        a.tx_rings[0].send(frames)  # type: ignore[arg-type]
    assert receive(b, count=1, timeout_ms=50).frames() == []  # and nothing was sent


@pytest.mark.parametrize("kw,exc,match", [({"repeat": -1}, ValueError, "repeat must be >= 0"),
                                          ({"burst": 0}, ValueError, "burst must be >= 1"),
                                          ({"repeat": 1.5}, TypeError, "repeat must be an int")])
def test_send_checks_its_counts(pipe: tuple[pynetmap.Port, pynetmap.Port], kw: dict,
                                exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        send(pipe[0], [b"x"], **kw)


def test_send_still_takes_lists_and_tables(pipe: tuple[pynetmap.Port, pynetmap.Port]) -> None:
    a, b = pipe

    class Packet:  # what scapy packets offer
        def __bytes__(self) -> bytes:
            return b"pkt"

    assert send(a, [b"one", Packet()], repeat=2) == 4
    assert send(a, FrameTable(np.ones((2, 4), np.uint8), np.array([4, 2]))) == 2
    assert receive(b, count=6, timeout_ms=500).frames() == [
        b"one", b"pkt", b"one", b"pkt", b"\x01" * 4, b"\x01" * 2]


# -- 4. argument checks -------------------------------------------------------------------

@pytest.mark.parametrize("method", ["reserve", "receive"])
def test_reserve_receive_check_n(pipe: tuple[pynetmap.Port, pynetmap.Port],
                                 method: str) -> None:
    a, b = pipe
    a.tx_rings[0].send([b"x"] * 5)
    a.txsync()
    b.rxsync()
    ring = a.tx_rings[0] if method == "reserve" else b.rx_rings[0]
    call = getattr(ring, method)
    with pytest.raises(ValueError, match=r"n must be >= 0.*got -1"):
        call(-1)
    with pytest.raises(TypeError, match="n must be an int or None, not float"):
        call(2.0)
    assert call(np.int64(3)).count == 3
    assert call(0).count == 0
    assert call(10**6).count == ring.space()  # more than there is: what there is


def test_advance_checks_n(pipe: tuple[pynetmap.Port, pynetmap.Port]) -> None:
    a, _ = pipe
    tx = a.tx_rings[0]
    assert tx.space() == 1023
    with pytest.raises(ValueError, match=r"advance\(n\): n must be in 0\.\.1023.*got 5000"):
        tx.advance(5000)
    with pytest.raises(ValueError, match="got -1"):
        tx.advance(-1)
    with pytest.raises(TypeError, match="n must be an int, not float"):
        tx.advance(1.0)
    with pytest.raises(TypeError, match="n must be an int, not str"):
        tx.advance("1")  # type: ignore[arg-type]
    assert (tx.head, tx.cur) == (0, 0)  # nothing moved
    tx.advance(np.int64(1000))
    with pytest.raises(ValueError, match=r"0\.\.23 "):
        tx.release(24)
    tx.commit(23)
    assert (tx.head, tx.cur, tx.space()) == (1023, 1023, 0)
    a.txsync()  # legal all along: no RingError


@pytest.mark.parametrize("field", ["head", "cur"])
def test_head_cur_setters_check_the_value(pipe: tuple[pynetmap.Port, pynetmap.Port],
                                          field: str) -> None:
    tx = pipe[0].tx_rings[0]
    with pytest.raises(ValueError, match=rf"ring\.{field} must be a slot index in 0\.\.1023, "
                                         "got -1"):
        setattr(tx, field, -1)
    with pytest.raises(ValueError, match=f"ring.{field}"):
        setattr(tx, field, 2**40)
    with pytest.raises(TypeError, match=rf"ring\.{field} must be an int .*not float"):
        setattr(tx, field, 1.5)
    setattr(tx, field, np.uint32(0))
    assert getattr(tx, field) == 0


def test_len_and_reprs(pipe: tuple[pynetmap.Port, pynetmap.Port]) -> None:
    a, _ = pipe
    tx = a.tx_rings[0]
    assert len(tx) == tx.num_slots == 1024
    assert repr(tx) == "<Ring tx0 slots=1024 head=0 cur=0 tail=1023>"
    assert repr(tx.reserve(3)) == "<SlotBatch tx0 slots 0..2 count=3>"
    assert repr(tx.reserve(0)) == "<SlotBatch tx0 empty at 0>"
    assert repr(a).startswith("<Port 'netmap:api") and "tx=1 rx=1" in repr(a)


def test_slot_batch_iterates_per_packet(pipe: tuple[pynetmap.Port, pynetmap.Port]) -> None:
    a, b = pipe
    tx = a.tx_rings[0]
    tx.advance(1020)  # so that the batch below wraps around the ring's end
    a.txsync()
    b.rxsync()
    b.rx_rings[0].release(1020)
    b.rxsync()
    a.txsync()
    assert tx.send([b"a" * 10, b"b" * 20, b"c" * 30, b"d" * 40, b"e" * 50, b"f" * 60]) == 6
    a.txsync()
    b.rxsync()
    got = b.rx_rings[0].receive()
    assert len(got.spans) == 2
    items = list(got)
    assert [ln for _, ln, _ in items] == [10, 20, 30, 40, 50, 60]
    assert [i for i, _, _ in items] == got.buf_idx.tolist()
    assert all(type(x) is int for item in items for x in item)


def test_closed_port_and_rings_say_so(pipe: tuple[pynetmap.Port, pynetmap.Port]) -> None:
    a, _ = pipe
    tx = a.tx_rings[0]
    a.close()
    with pytest.raises(NetmapError, match="is closed") as e:
        a.fileno()
    assert e.value.errno == errno.ENXIO
    for use in (lambda: tx.head, lambda: tx.reserve(1), lambda: tx.advance(0),
                lambda: setattr(tx, "cur", 0), a.txsync, lambda: tx.read(0),
                lambda: tx.write(0, b"x")):
        with pytest.raises(NetmapError, match="closed"):
            use()
    assert repr(tx) == "<Ring tx0 slots=1024 closed>"
    assert repr(a).endswith(" closed>")


def test_open_names_unknown_keywords() -> None:
    name = f"netmap:{uniq()}{{0"
    with pytest.raises(TypeError, match=r"unexpected keyword arguments: bogus; it takes rings, "
                                        r"slots,.*mem_id and, for network interfaces, engine"):
        pynetmap.open(name, bogus=1)
    with pytest.raises(TypeError, match="for a pipe port: engine"):
        pynetmap.open(name, engine="xdp")
    with pytest.raises(ValueError, match="slots must be >= 0, got -1"):
        pynetmap.open(name, slots=-1)


# -- a port left open at exit --------------------------------------------------------------

def test_port_left_open_is_closed_quietly_at_exit() -> None:
    name = uniq()
    code = textwrap.dedent(f"""
        import pynetmap
        a = pynetmap.open("netmap:{name}{{0")
        b = pynetmap.open("netmap:{name}}}0")
        view = a.tx_rings[0].buf(2)        # a NumPy view that exports the mapping
        batch = b.rx_rings[0].receive()
        pynetmap.open("netmap:{name}x{{0")  # one more, unreferenced
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=os.environ.copy())
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    # closed by the process itself: read the registry as it left it (a transaction
    # would first sweep the opens of dead processes, hiding a port never closed)
    with open(os.path.join(rundir(), "registry.json")) as f:
        ports = json.load(f)["ports"]
    assert not [k for k in ports if name in k]
