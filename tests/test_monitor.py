"""Monitors (spec §4.3): when each kind sees a slot, what it sees, and its errors.

Each row of the §4.3 table is a test on a pipe (the parent and its peer in
this process, so the order of events is exact); then the same on VALE, on
a NIC queue inside the test's namespaces, and across processes with
pkt-gen as the capture tool.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import netns
import pytest
from ringutil import drain

import pynetmap
from pynetmap import pcap
from pynetmap.adapters.monitor import MonitorAdapter
from pynetmap.constants import NS_BUF_CHANGED, NS_TXMON
from pynetmap.errors import NetmapError

_n = iter(range(10**6))


@pytest.fixture
def pipe():
    """A fresh pipe (tx end ``}``, rx end ``{``) and the names to monitor it by."""
    name = f"mon{os.getpid()}x{next(_n)}"
    tx = pynetmap.open(f"netmap:{name}}}0")
    rx = pynetmap.open(f"netmap:{name}{{0")
    opened = [tx, rx]

    def mon(end: str, suffix: str, **kw) -> pynetmap.Port:
        p = pynetmap.open(f"netmap:{name}{end}0/{suffix}", **kw)
        opened.append(p)
        return p

    yield tx, rx, mon
    for p in reversed(opened):
        p.close()


def frames(k: int, size: int = 60) -> list[bytes]:
    return [bytes([i % 256]) * size for i in range(k)]


def release_all(p: pynetmap.Port) -> list[bytes]:
    p.rxsync()
    r = p.rx_rings[0]
    got = []
    while not r.empty():
        got.append(bytes(r.buf(r.cur)[: r.slots["len"][r.cur]]))
        r.advance(1)
    p.rxsync()
    return got


def test_copy_tx_monitor_sees_slots_when_submitted(pipe) -> None:
    tx, rx, mon = pipe
    m = mon("}", "t")
    tx.tx_rings[0].send(frames(5))
    assert drain(m) == []  # not submitted yet
    tx.txsync()
    assert drain(m) == [(0, f, NS_TXMON) for f in frames(5)]  # before anyone received


def test_copy_rx_monitor_sees_slots_when_received(pipe) -> None:
    tx, rx, mon = pipe
    m = mon("{", "r")
    tx.tx_rings[0].send(frames(4))
    tx.txsync()
    assert drain(m) == []  # the receiver did not sync yet
    rx.rxsync()
    assert drain(m) == [(0, f, 0) for f in frames(4)]  # though rx has not read them
    rx.rxsync()
    assert drain(m) == []  # each arrival once


def test_rt_sees_both_directions(pipe) -> None:
    tx, rx, mon = pipe
    m = mon("{", "rt")  # rx's RX (arrivals) and rx's TX (what rx sends back)
    tx.tx_rings[0].send(frames(2))
    tx.txsync()
    rx.rxsync()
    rx.tx_rings[0].send([b"r" * 60])
    rx.txsync()
    got = drain(m)
    assert sorted((f, fl) for _, f, fl in got) == sorted(
        [(f, 0) for f in frames(2)] + [(b"r" * 60, NS_TXMON)])


def test_zero_copy_rx_monitor_waits_for_the_release(pipe) -> None:
    tx, rx, mon = pipe
    m = mon("{", "z")
    tx.tx_rings[0].send(frames(3))
    tx.txsync()
    rx.rxsync()
    assert drain(m) == []  # received, not yet released
    r = rx.rx_rings[0]
    slots_before = r.slots["buf_idx"][r.head:r.head + 3].copy()
    assert release_all(rx) == frames(3)
    assert [f for _, f, _ in drain(m)] == frames(3)
    # the buffers were swapped: the parent's slots hold others, marked changed
    assert (r.slots["buf_idx"][:3] != slots_before).all()


def test_zero_copy_tx_monitor_sees_reclaimed_slots(pipe) -> None:
    tx, rx, mon = pipe
    m = mon("}", "z")
    t = tx.tx_rings[0]
    t.send(frames(3))
    tx.txsync()
    assert drain(m) == []  # sent, the peer still holds them
    release_all(rx)
    tx.txsync()  # the sender reclaims them: now the monitor has them
    got = drain(m)
    assert [(f, fl) for _, f, fl in got] == [(f, NS_TXMON) for f in frames(3)]
    assert all(t.slots["flags"][i] & NS_BUF_CHANGED for i in range(3))


def test_several_monitors_on_one_ring(pipe) -> None:
    tx, rx, mon = pipe
    m1, m2, mz = mon("}", "t"), mon("}", "t"), mon("}", "z")
    tx.tx_rings[0].send(frames(6))
    tx.txsync()
    assert [f for _, f, _ in drain(m1)] == frames(6) == [f for _, f, _ in drain(m2)]
    release_all(rx)
    tx.txsync()
    assert [f for _, f, _ in drain(mz)] == frames(6)


def test_full_monitor_skips_the_oldest(pipe) -> None:
    tx, rx, mon = pipe
    m = mon("}", "t", slots=8)
    tx.tx_rings[0].send(frames(20))
    tx.txsync()
    assert [f for _, f, _ in drain(m)] == frames(20)[-7:]


def test_a_full_buffer_frame_is_copied_whole(pipe) -> None:
    """A frame as long as a buffer reaches the monitor whole.  (Pipes and monitors
    both have 2048-byte buffers here, so the cut to the monitor's buffer size,
    for a parent with bigger buffers, cannot be reached by this test.)"""
    tx, rx, mon = pipe
    m = mon("}", "t")
    tx.tx_rings[0].send([b"x" * 2048])
    tx.txsync()
    assert [len(f) for _, f, _ in drain(m)] == [2048]


@pytest.mark.parametrize("kind", ["t", "z"])
def test_a_monitor_with_broken_slots_cannot_hurt_its_port(pipe, kind) -> None:
    """A monitor's user that writes a bad buffer index into its free slots loses what
    would have gone there; the monitored port goes on syncing and delivering."""
    tx, rx, mon = pipe
    m = mon("}", kind)
    m.rx_rings[0].slot_buf_idx[:] = m.region.nbufs + 5
    tx.tx_rings[0].send(frames(3))
    tx.txsync()
    assert release_all(rx) == frames(3)
    tx.txsync()  # /z sees slots after use: here
    assert drain(m) == []


def test_monitor_of_a_port_nobody_opened_is_refused() -> None:
    with pytest.raises(NetmapError) as e:
        pynetmap.open(f"netmap:nobody{os.getpid()}{{0/r")
    assert e.value.errno == errno.EINVAL


def test_monitor_cannot_transmit(pipe) -> None:
    tx, rx, mon = pipe
    m = mon("}", "t")
    assert m.num_tx_rings == 1 and m.num_rx_rings == 1
    m.txsync()  # nothing submitted: nothing to refuse
    m.tx_rings[0].advance(1)
    with pytest.raises(NetmapError) as e:
        m.txsync()
    assert e.value.errno == errno.EIO


def test_monitor_whose_port_goes_away_gets_an_error(pipe) -> None:
    tx, rx, mon = pipe
    m = mon("}", "t")
    tx.close()
    with pytest.raises(NetmapError) as e:
        m.rxsync()
    assert e.value.errno == errno.EIO
    assert m.poll(pynetmap.POLLIN, 0) & pynetmap.POLLHUP


def test_unwatched_rings_stop_feeding_when_the_monitor_closes(pipe) -> None:
    tx, rx, mon = pipe
    m = mon("}", "t")
    tx.txsync()  # the parent maps the monitor's ring here
    assert tx.tx_rings[0].kring.watchers
    m.close()
    tx.tx_rings[0].send(frames(3))
    tx.txsync()  # no monitor left: nothing to feed, no error
    assert release_all(rx) == frames(3)
    assert not tx.tx_rings[0].kring.watchers


def test_monitor_is_the_first_port_type_asked() -> None:
    from pynetmap import adapters

    assert adapters.ADAPTERS[0].endswith(":MonitorAdapter")
    assert MonitorAdapter.takes(pynetmap.parse("vale0:x/z"))
    assert not MonitorAdapter.takes(pynetmap.parse("vale0:x/x"))


# -- other port types ------------------------------------------------------------------------

def test_vale_zero_copy_tx_monitor_sees_a_frame_at_once() -> None:
    sw = f"vale{os.getpid() % 1000}m"
    with pynetmap.open(f"{sw}:a") as a, pynetmap.open(f"{sw}:b") as b, \
            pynetmap.open(f"{sw}:a/z") as mz, pynetmap.open(f"{sw}:b/r") as mr:
        f = b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x08\x00" + b"v" * 46
        a.tx_rings[0].send([f])
        a.txsync()  # VALE reclaims TX slots at once
        assert [(x, fl) for _, x, fl in drain(mz)] == [(f, NS_TXMON)]
        assert drain(mr) == []  # b did not sync
        b.rxsync()
        assert [x for _, x, _ in drain(mr)] == [f]


def test_nic_queue_monitors(veth: netns.VethPair) -> None:
    frames_in = netns.make_frames(50, veth.mac_a, veth.mac_b, seed=5)
    frames_out = netns.make_frames(30, veth.mac_b, veth.mac_a, seed=6)
    sock = netns.raw_socket(veth.ns_b, veth.if_b)

    def body() -> tuple[list[bytes], list[bytes]]:
        with pynetmap.open(f"netmap:{veth.if_a}", engine="packet") as port, \
                pynetmap.open(f"netmap:{veth.if_a}/rt") as m:
            r = port.tx_rings[0]
            r.send(frames_out)
            port.txsync()
            netns.send_frames(sock, frames_in)
            seen: list[bytes] = []
            end = time.monotonic() + 5
            while len([f for f in seen if f[12:14] == b"\x88\xb5"]) < 80 and \
                    time.monotonic() < end:
                port.poll(pynetmap.POLLIN, 100)
                for rr in port.rx_rings:
                    rr.head = rr.cur = rr.tail
                seen += [f for _, f, _ in drain(m)]
            got = [f for f in seen if f[12:14] == b"\x88\xb5"]
            return got, []

    got, _ = netns.call(veth.ns_a, body, timeout=20)
    assert sorted(got) == sorted(frames_in + frames_out)


# -- across processes: pkt-gen as a capture tool ---------------------------------------------

def test_a_closed_monitor_leaves_its_ports_region_unmapped() -> None:
    """Opening a copy monitor maps the watched port's region to count monitors on its
    rings; once the monitor is closed nothing of that region stays mapped here.  It
    used to stay until exit, which then printed "BufferError: cannot close exported
    pointers exist"."""
    from pynetmap import region as R

    name = f"mu{os.getpid()}"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import pynetmap, time\n"
                               f"p = pynetmap.open('netmap:{name}{{0')\n"
                               "print('open', flush=True)\n"
                               "time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        before = set(R._cache)
        mon = pynetmap.open(f"netmap:{name}{{0/r")
        mon.close()
        assert set(R._cache) == before
    finally:
        holder.kill()
        holder.wait()


def _wait_monitor(prefix: str, timeout: float = 60) -> None:
    from pynetmap.registry import transaction

    end = time.monotonic() + timeout
    while True:
        with transaction() as state:
            if any(k.startswith(prefix) and r["endpoints"]["mon"]["opens"]
                   for k, r in state["ports"].items() if r["kind"] == "monitor"):
                return
        assert time.monotonic() < end, f"no monitor {prefix}... appeared"
        time.sleep(0.1)


def test_pktgen_captures_a_monitored_pipe_to_pcap(tmp_path) -> None:
    name = f"cap{os.getpid()}"
    out = tmp_path / "x.pcap"
    rx = subprocess.Popen([sys.executable, "-m", "pynetmap.apps.pktgen", "-w", "0", "-f", "rx",
                           "-i", f"netmap:{name}{{0"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    cap = None
    try:
        end = time.monotonic() + 30
        while True:  # the watched port must be open before its monitor
            try:
                probe = pynetmap.open(f"netmap:{name}{{0/r")
                probe.close()
                break
            except NetmapError:
                assert time.monotonic() < end
                time.sleep(0.1)
        cap = subprocess.Popen([sys.executable, "-m", "pynetmap.apps.pktgen", "-w", "0", "-f",
                                "rx", "-i", f"netmap:{name}{{0/r", "-n", "300",
                                "--pcap-out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        _wait_monitor(f"{name}{{0/")  # the capture is open (after its start-up imports)
        tx = subprocess.run([sys.executable, "-m", "pynetmap.apps.pktgen", "-w", "0", "-f", "tx",
                             "-i", f"netmap:{name}}}0", "-n", "300", "-R", "3000", "-l", "80"],
                            capture_output=True, text=True, timeout=120)
        assert tx.returncode == 0, tx.stdout + tx.stderr
        cout, _ = cap.communicate(timeout=60)
        assert cap.returncode == 0, cout
    finally:
        for p in (rx, cap):
            if p is not None and p.poll() is None:
                p.kill()
    c = pcap.read(str(out))
    assert len(c) == 300 and (c.lens == 80).all()
    assert len({c.packet(i) for i in range(len(c))}) == 1  # pkt-gen's one template frame
    assert c.packet(0)[12:14] == b"\x08\x00"
