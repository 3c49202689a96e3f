"""The OS stack's side of an interface, for netmap's host rings (spec §4.5).

netmap's host rings sit between a NIC and the kernel's stack.  Linux lets a
program neither inject frames into another interface's receive path nor
take the stack's transmissions from it, so we give the stack its own
interface: opening ``netmap:eth0^`` (or ``eth0*``) creates a veth pair

    eth0-hnm  (the application's end: the host rings are an AF_XDP or
               AF_PACKET queue on it, like any NIC queue)
    eth0-hst  (the stack's end: gets eth0's MAC and MTU, and eth0's IPv4
               addresses and routes are moved onto it)

so what the stack sends to eth0's peers leaves through ``eth0-hst`` and
arrives on the host RX ring, and what the application puts on the host TX
ring enters the stack through ``eth0-hst`` as if eth0 had received it.
Closing the port moves the addresses and routes back and deletes the pair.
If the owner died, the next open finds the pair, restores eth0 from it and
starts over.

With the AF_PACKET engine the stack still receives a copy of what the NIC
receives, and would answer it from the NIC directly; strict reverse-path
filtering on the NIC (``rp_filter = 1`` while the host rings are open: the
addresses' routes now lead through ``eth0-hst``) makes it drop that copy.

TX checksum offload is turned off on the stack's end: frames the stack
leaves for "hardware" to finish would reach the wire unfinished.  Only
IPv4 addresses and main-table routes move; IPv6 and policy routing are
left as they are.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from typing import Any

from ..errors import NetmapError
from .ifinfo import IFNAMSIZ, SIOCETHTOOL, _IfreqData, _ioctl, mac, mtu

ETHTOOL_STXCSUM = 0x17
RTPROT_KERNEL = 2
MAIN_TABLE = 254


def names(ifname: str) -> tuple[str, str]:
    """(application end, stack end) of ``ifname``'s host-stack veth pair."""
    base = ifname[:IFNAMSIZ - 5]
    return f"{base}-hnm", f"{base}-hst"


class _EthtoolValue(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]


def tx_checksum_off(ifname: str) -> None:
    """Have the kernel finish TX checksums in software on ``ifname`` (a veth end):
    with offload on, its frames leave with the checksum unfinished."""
    val = _EthtoolValue(cmd=ETHTOOL_STXCSUM, data=0)
    _ioctl(ifname, SIOCETHTOOL, _IfreqData(name=ifname.encode(), data=ctypes.addressof(val)))


def netlink() -> Any:
    """A pyroute2 ``IPRoute`` (a context manager), or the error saying to install it."""
    try:
        from pyroute2 import IPRoute
    except ImportError:
        raise NetmapError(errno.ENOSYS, "host rings and vale-ctl's veth ports need "
                                        "pyroute2 (pip install pyroute2)") from None
    return IPRoute()


def link_index(ipr: Any, ifname: str) -> int | None:
    """The interface index of ``ifname``, None if there is no such interface."""
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def move_l3(ipr: Any, src: int, dst: int) -> None:
    """Move the IPv4 addresses and main-table routes of interface ``src`` to ``dst``."""
    addrs = [(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS"), a["prefixlen"],
              a.get_attr("IFA_BROADCAST"))
             for a in ipr.get_addr(family=socket.AF_INET, index=src)]
    routes = [r for r in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
              if r.get_attr("RTA_OIF") == src and r["proto"] != RTPROT_KERNEL]
    for addr, plen, brd in addrs:
        kw = {"broadcast": brd} if brd else {}
        ipr.addr("add", index=dst, address=addr, prefixlen=plen, **kw)
    for addr, plen, _brd in addrs:
        ipr.addr("del", index=src, address=addr, prefixlen=plen)
    for r in routes:
        kw = {"dst_len": r["dst_len"], "oif": dst, "table": MAIN_TABLE, "proto": r["proto"]}
        for attr, key in (("RTA_DST", "dst"), ("RTA_GATEWAY", "gateway"),
                          ("RTA_PRIORITY", "priority"), ("RTA_PREFSRC", "prefsrc")):
            v = r.get_attr(attr)
            if v is not None:
                kw[key] = v
        try:
            ipr.route("replace", **kw)
        except Exception:  # noqa: BLE001 - a route the kernel re-created itself, or invalid now
            pass


def add_veth(ipr: Any, name: str, peer: str, what: str) -> None:
    """Create the veth pair ``name``/``peer``; pyroute2's error becomes a NetmapError
    with its errno (``what`` says which pair, for the message)."""
    try:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer})
    except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError, with the errno
        code = getattr(e, "code", errno.EIO)
        raise NetmapError(code, f"cannot create {what} {name}/{peer}: "
                                f"{os.strerror(code)}") from None


class HostStack:
    """This process's handle on an interface's host-stack veth pair."""

    def __init__(self, app_if: str, stack_if: str, program: Any) -> None:
        self.app_if = app_if
        self.stack_if = stack_if
        #: the XDP program on the application's end (AF_XDP engine), else None
        self.program = program

    @classmethod
    def setup(cls, ifname: str, record: dict) -> HostStack:
        """Create the pair, hand ``ifname``'s addresses and routes to the stack's end."""
        app, stack = names(ifname)
        with netlink() as ipr:
            nic = link_index(ipr, ifname)
            if nic is None:
                raise NetmapError(errno.ENXIO, f"no such interface {ifname!r}")
            if link_index(ipr, stack) is not None:
                _restore(ipr, ifname)  # left by a port whose process died
            add_veth(ipr, app, stack, f"{ifname}: the host-stack veth pair")
            record["host"] = {"app": app, "stack": stack}
            s_idx, a_idx = link_index(ipr, stack), link_index(ipr, app)
            assert s_idx is not None and a_idx is not None  # just created
            ipr.link("set", index=s_idx, address=":".join(f"{b:02x}" for b in mac(ifname)),
                     mtu=mtu(ifname))
            ipr.link("set", index=a_idx, mtu=mtu(ifname))
            tx_checksum_off(stack)
            ipr.link("set", index=a_idx, state="up")
            ipr.link("set", index=s_idx, state="up")
            move_l3(ipr, nic, s_idx)
        program = None
        if record["engine"] == "packet":
            record["host"]["rp_filter"] = _rp_filter(ifname, "1")
        if record["engine"] == "xdp":
            from . import bpf, xdp_attach

            program = bpf.XskProgram(max_queues=1)
            try:
                xdp_attach.attach(a_idx, program.fd)
            except BaseException:
                program.close()
                raise
        return cls(app, stack, program)

    @staticmethod
    def undo(record: dict) -> None:
        """Give the addresses and routes back to the interface and delete the pair."""
        with netlink() as ipr:
            _restore(ipr, record["ifname"])
        old = record["host"].get("rp_filter")
        if old is not None:
            _rp_filter(record["ifname"], old)
        record["host"] = None

    def close(self) -> None:
        if self.program is not None:
            self.program.close()  # the program went with the veth pair
            self.program = None


def _rp_filter(ifname: str, value: str) -> str:
    """Set the interface's ``rp_filter``; returns the previous value."""
    path = f"/proc/sys/net/ipv4/conf/{ifname}/rp_filter"
    with open(path) as f:
        old = f.read().strip()
    with open(path, "w") as f:
        f.write(value)
    return old


def _restore(ipr: Any, ifname: str) -> None:
    app, stack = names(ifname)
    nic, s_idx = link_index(ipr, ifname), link_index(ipr, stack)
    if s_idx is None:
        return
    if nic is not None:
        move_l3(ipr, s_idx, nic)
    ipr.link("del", index=s_idx)  # takes its peer with it
