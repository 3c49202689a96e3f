"""The pcap engine of NIC ports (libpcap through ctypes), on veth pairs in namespaces.

Record finding (``libpcap.find_records``) is tested without I/O.  The rest opens
``netmap:pnm0`` with ``engine="pcap"`` (or ``PYNETMAP_ENGINE=pcap`` for the tools) in
namespace A of the ``veth`` fixture, which deletes both namespaces afterwards; the
other end is driven by raw sockets and pkt-gen, and the kernel's counters check what
crossed.  Every loop is bounded in frames and seconds; nothing asserts on timing.
Network tests skip, saying why, without root; all skip without libpcap.  What every
engine must do (TX counted by the kernel, RX byte-exact, txseq into rxseq, bad slots
refused) runs in ``test_nic.py``, whose ``engine`` fixture includes pcap.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import netns
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_nic import (  # the NIC tests' helpers
    TIMEOUT,
    _open_error,
    _pktgen,
    _send_all,
    txseq_into_rxseq,
    while_b_sends,
)

import pynetmap
from pynetmap import libpcap
from pynetmap.errors import NetmapError

try:
    libpcap.load()
except NetmapError as e:
    pytest.skip(f"libpcap is not installed here ({e})", allow_module_level=True)

K = 400
PCAP = {"PYNETMAP_ENGINE": "pcap"}


# -- records, no I/O ----------------------------------------------------------------------

def _records(lens: list[int]) -> tuple[np.ndarray, int, list[int]]:
    """A buffer of pcap records as ``pcap_dump`` writes them; (buffer, used, data offsets)."""
    used = sum(libpcap.RECORD.size + n for n in lens)
    buf = np.zeros(used + 2048, np.uint8)
    at, offs = 0, []
    for i, n in enumerate(lens):
        libpcap.RECORD.pack_into(buf.data, at, i, 0, n, n)
        buf[at + 16:at + 16 + n] = i % 251  # data that is not a header
        offs.append(at + 16)
        at += 16 + n
    return buf, used, offs


@pytest.mark.parametrize("lens", [
    [60] * 1023,  # one run
    [60, 1514] * 300,  # every record a run of one
    [14] * 40 + [1792] * 3 + [100] * 70 + list(range(14, 200)),  # runs, then all different
    [200],
])
def test_find_records(lens: list[int]) -> None:
    buf, used, offs = _records(lens)
    got_offs, got_lens = libpcap.find_records(buf, len(lens), used)
    assert got_offs.tolist() == offs
    assert got_lens.tolist() == lens


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([14, 60, 61, 64, 1514, 1792]) | st.integers(14, 1792),
                min_size=1, max_size=300))
def test_find_records_any_lengths(lens: list[int]) -> None:
    buf, used, offs = _records(lens)
    got_offs, got_lens = libpcap.find_records(buf, len(lens), used)
    assert got_offs.tolist() == offs
    assert got_lens.tolist() == lens


def test_find_records_refuses_a_count_that_does_not_match() -> None:
    buf, used, _ = _records([60, 70, 80])
    with pytest.raises(NetmapError, match="runs past"):
        libpcap.find_records(buf, 4, used)  # one record more than written
    with pytest.raises(NetmapError, match="not at"):
        libpcap.find_records(buf, 2, used)  # one fewer


def test_missing_library_is_one_line() -> None:
    with pytest.raises(NetmapError) as e:
        libpcap.load("/nonexistent/libpcap.so")
    assert e.value.errno == errno.ENOENT
    assert "libpcap not found (tried /nonexistent/libpcap.so)" in str(e.value)
    assert "\n" not in str(e.value)


def test_version() -> None:
    assert "libpcap" in libpcap.version()


# -- on a veth pair -----------------------------------------------------------------------

def test_rx_exact_frames_and_not_our_own(veth: netns.VethPair) -> None:
    """Every frame B sends arrives once, byte-exact; what A sends itself does not."""
    frames = netns.make_frames(K, veth.mac_a, veth.mac_b, seed=12)
    own = netns.make_frames(50, veth.mac_b, veth.mac_a, seed=13)

    def body(ready: Callable[[], None]) -> tuple[list[bytes], dict]:
        got: list[bytes] = []
        with pynetmap.open(f"netmap:{veth.if_a}", engine="pcap") as port:
            _send_all(port, own)  # must not come back on our RX ring
            ready()  # open: the sender may start
            deadline = time.monotonic() + TIMEOUT
            while len(got) < K and time.monotonic() < deadline:
                port.poll(pynetmap.POLLIN, 100)
                rx = port.rx_rings[0]
                b = rx.receive()
                got += [bytes(rx.bufs[i, :n]) for i, n in zip(b.buf_idx, b.len, strict=True)]
                rx.release(b.count)
            time.sleep(0.2)  # anything extra would show now
            port.rxsync()
            got += [bytes(f) for f in port.rx_rings[0].receive().frames()]
            stats = port.adapter.statistics()[0]  # type: ignore[attr-defined]
        return got, stats

    got, stats = while_b_sends(veth, frames, body, timeout=20)
    assert [g for g in got if g[12:14] == b"\x88\xb5"] == frames
    assert stats["drops"] == 0


def test_pktgen_tx_exact_count_at_the_peer(veth: netns.VethPair) -> None:
    n = 20000
    before = veth.link_stats("b")
    tx = _pktgen(veth.ns_a, "-f", "tx", "-i", f"netmap:{veth.if_a}", "-n", str(n),
                 "-D", "02:00:00:00:00:09", env=PCAP)
    try:
        out, err = tx.communicate(timeout=60)
    finally:
        if tx.poll() is None:
            tx.kill()
            tx.wait()
    after = veth.link_stats("b")
    assert tx.returncode == 0, err
    assert re.search(rf"Sent {n} packets", out), out
    assert after["rx_packets"] - before["rx_packets"] == n


def test_pktgen_rxseq_of_a_paced_stream(veth: netns.VethPair) -> None:
    """B sends a sequence at 20 kpps (AF_PACKET); pkt-gen rxseq on pcap gets all, in order."""
    txseq_into_rxseq(veth.ns_a, veth.if_a, PCAP, veth.ns_b, veth.if_b,
                     {"PYNETMAP_ENGINE": "packet"})


def _move_into(pair: netns.VethPair, ns: str, name: str) -> None:
    """Move ``pair``'s A end into ``ns`` as ``name``, up (it goes with ``ns``'s deletion)."""
    for argv in (("-n", pair.ns_a, "link", "set", pair.if_a, "name", name),
                 ("-n", pair.ns_a, "link", "set", name, "netns", ns),
                 ("-n", ns, "link", "set", name, "up")):
        subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = netns.run(ns, "cat", f"/sys/class/net/{name}/operstate", check=False)
        if state.stdout.strip() == "up":
            break
        time.sleep(0.05)


def test_bridge_between_two_interfaces(veth: netns.VethPair) -> None:
    """B1 -> pnm0 | bridge on pcap | pnm2 -> B2: every frame once, byte-exact, in order."""
    frames = netns.make_frames(K, b"\x02" * 6, veth.mac_b, seed=14)
    with netns.veth_pair() as other, tempfile.TemporaryFile("w+") as log:
        _move_into(other, veth.ns_a, "pnm2")
        sink = netns.raw_socket(other.ns_b, other.if_b)
        br = subprocess.Popen(["ip", "netns", "exec", veth.ns_a, sys.executable, "-m",
                               "pynetmap.apps.bridge", "-w", "0", "-T", "30",
                               "-i", f"netmap:{veth.if_a}", "-i", "netmap:pnm2"],
                              stdout=log, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **PCAP})
        try:
            deadline = time.monotonic() + 20
            while br.poll() is None and time.monotonic() < deadline:
                log.seek(0)
                if "Ready to go" in log.read():
                    break
                time.sleep(0.05)
            netns.send_frames(netns.raw_socket(veth.ns_b, veth.if_b), frames)
            got = netns.recv_frames(sink, K)
        finally:
            br.send_signal(signal.SIGINT)
            try:
                br.wait(timeout=10)
            except subprocess.TimeoutExpired:
                br.kill()
                br.wait()
        log.seek(0)
        text = log.read()
    assert "Ready to go" in text, text
    assert got == frames, text


def test_host_rings_are_refused_in_one_line(veth: netns.VethPair) -> None:
    for suffix in ("^", "*"):
        msg = _open_error(veth.ns_a, f"netmap:{veth.if_a}{suffix}", engine="pcap")
        assert msg == (f"NetmapError: [Errno 95] netmap:{veth.if_a}{suffix}: no host rings "
                       "with the pcap engine: libpcap can neither take frames away from the "
                       "OS stack nor hand frames to it (use engine='packet' or 'xdp')")


def test_portable_path_as_on_macos(veth: netns.VethPair) -> None:
    """Outside Linux the adapter asks libpcap, not ifinfo: run that path here.

    ``nic.LINUX`` is patched in the forked child only.  pcap_findalldevs finds the
    interface and its up flag; a Linux AF_PACKET address is no BSD link address, and
    BSD's SIOCGIFMTU number means nothing here, so MAC and MTU are unknown (None).
    """
    frames = netns.make_frames(20, veth.mac_b, veth.mac_a, seed=15)
    sock = netns.raw_socket(veth.ns_b, veth.if_b)

    def body() -> tuple:
        from pynetmap.linux import nic

        nic.LINUX = False
        with pynetmap.open(f"netmap:{veth.if_a}") as port:  # auto: pcap outside Linux
            info = port.info()
            sent = _send_all(port, frames)
        errors = []
        for name, kw in ((f"netmap:{veth.if_a}", {"engine": "xdp"}), ("netmap:nosuch0", {})):
            try:
                pynetmap.open(name, **kw).close()
            except NetmapError as e:
                errors.append(str(e))
        return info.engine, info.mac, info.mtu, sent, errors

    engine, mac, mtu, sent, errors = netns.call(veth.ns_a, body, timeout=20)
    assert (engine, mac, mtu, sent) == ("pcap", None, None, 20)
    assert netns.recv_frames(sock, 20) == frames
    assert errors == [f"[Errno 95] netmap:{veth.if_a}: the xdp engine needs Linux; use "
                      "engine='pcap' (libpcap) here", "[Errno 6] no such interface 'nosuch0'"]


def test_down_interface_on_the_portable_path(veth: netns.VethPair) -> None:
    netns.run(veth.ns_a, "ip", "link", "set", veth.if_a, "down")

    def body() -> str:
        from pynetmap.linux import nic

        nic.LINUX = False
        try:
            pynetmap.open(f"netmap:{veth.if_a}").close()
        except NetmapError as e:
            return str(e)
        return "opened"

    assert netns.call(veth.ns_a, body, timeout=15) == (
        f"[Errno 100] interface {veth.if_a} is down (ifconfig {veth.if_a} up)")



def test_engine_netmap_without_dev_netmap_says_what_it_needs() -> None:
    import errno
    import os

    if os.path.exists("/dev/netmap"):
        pytest.skip("this machine has /dev/netmap: the native adapter takes engine='netmap'")
    with pytest.raises(pynetmap.NetmapError) as e:
        pynetmap.open("netmap:pnmnosuch0", engine="netmap")  # no interface is touched
    assert e.value.errno == errno.ENODEV and "/dev/netmap" in str(e.value)
