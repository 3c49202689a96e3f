"""Network namespaces and veth pairs for tests that need a real (virtual) link.

A test gets two fresh namespaces ``pnm-<pid>-<n>-a`` and ``-b`` joined by a veth pair,
one end in each, addressed from 192.0.2.0/24 (TEST-NET-1) and with IPv6 disabled so
that no router solicitations or DAD probes add frames the test did not send.  They are
always deleted afterwards, and namespaces left by a test process that died (its pid no
longer exists) are swept at the start of the next session.  Traffic never leaves them.

Offloads: frames in these tests are raw Ethernet frames built by the test, so no
checksum or segmentation offload applies to them; ``ethtool -K`` (run only if it is
installed) turns the veth offloads off anyway for tests that send through the stack.

Code runs inside a namespace in three ways: :func:`enter` (this thread, for creating
sockets -- a socket stays in the namespace it was created in), :func:`call` (a Python
function in a forked child, with a timeout) and :func:`run` (a command under
``ip netns exec``, with a timeout).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import pickle
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

PREFIX = "pnm-"
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
#: IEEE 802 "local experimental" EtherType: frames the tests send and look for.
ETH_P_TEST = 0x88B5
SO_RCVBUFFORCE = 33

CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_BPF = 12, 13, 21, 39
_STALE = re.compile(r"^pnm-(\d+)-\d+-[ab]$")
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None  # conftest on Windows


# -- privileges --------------------------------------------------------------------------

def _cap_eff() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_privileges(bpf: bool = False) -> str | None:
    """Why network tests cannot run here, or None when they can."""
    caps = _cap_eff()
    need = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW",
            CAP_SYS_ADMIN: "CAP_SYS_ADMIN (to create network namespaces)"}
    if bpf:
        need[CAP_BPF] = "CAP_BPF"
    missing = [name for cap, name in need.items() if not caps >> cap & 1
               and not (cap == CAP_BPF and caps >> CAP_SYS_ADMIN & 1)]
    if missing:
        return "needs " + ", ".join(missing) + " (run as root)"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    return None


def require_privileges(bpf: bool = False) -> None:
    """Skip the calling test, saying why, when namespaces or BPF are out of reach."""
    reason = missing_privileges(bpf)
    if reason:
        pytest.skip(reason)


# -- running things inside a namespace ---------------------------------------------------

def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def enter(ns: str) -> Iterator[None]:
    """Run the body with this thread in namespace ``ns``; always switches back.

    Sockets (and netlink sockets, e.g. pyroute2's) created in the body stay in ``ns``
    and can be used after the block.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def run(ns: str, *argv: str, timeout: float = 10.0, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    """``ip netns exec NS argv...`` with a timeout; returns the completed process."""
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout, check=check)


def call(ns: str, func: Callable[..., Any], *args: Any, timeout: float = 10.0) -> Any:
    """``func(*args)`` in a forked child inside ``ns``; its result, or its exception.

    The child is killed (by its pid) if it has not answered within ``timeout`` seconds.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: whatever happens, it ends in os._exit, never back in pytest
        try:
            os.close(r)
            try:
                fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
                _setns(fd)
                out: tuple[bool, Any] = (True, func(*args))
            except BaseException as e:  # sent back to the parent
                out = (False, e)
            try:
                data = pickle.dumps(out)
            except Exception as e:
                data = pickle.dumps((False, RuntimeError(f"unpicklable result: {e!r}")))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        with os.fdopen(r, "rb") as f:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([f], [], [], left)[0]:
                    raise TimeoutError(f"{getattr(func, '__name__', func)} in {ns} took "
                                       f"more than {timeout} s")
                chunk = os.read(f.fileno(), 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    ok, value = pickle.loads(b"".join(chunks))
    if not ok:
        raise value
    return value


# -- namespaces and the veth pair ---------------------------------------------------------

def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True, timeout=10)


def _delete_ns(ns: str) -> None:
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _pid_alive(pid: int) -> bool:
    # Not pynetmap.osl: this module (and so conftest.py) must import even when the
    # package under test does not.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def root_xdp_programs() -> dict[str, str]:
    """Interfaces of the calling thread's namespace with an XDP program: name -> program."""
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    return {link["ifname"]: link["xdp"].get("prog", {}).get("name", "?")
            for link in json.loads(out) if "xdp" in link}


def sweep_stale() -> list[str]:
    """Delete ``pnm-<pid>-*`` namespaces whose creating process is gone; their names."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    gone = [n for n in names if (m := _STALE.match(n)) and not _pid_alive(int(m.group(1)))]
    for n in gone:
        _delete_ns(n)
    return gone


def ours() -> list[str]:
    """Namespaces this process created and has not deleted yet."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith(f"{PREFIX}{os.getpid()}-")]


def _write_sysctl(path: str, value: str) -> None:
    with open(os.path.join("/proc/sys", path), "w") as f:
        f.write(value)


@dataclass
class VethPair:
    """Two namespaces joined by a veth pair: ``if_a`` lives in ``ns_a``, ``if_b`` in ``ns_b``."""

    ns_a: str
    ns_b: str
    if_a: str = "pnm0"
    if_b: str = "pnm1"
    addr_a: str = "192.0.2.1"
    addr_b: str = "192.0.2.2"
    mac_a: bytes = b""
    mac_b: bytes = b""
    index_a: int = 0
    index_b: int = 0

    def link_stats(self, side: str) -> dict[str, int]:
        """``ip -s link`` counters of one end (``"a"`` or ``"b"``): rx/tx packets, bytes."""
        ns, ifname = (self.ns_a, self.if_a) if side == "a" else (self.ns_b, self.if_b)
        out = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", ifname],
                             capture_output=True, text=True, check=True, timeout=10).stdout
        st = json.loads(out)[0]["stats64"]
        return {"rx_packets": st["rx"]["packets"], "rx_bytes": st["rx"]["bytes"],
                "tx_packets": st["tx"]["packets"], "tx_bytes": st["tx"]["bytes"],
                "rx_dropped": st["rx"]["dropped"]}


@contextlib.contextmanager
def veth_pair(queues: int = 1) -> Iterator[VethPair]:
    """Create two namespaces and a veth pair between them; delete them on exit, always."""
    n = next(_counter)
    pair = VethPair(f"{PREFIX}{os.getpid()}-{n}-a", f"{PREFIX}{os.getpid()}-{n}-b")
    created: list[str] = []
    try:
        for ns in (pair.ns_a, pair.ns_b):
            _ip("netns", "add", ns)
            created.append(ns)
            with enter(ns):
                for scope in ("all", "default"):
                    _write_sysctl(f"net/ipv6/conf/{scope}/disable_ipv6", "1")
        q = ["numrxqueues", str(queues), "numtxqueues", str(queues)] if queues > 1 else []
        _ip("-n", pair.ns_a, "link", "add", pair.if_a, *q, "type", "veth",
            "peer", "name", pair.if_b, *q, "netns", pair.ns_b)
        for ns, ifname, addr in ((pair.ns_a, pair.if_a, pair.addr_a),
                                 (pair.ns_b, pair.if_b, pair.addr_b)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            _ip("-n", ns, "link", "set", ifname, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            if shutil.which("ethtool"):
                run(ns, "ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off",
                    "tx", "off", "rx", "off", check=False)
        with enter(pair.ns_a):
            pair.index_a = socket.if_nametoindex(pair.if_a)
        with enter(pair.ns_b):
            pair.index_b = socket.if_nametoindex(pair.if_b)
        pair.mac_a = _mac(pair.ns_a, pair.if_a)
        pair.mac_b = _mac(pair.ns_b, pair.if_b)
        _wait_carrier(pair)
        yield pair
    finally:
        for ns in created:
            _delete_ns(ns)


def _mac(ns: str, ifname: str) -> bytes:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", ifname], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    return bytes.fromhex(json.loads(out)[0]["address"].replace(":", ""))


def _wait_carrier(pair: VethPair, timeout: float = 5.0) -> None:
    """Wait (bounded) until both ends report carrier, so the first frame is not lost."""
    deadline = time.monotonic() + timeout
    for ns, ifname in ((pair.ns_a, pair.if_a), (pair.ns_b, pair.if_b)):
        while time.monotonic() < deadline:
            out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", ifname],
                                 capture_output=True, text=True, timeout=10).stdout
            if json.loads(out)[0].get("operstate") == "UP":
                break
            time.sleep(0.02)


# -- raw frames --------------------------------------------------------------------------

def make_frames(count: int, dst: bytes, src: bytes, seed: int = 0,
                sizes: tuple[int, int] = (60, 1200)) -> list[bytes]:
    """``count`` Ethernet frames of EtherType :data:`ETH_P_TEST`, varied sizes, each unique.

    The payload starts with a sequence number, then pseudo-random bytes.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    lens = rng.integers(sizes[0], sizes[1] + 1, count)
    head = dst + src + ETH_P_TEST.to_bytes(2, "big")
    return [head + i.to_bytes(4, "big") + rng.bytes(int(n) - 18) for i, n in enumerate(lens)]


def raw_socket(ns: str, ifname: str, proto: int = ETH_P_TEST) -> socket.socket:
    """An AF_PACKET raw socket bound to ``ifname`` in ``ns``, receiving ``proto`` frames."""
    with enter(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        s.bind((ifname, proto))
    # room for a whole test burst, so the receiver need not keep pace with the sender
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    return s


def send_frames(sock: socket.socket, frames: list[bytes], timeout: float = 5.0) -> int:
    """Send each frame once (bounded by ``timeout``); returns how many were sent."""
    deadline = time.monotonic() + timeout
    sent = 0
    for f in frames:
        if time.monotonic() > deadline:
            break
        sock.send(f)
        sent += 1
    return sent


def recv_frames(sock: socket.socket, count: int, timeout: float = 5.0,
                quiet: float = 0.2) -> list[bytes]:
    """Receive up to ``count`` frames within ``timeout``, then wait ``quiet`` s for extras.

    Returns every frame seen, so a test can check it got exactly what was sent.
    """
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        left = (deadline - now) if len(out) < count else quiet
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return out
        out.append(sock.recv(65536))
        if len(out) >= count + 64:  # bounded even if something floods the link
            return out
