"""bridge (spec §6.6) over netmap pipes, no privileges.

Layout of a run: the test's sender writes into pipe P1's master, the bridge
joins P1's slave and P2's master, the test's receiver reads P2's slave.
Pipes of two parents live in two memory regions (copy mode); pipes of one
parent share one (zero copy).  The bridge runs in a thread with a stop
call, or as a process stopped by SIGINT; every loop is bounded in packets
and seconds, and nothing asserts on timing.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

import pynetmap
from pynetmap import NS_BUF_CHANGED, NS_MOREFRAG, POLLIN
from pynetmap.apps import bridge as B

DEADLINE = 30.0  # seconds any one transfer may take before the test fails


def uniq() -> str:
    return "br" + uuid.uuid4().hex[:8]


def traffic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n slots: random bytes, lengths 0..2048 (both ends included), MOREFRAG on some.

    The last slot never has MOREFRAG, so every chain is complete.
    """
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 2049, n).astype(np.uint16)
    lens[:4] = (0, 1, 2048, 60)
    data = rng.integers(0, 256, (n, 2048), dtype=np.uint8)
    flags = np.where(rng.random(n) < 0.2, NS_MOREFRAG, 0).astype(np.uint16)
    flags[-1] = 0
    return data, lens, flags


def send_some(port: pynetmap.Port, data: np.ndarray, lens: np.ndarray, flags: np.ndarray,
              sent: int) -> int:
    """Queue what fits of the slots from ``sent`` on; returns the new count."""
    tx = port.tx_rings[0]
    k = min(tx.space(), len(lens) - sent, 300)
    if k:
        b = tx.reserve(k)
        b.write(data[sent : sent + k], lens[sent : sent + k])
        b.flags = flags[sent : sent + k]
        tx.advance(k)
    port.txsync()
    return sent + k


def recv_some(port: pynetmap.Port, got: list[tuple[bytes, int, int]]) -> list[int]:
    """Append (bytes, len, MOREFRAG bit) of what arrived; returns its buffer indices."""
    port.poll(POLLIN, 20)
    rx = port.rx_rings[0]
    b = rx.receive()
    idx = b.buf_idx.tolist()
    for f, ln, fl in zip(b.frames(), b.len.tolist(), b.flags.tolist(), strict=True):
        got.append((f, ln, fl & NS_MOREFRAG))
    rx.release(b.count)
    port.rxsync()
    return idx


def expected(data: np.ndarray, lens: np.ndarray, flags: np.ndarray) -> list[tuple[bytes, int, int]]:
    return [(data[i, : lens[i]].tobytes(), int(lens[i]), int(flags[i]))
            for i in range(len(lens))]


def transfer(src: pynetmap.Port, dst: pynetmap.Port, n: int, seed: int = 0) -> list[int]:
    """Send n slots into ``src``, receive them from ``dst``, check them; returns buf indices."""
    data, lens, flags = traffic(n, seed)
    got: list[tuple[bytes, int, int]] = []
    idx: list[int] = []
    sent = 0
    end = time.monotonic() + DEADLINE
    while len(got) < n and time.monotonic() < end:
        sent = send_some(src, data, lens, flags, sent)
        idx += recv_some(dst, got)
    assert len(got) == n, f"received {len(got)} of {n} ({sent} sent)"
    want = expected(data, lens, flags)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"slot {i}: got len {g[1]} flag {g[2]}, want len {w[1]} flag {w[2]}"
    return idx


@contextmanager
def bridged(name_a: str, name_b: str, **kw: object) -> Iterator[B.Bridge]:
    """A Bridge between two freshly opened ports, running in a thread."""
    pa, pb = pynetmap.open(name_a), pynetmap.open(name_b)
    br = B.Bridge(pa, pb, **kw)  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def body() -> None:
        try:
            br.run(duration=120)
        except BaseException as e:  # reported by the test thread
            errors.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    try:
        yield br
    finally:
        br.stop()
        t.join(30)
        alive = t.is_alive()
        br.close()
        pa.close()
        pb.close()
    assert not alive, "bridge thread did not stop"
    assert not errors, errors


@pytest.fixture
def ends() -> Iterator[list[pynetmap.Port]]:
    """Ports the test opens, closed afterwards."""
    ports: list[pynetmap.Port] = []
    yield ports
    for p in ports:
        p.close()


def opened(ends: list[pynetmap.Port], name: str) -> pynetmap.Port:
    p = pynetmap.open(name)
    ends.append(p)
    return p


# -- forwarding ---------------------------------------------------------------------


def test_copy_mode_between_two_regions(ends):
    p1, p2 = uniq(), uniq()
    sender = opened(ends, f"netmap:{p1}{{0")
    receiver = opened(ends, f"netmap:{p2}}}0")
    with bridged(f"netmap:{p1}}}0", f"netmap:{p2}{{0", burst=64, zerocopy=False) as br:
        assert br.pa.mem_id != br.pb.mem_id
        transfer(sender, receiver, 3000)
    assert br.a2b == 3000 and br.b2a == 0


def test_zero_copy_in_one_region(ends):
    p = uniq()
    sender = opened(ends, f"netmap:{p}{{0")
    receiver = opened(ends, f"netmap:{p}}}1")
    first = sender.tx_rings[0].slot_buf_idx[:100].copy()
    with bridged(f"netmap:{p}}}0", f"netmap:{p}{{1") as br:
        assert br.pa.mem_id == br.pb.mem_id
        idx = transfer(sender, receiver, 3000, seed=1)
    # zero copy: the receiver got the very buffers the sender filled
    assert idx[:100] == first.tolist()
    assert br.a2b == 3000


def test_copy_forced_in_one_region(ends):
    p = uniq()
    sender = opened(ends, f"netmap:{p}{{0")
    receiver = opened(ends, f"netmap:{p}}}1")
    first = sender.tx_rings[0].slot_buf_idx[:100].copy()
    with bridged(f"netmap:{p}}}0", f"netmap:{p}{{1", burst=7, zerocopy=False):
        idx = transfer(sender, receiver, 1000, seed=2)
    assert not set(idx[:100]) & set(first.tolist())


@pytest.mark.parametrize("zerocopy", [True, False])
def test_both_directions(ends, zerocopy):
    p = uniq()
    q = p if zerocopy else uniq()
    left = opened(ends, f"netmap:{p}{{0")
    right = opened(ends, f"netmap:{q}}}1")
    with bridged(f"netmap:{p}}}0", f"netmap:{q}{{1", burst=100, zerocopy=zerocopy) as br:
        transfer(left, right, 500, seed=3)
        transfer(right, left, 700, seed=4)
    assert (br.a2b, br.b2a) == (500, 700)


def test_ring_wrap_with_odd_burst(ends):
    """Small rings and a burst that does not divide them: every move wraps sooner or later."""
    p = uniq()
    sender = pynetmap.open(f"netmap:{p}{{0", slots=37)
    ends.append(sender)
    receiver = pynetmap.open(f"netmap:{p}}}1", slots=53)
    ends.append(receiver)
    with bridged(f"netmap:{p}}}0", f"netmap:{p}{{1", burst=11) as br:
        transfer(sender, receiver, 1000, seed=5)
    assert br.a2b == 1000


def test_loopback_on_one_port(ends):
    """-L: what arrives on the port goes back out of it (two opens of one pipe end)."""
    p = uniq()
    peer = opened(ends, f"netmap:{p}{{0")
    with bridged(f"netmap:{p}}}0", f"netmap:{p}}}0") as br:
        transfer(peer, peer, 500, seed=6)
    assert br.a2b + br.b2a == 500


# -- one move, checked slot by slot ---------------------------------------------------


def _one_move(ends, zerocopy: bool, lens: list[int], flags: list[int]):
    """Put slots on the bridge's RX ring, run one rings_move, return (rx, tx, bridge)."""
    p = uniq()
    q = p if zerocopy else uniq()
    src = opened(ends, f"netmap:{p}{{0")
    pa = opened(ends, f"netmap:{p}}}0")
    pb = opened(ends, f"netmap:{q}{{1")
    n = len(lens)
    data = np.arange(n * 2048, dtype=np.uint64).astype(np.uint8).reshape(n, 2048)
    tx = src.tx_rings[0]
    b = tx.reserve(n)
    b.write(data, np.array(lens, np.uint16))
    b.flags = np.array(flags, np.uint16)
    tx.advance(n)
    src.txsync()
    pa.rxsync()
    br = B.Bridge(pa, pb, zerocopy=zerocopy)
    return pa.rx_rings[0], pb.tx_rings[0], br, data


def test_rings_move_flags_and_long_len(ends, capsys):
    rx, tx, br, data = _one_move(ends, True, [60, 61, 62], [NS_MOREFRAG, 0, 0])
    tx.slot_flags[:3] = NS_MOREFRAG | 0x2  # stale MOREFRAG goes, other bits stay (netmap)
    rx.slot_len[1] = 4000  # what netmap's bridge guards against: len := 0 and a warning
    rx_idx = rx.slot_buf_idx[:3].copy()
    tx_idx = tx.slot_buf_idx[:3].copy()
    assert br.rings_move(rx, tx, "a --> b") == 3
    br.close()
    assert "invalid len 4000" in capsys.readouterr().err
    assert tx.slot_len[:3].tolist() == [60, 0, 62]
    assert rx.slot_len[1] == 0
    assert tx.slot_buf_idx[:3].tolist() == rx_idx.tolist()
    assert rx.slot_buf_idx[:3].tolist() == tx_idx.tolist()
    assert tx.slot_flags[:3].tolist() == [NS_MOREFRAG | 0x2 | NS_BUF_CHANGED,
                                          0x2 | NS_BUF_CHANGED, 0x2 | NS_BUF_CHANGED]
    assert (rx.slot_flags[:3] & NS_BUF_CHANGED).all()
    assert rx.head == rx.cur == 3 and tx.head == tx.cur == 3


def test_rings_move_copy_copies_bytes_only(ends):
    rx, tx, br, data = _one_move(ends, False, [5, 2048, 0], [0, NS_MOREFRAG, 0])
    tx_idx = tx.slot_buf_idx[:3].copy()
    assert br.rings_move(rx, tx, "a --> b") == 3
    br.close()
    assert tx.slot_buf_idx[:3].tolist() == tx_idx.tolist()  # buffers stay put
    assert tx.slot_len[:3].tolist() == [5, 2048, 0]
    assert tx.slot_flags[:3].tolist() == [0, NS_MOREFRAG, 0]
    assert tx.buf(0)[:5].tobytes() == data[0, :5].tobytes()
    assert tx.buf(1).tobytes() == data[1].tobytes()


def test_bridge_refuses_zero_copy_across_regions(ends):
    pa = opened(ends, f"netmap:{uniq()}{{0")
    pb = opened(ends, f"netmap:{uniq()}{{0")
    with pytest.raises(ValueError):
        B.Bridge(pa, pb, zerocopy=True)
    with pytest.raises(ValueError):
        B.Bridge(pa, pb, burst=0, zerocopy=False)


# -- options --------------------------------------------------------------------------


def test_defaults():
    c = B.parse(["-i", "netmap:a", "-i", "netmap:b"])
    assert (c.ifa, c.ifb, c.burst, c.wait_link) == ("netmap:a", "netmap:b", 1024, 4)
    assert c.zerocopy and not c.loopback and c.verbose == 0 and c.duration == 0
    assert c.notes == []


def test_positional_form():
    c = B.parse(["-v", "-v", "-w", "0", "netmap:a", "netmap:b", "64"])
    assert (c.ifa, c.ifb, c.burst, c.wait_link, c.verbose) == ("netmap:a", "netmap:b", 64, 0, 2)
    c = B.parse(["netmap:a", "netmap:b", "-c", "-T", "1.5"])  # options after names (GNU)
    assert not c.zerocopy and c.duration == 1.5


@pytest.mark.parametrize("burst, want", [(1, 1), (8192, 8192), (0, 1024), (8193, 1024),
                                         (-5, 1024)])
def test_burst_clamp(burst, want):
    c = B.parse(["-b", str(burst), "netmap:a", "netmap:b"])
    assert c.burst == want
    assert bool(c.notes) == (want != burst)
    c = B.parse(["--", "netmap:a", "netmap:b", str(burst)])  # "--": -5 is no option
    assert c.burst == want


@pytest.mark.parametrize("wait, want", [(0, 0), (100, 100), (101, 4), (-1, 4)])
def test_wait_clamp(wait, want):
    c = B.parse(["-w", str(wait), "netmap:a", "netmap:b"])
    assert c.wait_link == want
    assert any("invalid wait_link" in t for _, t in c.notes) == (want != wait)


def test_one_port_means_host_rings_unless_loopback():
    c = B.parse(["netmap:eth0"])
    assert (c.ifa, c.ifb) == ("netmap:eth0^", "netmap:eth0")  # endpoint 0 goes to host
    c = B.parse(["-i", "netmap:eth0", "-i", "netmap:eth0"])
    assert (c.ifa, c.ifb) == ("netmap:eth0^", "netmap:eth0")
    c = B.parse(["-L", "netmap:eth0"])
    assert (c.ifa, c.ifb) == ("netmap:eth0", "netmap:eth0")


def test_third_interface_ignored():
    c = B.parse(["-i", "netmap:a", "-i", "netmap:b", "-i", "netmap:c"])
    assert (c.ifa, c.ifb) == ("netmap:a", "netmap:b")
    assert "netmap:c ignored" in c.notes[0][1]


@pytest.mark.parametrize("argv", [[], ["-b", "x", "netmap:a"], ["-q", "netmap:a"],
                                  ["-T", "-1", "netmap:a"], ["a", "b", "1", "extra"]])
def test_usage_errors(argv, capsys):
    with pytest.raises(B.UsageError):
        B.parse(argv)
    assert B.main(argv) == 1
    assert "usage(1): bridge" in capsys.readouterr().err


# -- the command ----------------------------------------------------------------------


def test_main_runs_for_T_seconds(capsys):
    p = uniq()
    assert B.main(["-w", "0", "-T", "0.3", f"netmap:{p}}}0", f"netmap:{p}{{1"]) == 0
    out, err = capsys.readouterr()
    assert "------- zerocopy supported" in err
    assert "Ready to go" in err
    assert f"netmap:{p}}}0:nic --> netmap:{p}{{1:nic: 0 packets" in out
    assert B.main(["-w", "0", "-T", "0.1", f"netmap:{uniq()}}}0", f"netmap:{uniq()}{{1"]) == 0
    assert "------- zerocopy NOT supported" in capsys.readouterr().err
    assert B.main(["-c", "-w", "0", "-T", "0.1", f"netmap:{p}}}0", f"netmap:{p}{{1"]) == 0
    assert "------- zerocopy NOT supported" in capsys.readouterr().err


def test_main_opens_host_rings_of_endpoint_0(capsys):
    p = uniq()
    assert B.main(["-w", "0", "-T", "0.1", f"netmap:{p}{{0"]) == 1  # pipes have no host rings
    err = capsys.readouterr().err
    assert "same interface, endpoint 0 goes to host" in err
    assert f"cannot open netmap:{p}{{0^" in err


def test_process_forwards_and_stops_on_sigint(ends):
    p1, p2 = uniq(), uniq()
    sender = opened(ends, f"netmap:{p1}{{0")
    receiver = opened(ends, f"netmap:{p2}}}0")
    proc = subprocess.Popen([sys.executable, "-m", "pynetmap", "bridge", "-w", "0", "-T", "120",
                             f"netmap:{p1}}}0", f"netmap:{p2}{{0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # wait for "Ready to go" so that SIGINT meets the bridge's handler
        err = ""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            end = time.monotonic() + DEADLINE
            while "Ready to go" not in err and time.monotonic() < end and proc.poll() is None:
                if sel.select(0.5):
                    err += os.read(proc.stderr.fileno(), 4096).decode()
        assert "Ready to go" in err, err
        assert "zerocopy NOT supported" in err
        transfer(sender, receiver, 2000, seed=7)
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert f"netmap:{p1}}}0:nic --> netmap:{p2}{{0:nic: 2000 packets" in out
    assert f"netmap:{p2}{{0:nic --> netmap:{p1}}}0:nic: 0 packets" in out


def test_second_ctrl_c_ends_the_tool_with_130_after_cleanup():
    """bridge's and lb's Ctrl-C: the first stops the loop, the second ends the tool
    (exit status 130, no traceback) once the finally blocks have closed its ports."""
    from pynetmap.apps.stopping import stop_on_sigint

    before = signal.getsignal(signal.SIGINT)
    stops, cleaned = [], []
    try:
        with pytest.raises(SystemExit) as e:
            with stop_on_sigint(lambda: stops.append(1)):
                try:
                    signal.raise_signal(signal.SIGINT)
                    assert stops == [1]  # the first: the loop is asked to stop
                    signal.raise_signal(signal.SIGINT)
                    pytest.fail("the second Ctrl-C did not end the tool")
                finally:
                    cleaned.append(1)
    except KeyboardInterrupt:  # what Python's handler does: a traceback for the user
        pytest.fail("the second Ctrl-C escaped as KeyboardInterrupt")
    assert e.value.code == 130 and e.value.__suppress_context__
    assert stops == [1] and cleaned == [1]
    assert signal.getsignal(signal.SIGINT) is before


def test_verbose_prints_stats(capsys):
    p = uniq()
    assert B.main(["-v", "-w", "0", "-T", "1.2", f"netmap:{p}}}0", f"netmap:{p}{{1"]) == 0
    assert "pkts (" in capsys.readouterr().err
