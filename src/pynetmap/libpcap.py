"""libpcap through ctypes: live captures that send and receive in batches.

The ``pcap`` engine of NIC ports (:mod:`pynetmap.pcap_queue`) is built on
this, the same code on Linux (Debian's ``libpcap0.8``), macOS and FreeBSD.
(This is the capture *library*; :mod:`pynetmap.pcap` reads and writes pcap
*files*.)

libpcap has no batch call on these systems, so the batches are made here:

* **TX**: one ``pcap_inject`` per frame (no ``pcap_sendqueue`` outside
  Npcap).  The caller computes every frame's address in the buffer pool
  with NumPy; :meth:`Capture.inject_many` then runs the C calls from
  ``map`` -- the loop is in C, each call a ctypes foreign call (the
  per-frame cost that remains, with the system call libpcap makes).
* **RX**: ``pcap_dispatch`` calls a handler per packet.  A Python handler
  would be a Python call per packet; ours is libpcap's own ``pcap_dump``,
  writing pcap records into a memory buffer (a ``FILE`` from libc's
  ``fmemopen``), so one ``pcap_dispatch`` takes a whole batch in C.
  :meth:`Capture.dispatch` then finds the records and returns their
  offsets and lengths; the caller copies the frames with one NumPy gather.
  Finding the records reads each record's length (they are variable-sized,
  so record i+1 is found only after record i): one small Python step per
  packet, the only one on the receive path.

The library is found per OS (:data:`CANDIDATES`, or ``$PYNETMAP_LIBPCAP``).
Windows (Npcap's ``wpcap.dll``, which has no ``fmemopen`` in its C runtime
and no selectable fd) is not handled here: :func:`load` refuses there, and
:mod:`pynetmap.windows.npcap` loads Npcap's DLLs itself, with this module's
declarations, and receives through Npcap's own calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat, takewhile
from typing import Any

import numpy as np

from . import records
from .errors import NetmapError

#: where libpcap is looked for, per ``sys.platform`` prefix, before ctypes.util's search
CANDIDATES: dict[str, tuple[str, ...]] = {
    "linux": ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so"),
    "darwin": ("/usr/lib/libpcap.A.dylib", "libpcap.dylib"),
    "freebsd": ("libpcap.so", "libpcap.so.8"),
}
PCAP_ERRBUF_SIZE = 256
PCAP_D_IN = 1
PCAP_IF_UP = 0x2
PCAP_WARNING = 1
#: record header ``pcap_dump`` writes before each packet: ts_sec, ts_usec, caplen, len
RECORD = struct.Struct("=IIII")
#: where a record's length is, for :func:`pynetmap.records.find`
_DUMP = records.Layout(caplen=8, size=RECORD.size)
#: errors after which a frame is sent again later: the device's queue is full
_RETRY = (errno.ENOBUFS, errno.EAGAIN, errno.EINTR)
_SEEK_SET = 0
_IONBF = 2

_lib: ctypes.CDLL | None = None
_libc: ctypes.CDLL | None = None

P = ctypes.c_void_p
_PROTOS: dict[str, tuple[type | None, list[type]]] = {
    "pcap_create": (P, [ctypes.c_char_p, ctypes.c_char_p]),
    "pcap_set_snaplen": (ctypes.c_int, [P, ctypes.c_int]),
    "pcap_set_promisc": (ctypes.c_int, [P, ctypes.c_int]),
    "pcap_set_timeout": (ctypes.c_int, [P, ctypes.c_int]),
    "pcap_set_immediate_mode": (ctypes.c_int, [P, ctypes.c_int]),
    "pcap_set_buffer_size": (ctypes.c_int, [P, ctypes.c_int]),
    "pcap_activate": (ctypes.c_int, [P]),
    "pcap_setnonblock": (ctypes.c_int, [P, ctypes.c_int, ctypes.c_char_p]),
    "pcap_setdirection": (ctypes.c_int, [P, ctypes.c_int]),
    "pcap_get_selectable_fd": (ctypes.c_int, [P]),
    "pcap_geterr": (ctypes.c_char_p, [P]),
    "pcap_statustostr": (ctypes.c_char_p, [ctypes.c_int]),
    "pcap_inject": (ctypes.c_int, [P, P, ctypes.c_size_t]),
    "pcap_dispatch": (ctypes.c_int, [P, ctypes.c_int, P, P]),
    "pcap_dump_fopen": (P, [P, P]),
    "pcap_dump_flush": (ctypes.c_int, [P]),
    "pcap_dump_close": (None, [P]),
    "pcap_stats": (ctypes.c_int, [P, P]),
    "pcap_close": (None, [P]),
    "pcap_lib_version": (ctypes.c_char_p, []),
    "pcap_findalldevs": (ctypes.c_int, [P, ctypes.c_char_p]),
    "pcap_freealldevs": (None, [P]),
}
_LIBC_PROTOS: dict[str, tuple[type | None, list[type]]] = {
    "fmemopen": (P, [P, ctypes.c_size_t, ctypes.c_char_p]),
    "setvbuf": (ctypes.c_int, [P, P, ctypes.c_int, ctypes.c_size_t]),
    "fseek": (ctypes.c_int, [P, ctypes.c_long, ctypes.c_int]),
    "ftell": (ctypes.c_long, [P]),
    "fclose": (ctypes.c_int, [P]),
}


def _candidates() -> list[str]:
    env = os.environ.get("PYNETMAP_LIBPCAP")
    if env:
        return [env]
    names = next((v for k, v in CANDIDATES.items() if sys.platform.startswith(k)), ())
    found = ctypes.util.find_library("pcap")
    return [*names, *([found] if found else [])]


def load(path: str | None = None) -> ctypes.CDLL:
    """The libpcap library (loaded once), with the prototypes this module calls.

    ``NetmapError(ENOENT)`` names what was tried and how to install it.
    Refused on Windows (``EOPNOTSUPP``): the receive path needs the C
    library's ``fmemopen``, which Windows' C runtime lacks, and there is no
    ``CDLL(None)`` to find it in; Npcap is reached through
    :mod:`pynetmap.windows.npcap` instead.
    """
    global _lib, _libc
    if _lib is not None and path is None:
        return _lib
    if sys.platform == "win32":
        raise NetmapError(errno.EOPNOTSUPP, "the pcap engine needs a C library with "
                          "fmemopen, which Windows lacks: NIC ports on Windows use the "
                          "npcap engine (engine='npcap', the default there)")
    tried = [path] if path else _candidates()
    lib = None
    for name in tried:
        try:
            lib = ctypes.CDLL(name)  # no use_errno: it costs a quarter of a pcap_inject call
            break
        except OSError:
            continue
    if lib is None:
        raise NetmapError(errno.ENOENT, "libpcap not found (tried "
                          f"{', '.join(tried) or 'nothing for ' + sys.platform}); install it "
                          "(Debian: apt-get install libpcap0.8) or set PYNETMAP_LIBPCAP")
    for fn, (res, args) in _PROTOS.items():
        f = getattr(lib, fn)
        f.restype, f.argtypes = res, args
    libc = ctypes.CDLL(None, use_errno=True)
    for fn, (res, args) in _LIBC_PROTOS.items():
        f = getattr(libc, fn)
        f.restype, f.argtypes = res, args
    _lib, _libc = lib, libc
    return lib


def version() -> str:
    """``pcap_lib_version()``: e.g. ``libpcap version 1.10.3 (with TPACKET_V3)``."""
    return load().pcap_lib_version().decode()


# -- devices --------------------------------------------------------------------------------

class _Sockaddr(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_ubyte * 20)]


class _Addr(ctypes.Structure):
    pass


_Addr._fields_ = [("next", ctypes.POINTER(_Addr)), ("addr", ctypes.POINTER(_Sockaddr)),
                  ("netmask", P), ("broadaddr", P), ("dstaddr", P)]


class _If(ctypes.Structure):
    pass


_If._fields_ = [("next", ctypes.POINTER(_If)), ("name", ctypes.c_char_p),
                ("description", ctypes.c_char_p), ("addresses", ctypes.POINTER(_Addr)),
                ("flags", ctypes.c_uint32)]

AF_LINK = 18  # BSD and macOS: struct sockaddr_dl


@dataclass(frozen=True)
class Device:
    """What libpcap knows about an interface (``pcap_findalldevs``)."""

    name: str
    up: bool
    mac: bytes | None  #: from its AF_LINK address (BSD, macOS); None where there is none
    mtu: int | None  #: asked of the kernel outside Linux (``SIOCGIFMTU``); None if it refuses


def _link_mac(sa: bytes) -> bytes | None:
    """The hardware address of a BSD ``sockaddr_dl`` (``sa_len`` first, then family)."""
    if len(sa) < 8 or sa[1] != AF_LINK:
        return None
    nlen, alen = sa[5], sa[6]
    mac = sa[8 + nlen:8 + nlen + alen]
    return mac if alen == 6 and len(mac) == 6 else None


#: ``_IOWR('i', 51, struct ifreq)`` on macOS and FreeBSD (a 32-byte ifreq, ifr_mtu at 16)
_BSD_SIOCGIFMTU = 0xC0206933


def _bsd_mtu(name: str) -> int | None:
    """The MTU by ``SIOCGIFMTU`` with BSD's request number (not Linux's: there ifinfo asks)."""
    import fcntl
    import socket

    req = bytearray(name.encode()[:15].ljust(32, b"\0"))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), _BSD_SIOCGIFMTU, req, True)
    except OSError:
        return None
    return int.from_bytes(req[16:20], sys.byteorder, signed=True)


def all_devices(lib: Any) -> Iterator[_If]:
    """libpcap's (or Npcap's) device list, ``pcap_findalldevs``: each entry while the
    walk lasts; the list is freed when the walk ends or is left."""
    head = ctypes.POINTER(_If)()
    err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
    if lib.pcap_findalldevs(ctypes.byref(head), err) != 0:
        raise NetmapError(errno.EIO, f"pcap_findalldevs: {err.value.decode(errors='replace')}")
    try:
        node = head
        while node:
            yield node.contents
            node = node.contents.next
    finally:
        lib.pcap_freealldevs(head)


def device(name: str) -> Device:
    """The device ``name``; ``NetmapError(ENXIO)`` when libpcap does not list it."""
    for d in all_devices(load()):
        if d.name.decode() == name:
            mac = None
            a = d.addresses
            while a and mac is None:
                if a.contents.addr:
                    mac = _link_mac(bytes(a.contents.addr.contents.raw))
                a = a.contents.next
            return Device(name, bool(d.flags & PCAP_IF_UP), mac, _bsd_mtu(name))
    raise NetmapError(errno.ENXIO, f"no such interface {name!r}")


# -- records -------------------------------------------------------------------------------

def find_records(buf: np.ndarray, count: int, used: int) -> tuple[np.ndarray, np.ndarray]:
    """(data offsets, lengths) of the ``count`` pcap records in ``buf[:used]``
    (:func:`pynetmap.records.find`: a few NumPy calls per run of one frame size).

    Exactly ``count`` records must end exactly at ``used`` (what ``pcap_dispatch``
    reported and ``pcap_dump`` wrote); anything else raises EIO.
    """
    chain = records.find(buf, used, _DUMP, count)
    if len(chain.start) < count:
        raise NetmapError(errno.EIO, f"pcap record {len(chain.start)} at {chain.end} runs "
                          f"past the {used} bytes written")
    if chain.end != used:
        raise NetmapError(errno.EIO, f"{count} pcap records end at {chain.end}, not at {used}")
    return chain.start + RECORD.size, chain.caplen


# -- a live capture -------------------------------------------------------------------------

class Capture:
    """One live capture on an interface: immediate, non-blocking, incoming only.

    ``snaplen`` bounds a received frame; ``buffer_bytes`` is the kernel
    buffer, which holds frames while the application is busy; ``batch`` is
    the most packets one :meth:`dispatch` returns (it sizes the record
    buffer, so that it never fills: ``pcap_dump`` would drop silently).
    """

    def __init__(self, ifname: str, snaplen: int, buffer_bytes: int, batch: int,
                 promisc: bool = True) -> None:
        lib = load()
        self.lib = lib
        self.ifname = ifname
        self._p: int | None = None
        self._dumper: int | None = None
        err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        p = lib.pcap_create(ifname.encode(), err)
        if not p:
            raise NetmapError(errno.ENXIO, f"pcap_create({ifname}): "
                              f"{err.value.decode(errors='replace')}")
        self._p = p
        try:
            self._setup(snaplen, buffer_bytes, batch, promisc, err)
        except BaseException:
            self.close()
            raise

    def _setup(self, snaplen: int, buffer_bytes: int, batch: int, promisc: bool,
               err: ctypes.Array) -> None:
        lib, p = self.lib, self._p
        lib.pcap_set_snaplen(p, snaplen)
        lib.pcap_set_promisc(p, int(promisc))
        lib.pcap_set_timeout(p, 1)  # ms; immediate mode makes it moot where honoured
        lib.pcap_set_immediate_mode(p, 1)
        lib.pcap_set_buffer_size(p, buffer_bytes)
        rc = lib.pcap_activate(p)
        if rc < 0:
            raise self._activate_error(rc)
        if lib.pcap_setnonblock(p, 1, err) < 0:
            raise NetmapError(errno.EIO, f"pcap_setnonblock on {self.ifname}: "
                              f"{err.value.decode(errors='replace')}")
        # our own transmissions must not come back on the RX ring (netmap's NIC RX ring
        # holds received traffic only); libpcap refuses this where it cannot do it
        if lib.pcap_setdirection(p, PCAP_D_IN) < 0:
            raise NetmapError(errno.EOPNOTSUPP, f"pcap_setdirection on {self.ifname}: "
                              f"{self._geterr()}")
        self.fd = lib.pcap_get_selectable_fd(p)
        if self.fd < 0:
            raise NetmapError(errno.EOPNOTSUPP, f"{self.ifname}: libpcap has no selectable "
                              "fd for this device")
        # the record buffer: every packet of a batch as a pcap record, with the largest
        # frame's length of slack after the last one (the NumPy gather reads whole rows)
        self.snaplen = snaplen
        self.batch = batch
        size = batch * (RECORD.size + snaplen)
        self.records = np.zeros(size + snaplen + 64, np.uint8)
        assert _libc is not None  # loaded with the library
        f = _libc.fmemopen(self.records.ctypes.data, size + 1, b"w")
        if not f:
            raise NetmapError(ctypes.get_errno() or errno.ENOMEM, "fmemopen failed")
        _libc.setvbuf(f, None, _IONBF, 0)  # each write straight into self.records
        d = lib.pcap_dump_fopen(p, f)
        if not d:
            _libc.fclose(f)
            raise NetmapError(errno.EIO, f"pcap_dump_fopen: {self._geterr()}")
        self._file, self._dumper = f, d
        self._handler = ctypes.cast(lib.pcap_dump, P)
        self._inject = lib.pcap_inject
        self._handle = P(p)  # converted once, not per call
        self._dispatch = lib.pcap_dispatch

    def _geterr(self) -> str:
        return (self.lib.pcap_geterr(self._p) or b"").decode(errors="replace")

    def _activate_error(self, rc: int) -> NetmapError:
        detail = self._geterr() or self.lib.pcap_statustostr(rc).decode()
        if "ermission" in detail or "not permitted" in detail:
            return NetmapError(errno.EPERM, f"libpcap on {self.ifname}: {detail} (run as "
                               "root, or grant CAP_NET_RAW / access to /dev/bpf*)")
        if "No such device" in detail or "doesn't exist" in detail:
            return NetmapError(errno.ENXIO, f"no such interface {self.ifname!r}")
        return NetmapError(errno.EIO, f"pcap_activate on {self.ifname}: {detail}")

    # -- data path ---------------------------------------------------------------------------
    def inject_many(self, addrs: list[int], lens: list[int]) -> int:
        """Send frame k (``lens[k]`` bytes at address ``addrs[k]``); how many were sent.

        Stops at the first frame libpcap refuses: a full device queue
        (``ENOBUFS``/``EAGAIN``) leaves the rest for the caller to retry;
        another error raises ``NetmapError`` when nothing could be sent.
        """
        done = takewhile((-1).__lt__, map(self._inject, repeat(self._handle), addrs, lens))
        n = len(list(done))  # the loop runs in C: map, takewhile, list
        if n == 0 and addrs:
            msg = self._geterr()  # libpcap's "send: <strerror(errno)>"
            if not any(os.strerror(e) in msg for e in _RETRY):
                raise NetmapError(errno.EIO, f"pcap_inject on {self.ifname}: {msg}")
        return n

    def dispatch(self, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Take up to ``limit`` (<= ``batch``) received packets: (offsets, lengths).

        Packet k is ``records[offsets[k]:offsets[k] + lengths[k]]`` until the
        next call; a frame longer than ``snaplen`` comes cut to it.
        """
        assert _libc is not None
        f = self._file
        _libc.fseek(f, 0, _SEEK_SET)
        k = self._dispatch(self._p, limit, self._handler, self._dumper)
        if k < 0:
            raise NetmapError(errno.EIO, f"pcap_dispatch on {self.ifname}: {self._geterr()}")
        return find_records(self.records, k, _libc.ftell(f))

    def stats(self) -> dict[str, int]:
        """libpcap's counters: packets received, dropped by the buffer, by the interface."""
        buf = (ctypes.c_uint * 8)()
        if self.lib.pcap_stats(self._p, buf) < 0:
            raise NetmapError(errno.EIO, f"pcap_stats on {self.ifname}: {self._geterr()}")
        return {"packets": buf[0], "drops": buf[1], "ifdrops": buf[2]}

    def close(self) -> None:
        """Close the dump stream and the capture (idempotent)."""
        if self._dumper is not None:
            self.lib.pcap_dump_close(self._dumper)  # fcloses the fmemopen stream
            self._dumper = None
        if self._p is not None:
            self.lib.pcap_close(self._p)
            self._p = None
