"""Host rings (``netmap:pnm0^``, ``pnm0*``): the application between a NIC and the OS stack.

Namespace A's ``pnm0`` is opened with its host rings; the stack's addresses move to the
``pnm0-hst`` veth while the port is open and come back on close.  Real tools prove
the path: ``ping`` and a TCP transfer (curl against ``python -m http.server``) from
namespace B to A pass only if pynetmap forwards between the NIC and host rings --
first with transparent mode (``NR_FORWARD``/``NS_FORWARD``), then with the bridge
tool.  Every run is bounded in time; the fixture deletes the namespaces.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import netns
import pytest

import pynetmap
from pynetmap.kring import spans

pytest.importorskip("pyroute2")



def _addrs(ns: str) -> dict[str, list[str]]:
    out = netns.run(ns, "ip", "-4", "-o", "addr", "show").stdout
    got: dict[str, list[str]] = {}
    for line in out.splitlines():
        f = line.split()
        got.setdefault(f[1], []).append(f[3])
    return got


def _ping(ns: str, addr: str, count: int = 3) -> bool:
    r = netns.run(ns, "ping", "-c", str(count), "-i", "0.2", "-W", "2", addr, check=False,
                  timeout=20)
    return r.returncode == 0 and f"{count} received" in r.stdout


def _transparent(name: str, engine: str, ready_fd: int, stop_fd: int) -> dict:
    """Open ``name`` with NR_FORWARD on every RX ring; mark every slot NS_FORWARD until told."""
    with pynetmap.open(name, engine=engine) as port:
        moved = _addrs_here()
        for r in port.rx_rings:
            r.flags |= pynetmap.NR_FORWARD
        os.write(ready_fd, b"1")
        forwarded = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            port.poll(pynetmap.POLLIN, 50)
            for r in port.rx_rings:
                n = r.space()  # received, not yet released
                for s in spans(r.head, r.tail, r.num_slots):
                    r.slot_flags[s] |= pynetmap.NS_FORWARD
                r.head = r.cur = r.tail
                forwarded += n
            if _readable(stop_fd):
                break
    return {"moved": moved, "forwarded": forwarded}


def _addrs_here() -> dict[str, list[str]]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    got: dict[str, list[str]] = {}
    for line in out.splitlines():
        f = line.split()
        got.setdefault(f[1], []).append(f[3])
    return got


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


def test_transparent_mode_passes_ping_and_restores_the_stack(veth: netns.VethPair,
                                                             host_engine: str) -> None:
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    result: dict = {}
    pid = os.fork()
    if pid == 0:  # B's side, once A's port is open: ping through pynetmap, then stop it
        ok = False
        try:
            os.read(ready_r, 1)
            ok = _ping(veth.ns_b, veth.addr_a)
        finally:
            os.write(stop_w, b"1")
            os._exit(0 if ok else 1)
    try:
        result = netns.call(veth.ns_a, _transparent, f"netmap:{veth.if_a}*", host_engine,
                            ready_w, stop_r, timeout=60)
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # it may still wait for a port that never opened
        raise
    finally:
        _, status = os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, stop_r, stop_w):
            os.close(fd)
    assert os.WEXITSTATUS(status) == 0, "ping through transparent mode failed"
    assert result["moved"] == {"lo": ["127.0.0.1/8"], "pnm0-hst": [f"{veth.addr_a}/24"]}
    assert result["forwarded"] >= 6  # 3 requests in, 3 replies out (and ARP)
    assert _addrs(veth.ns_a) == {"lo": ["127.0.0.1/8"], "pnm0": [f"{veth.addr_a}/24"]}
    assert _ping(veth.ns_b, veth.addr_a, 1)  # the stack has its interface back


def test_bridge_carries_ping_and_a_tcp_transfer(veth: netns.VethPair, host_engine: str,
                                                tmp_path: os.PathLike) -> None:
    """pynetmap's bridge between netmap:pnm0 and netmap:pnm0^; curl fetches a file through it."""
    payload = os.urandom(3 << 20)
    (tmp_path / "blob").write_bytes(payload)  # type: ignore[operator]
    env = {**os.environ, "PYNETMAP_ENGINE": host_engine}
    procs: list[subprocess.Popen] = []

    def start(ns: str, *argv: str, **kw: object) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, **kw)
        procs.append(p)
        return p

    try:
        start(veth.ns_a, sys.executable, "-m", "http.server", "8080", "--bind",
              veth.addr_a, cwd=str(tmp_path))
        bridge = start(veth.ns_a, sys.executable, "-m", "pynetmap", "bridge", "-w", "0", "-i",
                       f"netmap:{veth.if_a}", "-T", "60")
        deadline = time.monotonic() + 20
        while "pnm0-hst" not in "".join(_addrs(veth.ns_a)) and time.monotonic() < deadline:
            time.sleep(0.1)  # the bridge has opened the host rings
        assert bridge.poll() is None, bridge.communicate()
        assert _ping(veth.ns_b, veth.addr_a)
        got_path = os.path.join(str(tmp_path), "got")
        r = netns.run(veth.ns_b, "curl", "-sS", "--max-time", "30", "-o", got_path,
                      f"http://{veth.addr_a}:8080/blob", timeout=40, check=False)
        assert r.returncode == 0, r.stderr
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        outs = []
        for p in procs:
            try:
                outs.append(p.communicate(timeout=10))
            except subprocess.TimeoutExpired:
                p.kill()
                outs.append(p.communicate())
    with open(got_path, "rb") as f:
        got = f.read()
    assert len(got) == len(payload)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert "zerocopy supported" in outs[1][1] + outs[1][0]
    assert _addrs(veth.ns_a) == {"lo": ["127.0.0.1/8"], "pnm0": [f"{veth.addr_a}/24"]}


def test_host_stack_of_a_killed_process_is_restored(veth: netns.VethPair) -> None:
    """A port with host rings dies by SIGKILL: the next open gives eth0 its addresses back."""

    def crash() -> None:
        pynetmap.open(f"netmap:{veth.if_a}^", engine="packet")
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(Exception):  # noqa: B017 - the child dies without answering
        netns.call(veth.ns_a, crash, timeout=15)
    left = _addrs(veth.ns_a)

    def reopen() -> dict:
        with pynetmap.open(f"netmap:{veth.if_a}^", engine="packet"):
            return _addrs_here()

    during = netns.call(veth.ns_a, reopen, timeout=15)
    assert left == {"lo": ["127.0.0.1/8"], "pnm0-hst": [f"{veth.addr_a}/24"]}
    assert during == left
    assert _addrs(veth.ns_a) == {"lo": ["127.0.0.1/8"], "pnm0": [f"{veth.addr_a}/24"]}
    assert _ping(veth.ns_b, veth.addr_a, 1)
