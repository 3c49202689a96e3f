"""Attach and detach an XDP program on an interface, through netlink (pyroute2).

An XDP program attached with netlink (``IFLA_XDP``) is not tied to any file
descriptor: it stays on the interface after the process that attached it dies.  A
pynetmap process that crashed therefore leaves its program behind, redirecting the
interface's queues into an XSKMAP that nobody fills any more.  :func:`attach` detects
that case -- the program is named :data:`~pynetmap.linux.bpf.PROG_NAME` and its map
``pnm_xsk_<pid>`` names a process that no longer exists -- and replaces it; any other
program (someone else's, or a live pynetmap's) is left alone and reported as ``EBUSY``.

Limit: the owner pid is only meaningful in the pid namespace that attached the program;
a program attached from another pid namespace may look stale.

Everything acts in the calling thread's network namespace.  pyroute2 is imported here,
lazily, so ``import pynetmap`` does not need it.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

from ..errors import NetmapError
from ..osl import process_alive
from . import bpf
from .ifinfo import if_name, net_error

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4

#: Attach modes: native driver hook, generic (skb) hook, NIC offload.
MODE_FLAGS = {"drv": XDP_FLAGS_DRV_MODE, "skb": XDP_FLAGS_SKB_MODE, "hw": XDP_FLAGS_HW_MODE}
# IFLA_XDP_ATTACHED (as pyroute2 decodes it, or raw) -> our mode names
_ATTACHED = {"xdp": "drv", "xdpgeneric": "skb", "xdpoffload": "hw", "xdpmulti": "multi",
             1: "drv", 2: "skb", 3: "hw", 4: "multi"}
_PROG_ID_ATTRS = {"drv": "IFLA_XDP_DRV_PROG_ID", "skb": "IFLA_XDP_SKB_PROG_ID",
                  "hw": "IFLA_XDP_HW_PROG_ID"}


class _LinkError(OSError):
    """A netlink request failed; ``errno`` is the kernel's."""


def _rtnl(op: str, ifindex: int, **kw: Any) -> Any:
    """``IPRoute().link(op, index=ifindex, **kw)``, netlink errors raised as _LinkError."""
    try:
        from pyroute2 import IPRoute, NetlinkError
    except ImportError:
        raise NetmapError(errno.ENOSYS, "attaching XDP programs needs pyroute2 "
                                        "(pip install pyroute2)") from None
    with IPRoute() as ipr:
        try:
            return ipr.link(op, index=ifindex, **kw)
        except NetlinkError as e:
            raise _LinkError(e.code, os.strerror(e.code)) from None


@dataclass(frozen=True)
class AttachedProg:
    """The XDP program attached to an interface."""

    prog_id: int
    mode: str  # "drv", "skb", "hw" or "multi"
    name: str  # "" when the program could not be opened
    owner_pid: int | None  # the pid recorded by a pynetmap program, else None

    @property
    def ours(self) -> bool:
        """Loaded by some pynetmap process (by its name)."""
        return self.name == bpf.PROG_NAME

    @property
    def stale(self) -> bool:
        """Loaded by a pynetmap process that no longer exists."""
        return (self.ours and self.owner_pid is not None and self.owner_pid != os.getpid()
                and not process_alive(self.owner_pid))


def _describe(prog_id: int, mode: str) -> AttachedProg:
    try:
        fd = bpf.prog_fd_by_id(prog_id)
    except NetmapError:
        return AttachedProg(prog_id, mode, "", None)
    try:
        info = bpf.prog_info(fd)
        owner = None
        if info.name == bpf.PROG_NAME and info.map_ids:
            mfd = bpf.map_fd_by_id(info.map_ids[0])
            try:
                mname = bpf.map_info(mfd).name
            finally:
                os.close(mfd)
            if mname.startswith(bpf.MAP_PREFIX) and mname[len(bpf.MAP_PREFIX):].isdigit():
                owner = int(mname[len(bpf.MAP_PREFIX):])
    except NetmapError:
        return AttachedProg(prog_id, mode, "", None)
    finally:
        os.close(fd)
    return AttachedProg(prog_id, mode, info.name, owner)


def _link_error(e: OSError, what: str, ifindex: int) -> NetmapError:
    code = e.errno or errno.EIO
    try:
        name = if_name(ifindex)
    except NetmapError:
        name = str(ifindex)
    return net_error(code, f"{what} on {name}", name)


def query(ifindex: int) -> AttachedProg | None:
    """The program attached to interface ``ifindex``, or None."""
    try:
        xdp = _rtnl("get", ifindex)[0].get_attr("IFLA_XDP")
    except _LinkError as e:
        raise _link_error(e, "XDP query", ifindex) from None
    if xdp is None:
        return None
    mode = _ATTACHED.get(xdp.get_attr("IFLA_XDP_ATTACHED"))
    if mode is None:
        return None
    prog_id = xdp.get_attr("IFLA_XDP_PROG_ID")
    if not prog_id:  # several modes at once: report the first
        prog_id = next(filter(None, (xdp.get_attr(a) for a in _PROG_ID_ATTRS.values())), 0)
    return _describe(prog_id, mode)


def _set(ifindex: int, fd: int, flags: int, expected_fd: int | None = None) -> None:
    attrs: list[tuple[str, int]] = [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]
    if expected_fd is not None:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    _rtnl("set", ifindex, xdp={"attrs": attrs})


def _detach_exactly(ifindex: int, current: AttachedProg) -> None:
    """Detach ``current``, and nothing else if the interface changed meanwhile."""
    old_fd = bpf.prog_fd_by_id(current.prog_id)
    try:
        flags = MODE_FLAGS.get(current.mode, 0) | XDP_FLAGS_REPLACE
        _set(ifindex, -1, flags, expected_fd=old_fd)
    except _LinkError as e:
        if e.errno == errno.EEXIST:
            raise NetmapError(errno.EBUSY, f"XDP program {current.prog_id} was replaced "
                                           "by someone else meanwhile") from None
        raise _link_error(e, "XDP detach", ifindex) from None
    finally:
        os.close(old_fd)


def attach(ifindex: int, prog_fd: int, mode: str = "auto", *,
           replace_stale: bool = True) -> str:
    """Attach ``prog_fd`` to interface ``ifindex``; returns the mode obtained.

    ``mode`` is ``"drv"`` (native), ``"skb"`` (generic) or ``"hw"``; ``"auto"`` tries
    native and falls back to generic.  The attach uses ``XDP_FLAGS_UPDATE_IF_NOEXIST``,
    so it never silently replaces a program: a stale pynetmap program is detached first
    (when ``replace_stale``), anything else raises ``EBUSY``.  Attaching the program that
    is already attached is a no-op.
    """
    if mode != "auto" and mode not in MODE_FLAGS:
        raise ValueError(f"XDP mode must be auto, drv, skb or hw, not {mode!r}")
    current = query(ifindex)
    if current is not None:
        if current.prog_id == bpf.prog_info(prog_fd).id:
            return current.mode
        if not (replace_stale and current.stale):
            name = if_name(ifindex)
            who = f"'{current.name}'" if current.name else "(unknown)"
            if current.ours:
                who += f" of pynetmap pid {current.owner_pid}, still running"
            raise NetmapError(errno.EBUSY, f"{name} already has XDP program {who} "
                                           f"(id {current.prog_id}); remove it with: "
                                           f"ip link set dev {name} xdp off")
        _detach_exactly(ifindex, current)
    tries = ("drv", "skb") if mode == "auto" else (mode,)
    for m in tries:
        try:
            _set(ifindex, prog_fd, MODE_FLAGS[m] | XDP_FLAGS_UPDATE_IF_NOEXIST)
            return m
        except _LinkError as e:
            code = e.errno
            if m != tries[-1] and code in (errno.EOPNOTSUPP, errno.EINVAL):
                continue
            if code == errno.EBUSY:
                raise NetmapError(errno.EBUSY, f"another XDP program was attached to "
                                               f"{if_name(ifindex)} meanwhile") from None
            if code == errno.EOPNOTSUPP:
                raise NetmapError(code, f"{if_name(ifindex)}: XDP mode {m!r} is not "
                                        "supported by this driver (try 'skb')") from None
            raise _link_error(e, f"XDP attach ({m})", ifindex) from None
    raise AssertionError("unreachable")


def detach(ifindex: int, prog_id: int | None = None) -> None:
    """Remove the XDP program from ``ifindex``; with ``prog_id``, only if it is that one.

    Nothing attached is not an error.  With ``prog_id`` the removal is atomic
    (``XDP_FLAGS_REPLACE``): a program someone else attached meanwhile stays, and
    this raises ``EBUSY``.
    """
    current = query(ifindex)
    if current is None:
        return
    if prog_id is not None:
        if current.prog_id != prog_id:
            raise NetmapError(errno.EBUSY, f"{if_name(ifindex)} runs XDP program "
                                           f"{current.prog_id}, not {prog_id}; left alone")
        _detach_exactly(ifindex, current)
        return
    try:
        _set(ifindex, -1, MODE_FLAGS.get(current.mode, 0))
    except _LinkError as e:
        raise _link_error(e, "XDP detach", ifindex) from None
