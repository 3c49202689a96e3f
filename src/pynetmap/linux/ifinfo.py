"""Facts about a network interface, and the one-line errors every Linux port raises.

Everything is asked of the kernel with ioctls on a socket created in the calling
thread's network namespace, never read from ``/sys/class/net``: sysfs shows the
namespace it was mounted in, which is wrong after ``setns()`` into a test namespace.

Errors are :class:`~pynetmap.errors.NetmapError` with the errno netmap would return
(``ENXIO`` for a missing interface, as in netmap's ``NIOCREGIF``) and a message that
names the cause and the fix.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct

from ..errors import NetmapError

IFNAMSIZ = 16
SIOCGIFFLAGS = 0x8913
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
SIOCGIFINDEX = 0x8933
SIOCETHTOOL = 0x8946
ETHTOOL_GCHANNELS = 0x3C
IFF_UP = 0x1
IFF_RUNNING = 0x40

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
CAP_BPF = 39
_CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW",
              CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_BPF: "CAP_BPF"}

# What to tell the user for the errnos whose fix does not depend on the call.
_HINTS = {
    errno.EPERM: "needs CAP_NET_ADMIN (run as root or grant it)",
    errno.EACCES: "needs CAP_NET_ADMIN (run as root or grant it)",
    errno.ENETDOWN: "the interface is down (ip link set IFNAME up)",
    errno.ENOMEM: "out of locked memory (raise RLIMIT_MEMLOCK: ulimit -l, or grant CAP_IPC_LOCK)",
    errno.ENOBUFS: "out of locked memory (raise RLIMIT_MEMLOCK: ulimit -l, or grant CAP_IPC_LOCK)",
    errno.EAFNOSUPPORT: "the kernel lacks this socket family (CONFIG_XDP_SOCKETS / CONFIG_PACKET)",
}


def net_error(err: int, what: str, ifname: str | None = None) -> NetmapError:
    """``NetmapError(err, "WHAT: cause (fix)")`` -- one line naming the cause and the fix."""
    if err in (errno.ENODEV, errno.ENXIO) and ifname is not None:
        return NetmapError(errno.ENXIO, f"no such interface {ifname!r}")
    hint = _HINTS.get(err, os.strerror(err))
    if ifname is not None:
        hint = hint.replace("IFNAME", ifname)
    return NetmapError(err, f"{what}: {hint}")


class _Channels(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in (
        "cmd", "max_rx", "max_tx", "max_other", "max_combined",
        "rx_count", "tx_count", "other_count", "combined_count")]


class _IfreqData(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * IFNAMSIZ), ("data", ctypes.c_void_p),
                ("pad", ctypes.c_char * 16)]


def _ifreq(ifname: str) -> bytearray:
    raw = ifname.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b"\0" in raw:
        raise NetmapError(errno.ENXIO, f"no such interface {ifname!r}")
    return bytearray(raw.ljust(40, b"\0"))


def _ioctl(ifname: str, request: int, buf: bytearray | ctypes.Structure) -> None:
    # AF_UNIX: always available, and its unknown ioctls fall through to the device ioctls
    # of the socket's (= the calling thread's) network namespace.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s.fileno(), request, buf, True)
        except OSError as e:
            raise net_error(e.errno or errno.EIO, f"ioctl on {ifname}", ifname) from None


def if_index(ifname: str) -> int:
    """The interface's index in the calling thread's network namespace."""
    buf = _ifreq(ifname)
    _ioctl(ifname, SIOCGIFINDEX, buf)
    return struct.unpack_from("i", buf, IFNAMSIZ)[0]


def if_name(ifindex: int) -> str:
    """The name of interface number ``ifindex``."""
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        raise NetmapError(errno.ENXIO, f"no such interface index {ifindex}") from None


def mtu(ifname: str) -> int:
    """The interface's MTU (L3 bytes; a frame carries 14 more, or 18 with a VLAN tag)."""
    buf = _ifreq(ifname)
    _ioctl(ifname, SIOCGIFMTU, buf)
    return struct.unpack_from("i", buf, IFNAMSIZ)[0]


def mac(ifname: str) -> bytes:
    """The interface's hardware address (6 bytes for Ethernet)."""
    buf = _ifreq(ifname)
    _ioctl(ifname, SIOCGIFHWADDR, buf)
    return bytes(buf[IFNAMSIZ + 2:IFNAMSIZ + 8])


def is_up(ifname: str) -> bool:
    """True when the interface is administratively up (``ip link set IF up``)."""
    buf = _ifreq(ifname)
    _ioctl(ifname, SIOCGIFFLAGS, buf)
    return bool(struct.unpack_from("H", buf, IFNAMSIZ)[0] & IFF_UP)


def require_up(ifname: str) -> int:
    """The interface's index; ``ENXIO`` if it does not exist, ``ENETDOWN`` if it is down."""
    index = if_index(ifname)
    if not is_up(ifname):
        raise NetmapError(errno.ENETDOWN, f"interface {ifname} is down (ip link set {ifname} up)")
    return index


def queue_counts(ifname: str) -> tuple[int, int]:
    """(RX queues, TX queues) in use, as ``ethtool -l`` counts them (combined + dedicated).

    AF_XDP binds one socket per RX/TX queue pair, so this is how many netmap rings a
    NIC port gets.  Drivers without ``get_channels`` have one queue of each.
    """
    ch = _Channels(cmd=ETHTOOL_GCHANNELS)
    _ifreq(ifname)  # validates the name
    req = _IfreqData(name=ifname.encode(), data=ctypes.addressof(ch))
    try:
        _ioctl(ifname, SIOCETHTOOL, req)
    except NetmapError as e:
        if e.errno != errno.EOPNOTSUPP:
            raise
        return 1, 1
    return (max(1, ch.combined_count + ch.rx_count), max(1, ch.combined_count + ch.tx_count))


def has_capability(cap: int) -> bool:
    """True when the calling process holds ``cap`` in its effective set."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def require_capability(*caps: int, what: str = "this operation") -> None:
    """Raise ``EPERM`` naming the missing capabilities (``CAP_BPF`` is met by CAP_SYS_ADMIN)."""
    missing = [c for c in caps if not has_capability(c)
               and not (c == CAP_BPF and has_capability(CAP_SYS_ADMIN))]
    if missing:
        names = " and ".join(_CAP_NAMES.get(c, f"capability {c}") for c in missing)
        raise NetmapError(errno.EPERM, f"{what} needs {names} (run as root or grant it)")
