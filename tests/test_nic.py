"""NIC ports (``netmap:IFNAME``) on a veth pair, with both engines.

The port is opened in namespace A (in a forked child, tests/netns.py ``call``) on
``pnm0``; the other end ``pnm1`` in namespace B is driven by raw sockets, ping,
and pkt-gen.  The fixture deletes both namespaces afterwards, whatever happens.
Every loop is bounded in frames and seconds.  Tests skip, saying why, without
CAP_NET_ADMIN/CAP_BPF.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import netns
import numpy as np
import pytest

import pynetmap
from pynetmap.errors import NetmapError

pytest.importorskip("pyroute2")

T = TypeVar("T")

K = 400  # frames per test
TIMEOUT = 5.0


def _send_all(port: pynetmap.Port, frames: list[bytes]) -> int:
    """Put ``frames`` on TX ring 0 and wait until the kernel has them all (bounded)."""
    r = port.tx_rings[0]
    sent = 0
    deadline = time.monotonic() + TIMEOUT
    while sent < len(frames) and time.monotonic() < deadline:
        port.poll(pynetmap.POLLOUT, 200)
        while sent < len(frames) and r.space():
            i, f = r.cur, frames[sent]
            r.buf(i)[:len(f)] = np.frombuffer(f, np.uint8)
            r.slots["len"][i] = len(f)
            r.head = r.cur = r.next(i)
            sent += 1
    port.txsync()
    while r.tx_pending() and time.monotonic() < deadline:
        port.poll(pynetmap.POLLOUT, 100)
    return sent


def _receive(port: pynetmap.Port, count: int, timeout: float = TIMEOUT) -> list[bytes]:
    """Frames from every RX ring until ``count`` test frames came or ``timeout`` passed."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while sum(g[12:14] == b"\x88\xb5" for g in got) < count and time.monotonic() < deadline:
        port.poll(pynetmap.POLLIN, 100)
        for r in port.rx_rings:
            while not r.empty():
                i = r.cur
                got.append(bytes(r.buf(i)[:r.slots["len"][i]]))
                r.head = r.cur = r.next(i)
    return got


def test_tx_counted_by_the_kernel_and_byte_exact(veth: netns.VethPair, engine: str) -> None:
    frames = netns.make_frames(K, veth.mac_b, veth.mac_a, seed=1)
    sock = netns.raw_socket(veth.ns_b, veth.if_b)
    before = veth.link_stats("b")

    def body() -> tuple[int, str, str, int]:
        with pynetmap.open(f"netmap:{veth.if_a}", engine=engine) as port:
            info = port.info()
            return _send_all(port, frames), info.engine, info.mode, info.max_frame, info.mtu

    sent, got_engine, mode, max_frame, mtu = netns.call(veth.ns_a, body, timeout=15)
    got = netns.recv_frames(sock, K)
    after = veth.link_stats("b")
    assert (sent, got_engine, mode, max_frame, mtu) == (K, engine, "copy", 1792, 1500)
    assert got == frames
    assert after["rx_packets"] - before["rx_packets"] == K
    assert after["rx_bytes"] - before["rx_bytes"] == sum(map(len, frames))


def test_poll_for_rx_still_syncs_idle_tx_rings(veth: netns.VethPair, engine: str) -> None:
    """Unlike a software port's, a NIC port's poll(POLLIN) syncs its TX rings with
    nothing submitted too: the socket engines send what the device could not take
    yet only when a sync kicks them again."""

    def body() -> list[int]:
        with pynetmap.open(f"netmap:{veth.if_a}", engine=engine) as port:
            k = port.tx_rings[0].kring
            heads: list[int] = []
            real = k.sync
            k.sync = lambda kring, head: (heads.append(head), real(kring, head))[1]
            port.poll(pynetmap.POLLIN, 0)
            return heads

    assert netns.call(veth.ns_a, body, timeout=15) == [0]


def while_b_sends(veth: netns.VethPair, frames: list[bytes],
                  body: Callable[[Callable[[], None]], T], timeout: float = 15) -> T:
    """Run ``body(ready)`` in namespace A; once it calls ``ready()`` (its port is open),
    a forked sender in B sends ``frames`` from a raw socket on ``if_b``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the sender, in B, once the port is open
        try:
            os.close(w)
            os.read(r, 1)
            netns.send_frames(netns.raw_socket(veth.ns_b, veth.if_b), frames)
        finally:
            os._exit(0)
    try:
        return netns.call(veth.ns_a, body, lambda: os.write(w, b"1"), timeout=timeout)
    finally:
        os.close(r)
        os.close(w)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_rx_exact_frames_from_a_raw_socket(veth: netns.VethPair, engine: str) -> None:
    frames = netns.make_frames(K, veth.mac_a, veth.mac_b, seed=2)

    def body(ready: Callable[[], None]) -> list[bytes]:
        with pynetmap.open(f"netmap:{veth.if_a}", engine=engine) as port:
            ready()
            return _receive(port, K)

    got = while_b_sends(veth, frames, body)
    assert [g for g in got if g[12:14] == b"\x88\xb5"] == frames


def _ping(ns: str, addr: str) -> bool:
    return netns.run(ns, "ping", "-c", "1", "-W", "1", addr, check=False).returncode == 0


def test_netmap_mode_takes_received_traffic_from_the_stack(veth: netns.VethPair) -> None:
    """While netmap:pnm0 is open (AF_XDP) A's stack sees nothing; after close it does."""
    netns.require_privileges(bpf=True)
    assert _ping(veth.ns_b, veth.addr_a)

    def body() -> tuple[bool, bool]:
        from pynetmap.linux import xdp_attach

        with pynetmap.open(f"netmap:{veth.if_a}", engine="xdp"):
            during = _ping(veth.ns_b, veth.addr_a)
        return during, xdp_attach.query(veth.index_a) is None

    during, detached = netns.call(veth.ns_a, body, timeout=20)
    assert not during
    assert detached
    assert _ping(veth.ns_b, veth.addr_a)


def test_one_ring_pair_per_queue(_netns_session: None) -> None:
    netns.require_privileges(bpf=True)
    with netns.veth_pair(queues=2) as pair:
        def body() -> tuple:
            with pynetmap.open(f"netmap:{pair.if_a}", engine="xdp") as all_q:
                ids = ([r.ringid for r in all_q.tx_rings], [r.ringid for r in all_q.rx_rings])
                nif = (all_q.num_tx_rings, all_q.num_rx_rings)
            with pynetmap.open(f"netmap:{pair.if_a}-1", engine="xdp") as one:
                one_ids = [r.ringid for r in one.tx_rings]
                try:
                    pynetmap.open(f"netmap:{pair.if_a}-1", engine="xdp")
                    busy = ""
                except NetmapError as e:
                    busy = str(e)
                with pynetmap.open(f"netmap:{pair.if_a}-0", engine="xdp") as zero:
                    shared = zero.mem_id == one.mem_id
            return ids, nif, one_ids, busy, shared

        ids, nif, one_ids, busy, shared = netns.call(pair.ns_a, body, timeout=20)
    assert ids == ([0, 1], [0, 1])
    assert nif == (2, 2)
    assert one_ids == [1]
    assert "queue 1 already bound" in busy
    assert shared


def _pktgen(ns: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m",
                             "pynetmap.apps.pktgen", "-w", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def txseq_into_rxseq(rx_ns: str, rx_if: str, rx_env: dict, tx_ns: str, tx_if: str,
                     tx_env: dict, n: int = 20000) -> None:
    """pkt-gen rxseq waits for ``n`` frames of a txseq stream paced at 20 kpps: all, in order."""
    rx = _pktgen(rx_ns, "-f", "rxseq", "-i", f"netmap:{rx_if}", "-n", str(n), "-T", "100",
                 env=rx_env)
    procs = [rx]
    try:
        time.sleep(1.5)  # the receiver's port is open before the first frame
        tx = _pktgen(tx_ns, "-f", "txseq", "-i", f"netmap:{tx_if}", "-R", "20000",
                     env=tx_env)  # txseq ignores -n, as netmap's: stopped with SIGINT below
        procs.append(tx)
        rx_out, rx_err = rx.communicate(timeout=60)
        tx.send_signal(signal.SIGINT)
        tx_out, tx_err = tx.communicate(timeout=20)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert tx.returncode == 0, tx_err
    assert rx.returncode == 0, rx_err
    assert re.search(rf"Received {n} packets", rx_out), rx_out
    assert "rxseq: 0 gaps, 0 out of order, 0 too short" in rx_err, rx_err


def test_pktgen_txseq_into_rxseq_on_veth(veth: netns.VethPair, engine: str) -> None:
    env = {"PYNETMAP_ENGINE": engine}
    txseq_into_rxseq(veth.ns_b, veth.if_b, env, veth.ns_a, veth.if_a, env)


def test_stale_program_of_a_killed_process_is_replaced(veth: netns.VethPair) -> None:
    netns.require_privileges(bpf=True)
    from pynetmap.linux import xdp_attach

    def crash() -> None:
        pynetmap.open(f"netmap:{veth.if_a}", engine="xdp")
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(Exception):  # noqa: B017 - the child dies without answering
        netns.call(veth.ns_a, crash, timeout=10)

    def after() -> tuple:
        left = xdp_attach.query(veth.index_a)
        assert left is not None
        old = (left.prog_id, left.ours, left.stale)  # .stale asks about *this* process
        with pynetmap.open(f"netmap:{veth.if_a}", engine="xdp") as port:
            now = xdp_attach.query(veth.index_a)
            assert now is not None
            new = (now.prog_id, now.ours, now.stale)
            frames_ok = _send_all(port, netns.make_frames(10, veth.mac_b, veth.mac_a)) == 10
        return old, new, frames_ok, xdp_attach.query(veth.index_a)

    old, new, frames_ok, gone = netns.call(veth.ns_a, after, timeout=20)
    assert old[1:] == (True, True)
    assert new[0] != old[0] and new[1:] == (True, False)
    assert frames_ok
    assert gone is None


# -- errors: one line each ------------------------------------------------------------

def _open_error(ns: str, name: str, **kw: str) -> str:
    def body() -> str:
        try:
            pynetmap.open(name, **kw).close()
        except (NetmapError, ValueError) as e:
            return f"{type(e).__name__}: {e}"
        return "opened"

    return netns.call(ns, body, timeout=15)


def test_error_no_such_interface(veth: netns.VethPair) -> None:
    msg = _open_error(veth.ns_a, "netmap:nosuch0")
    assert msg == "NetmapError: [Errno 6] no such interface 'nosuch0'"


def test_error_interface_down(veth: netns.VethPair) -> None:
    netns.run(veth.ns_a, "ip", "link", "set", veth.if_a, "down")
    msg = _open_error(veth.ns_a, f"netmap:{veth.if_a}")
    assert msg == (f"NetmapError: [Errno 100] interface {veth.if_a} is down "
                   f"(ip link set {veth.if_a} up)")


def test_error_mtu_larger_than_the_buffer(veth: netns.VethPair) -> None:
    netns.run(veth.ns_a, "ip", "link", "set", veth.if_a, "mtu", "4000")
    msg = _open_error(veth.ns_a, f"netmap:{veth.if_a}")
    assert "MTU 4000 needs 4014-byte frames" in msg
    assert f"ip link set {veth.if_a} mtu 1778" in msg
    assert "\n" not in msg


def _unprivileged(ns: str, name: str, keep: str) -> subprocess.CompletedProcess:
    """Open ``name`` in ``ns`` as a process holding only the capabilities ``keep``."""
    code = (f"import pynetmap\ntry:\n    pynetmap.open({name!r}).close()\n    print('opened')\n"
            "except Exception as e:\n    print(type(e).__name__ + ': ' + str(e))\n")
    caps = f"-all,+{keep}" if keep else "-all"
    return netns.run(ns, "setpriv", f"--inh-caps={caps}", f"--ambient-caps={caps}",
                     f"--bounding-set={caps}", sys.executable, "-c", code, check=False,
                     timeout=20)


def test_error_no_privileges(veth: netns.VethPair) -> None:
    if not _has_setpriv():
        pytest.skip("needs setpriv (util-linux) to drop capabilities")
    r = _unprivileged(veth.ns_a, f"netmap:{veth.if_a}", "")
    assert r.stdout.strip() == (f"NetmapError: [Errno 1] netmap:{veth.if_a} (AF_PACKET "
                                "engine) needs CAP_NET_RAW (run as root or grant it)"), r
    assert "AF_XDP unavailable (CAP_NET_ADMIN is missing); using AF_PACKET" in r.stderr


def test_af_xdp_unavailable_falls_back_and_says_so(veth: netns.VethPair) -> None:
    if not _has_setpriv():
        pytest.skip("needs setpriv (util-linux) to drop capabilities")
    r = _unprivileged(veth.ns_a, f"netmap:{veth.if_a}", "net_raw")
    assert r.stdout.strip() == "opened", r
    assert r.stderr.strip() == (f"pynetmap: {veth.if_a}: AF_XDP unavailable "
                                "(CAP_NET_ADMIN is missing); using AF_PACKET")


def _has_setpriv() -> bool:
    import shutil

    return shutil.which("setpriv") is not None


def test_pktgen_one_process_per_queue(_netns_session: None) -> None:
    """``pkt-gen -p 2`` on a two-queue interface: one process per queue, counted by B."""
    netns.require_privileges(bpf=True)
    n = 40000
    with netns.veth_pair(queues=2) as pair:
        before = pair.link_stats("b")
        tx = _pktgen(pair.ns_a, "-f", "tx", "-i", f"netmap:{pair.if_a}", "-p", "2", "-n", str(n),
                     "-D", "02:00:00:00:00:09", env={"PYNETMAP_ENGINE": "xdp"})
        try:
            out, err = tx.communicate(timeout=60)
        finally:
            if tx.poll() is None:
                tx.kill()
                tx.wait()
        after = pair.link_stats("b")
    assert tx.returncode == 0, err
    assert f"Sending on netmap:{pair.if_a}: 2 queues, 2 threads" in out
    assert re.search(rf"Sent {n} packets", out), out
    assert after["rx_packets"] - before["rx_packets"] == n


def test_error_zerocopy_unsupported_by_the_driver(veth: netns.VethPair) -> None:
    netns.require_privileges(bpf=True)
    msg = _open_error(veth.ns_a, f"netmap:{veth.if_a}", engine="xdp", xdp_mode="zerocopy")
    assert msg == (f"NetmapError: [Errno 95] AF_XDP bind on {veth.if_a} queue 0: zero-copy is "
                   "not supported by this driver (ask for copy mode or auto)")


def bad_slot_errors(veth: netns.VethPair, engine: str) -> list[str]:
    """Submit five invalid slots one by one on ``veth.if_a``: each sync's error."""

    def body() -> list[str]:
        errors = []
        with pynetmap.open(f"netmap:{veth.if_a}", engine=engine) as port:
            r = port.tx_rings[0]
            for buf_idx, length, flags in ((0, 60, 0), (5, 1793, 0), (5, 8, 0),
                                           (port.region.nbufs, 60, 0),
                                           (5, 60, pynetmap.NS_MOREFRAG)):
                i = r.cur
                r.slots[i] = (buf_idx, length, flags, 0)
                r.head = r.cur = r.next(i)
                try:
                    port.txsync()
                    errors.append("accepted")
                except pynetmap.RingError as e:
                    errors.append(str(e).split(": ", 1)[1])
                # the reset gave the slot back (head = hwcur) with buffer 0: use it again
                r.slots[i] = (r.slots["buf_idx"][r.next(i)], 60, 0, 0)
        return errors

    return netns.call(veth.ns_a, body, timeout=15)


def test_bad_slots_never_reach_the_wire(veth: netns.VethPair, engine: str) -> None:
    before = veth.link_stats("b")
    errors = bad_slot_errors(veth, engine)
    after = veth.link_stats("b")
    assert len(errors) == 5 and "accepted" not in errors, errors
    assert "NS_MOREFRAG" in errors[-1]
    assert after["rx_packets"] == before["rx_packets"]


def test_without_pyroute2_auto_falls_back_and_says_so(veth: netns.VethPair) -> None:
    netns.require_privileges(bpf=True)
    code = ("import sys, pynetmap\nsys.modules['pyroute2'] = None  # as if not installed\n"
            f"with pynetmap.open('netmap:{veth.if_a}') as p:\n    print(p.info().engine)\n")
    r = netns.run(veth.ns_a, sys.executable, "-c", code, check=False, timeout=20)
    assert r.stdout.strip() == "packet", r
    assert r.stderr.strip() == (f"pynetmap: {veth.if_a}: AF_XDP unavailable (pyroute2 is not "
                                "installed (pip install pyroute2)); using AF_PACKET")
