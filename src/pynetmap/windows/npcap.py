"""Npcap (Windows): the DLLs, and an interface as a netmap ring pair (the ``npcap`` engine).

Npcap is the user's install; it is loaded from ``%SystemRoot%\\System32\\Npcap``
by absolute path (Python no longer searches ``PATH`` for DLLs) -- ``Packet.dll``
first, then ``wpcap.dll``, which needs it -- and refused unless
``pcap_lib_version()`` says Npcap (WinPcap lacks the calls used here).  The
libpcap API is declared by :mod:`pynetmap.libpcap`'s prototypes; the Npcap
extensions here.

:class:`NpcapQueue`, per ring pair:

* **TX**: the slots of a txsync become one send queue (NumPy-built pcap
  records, :mod:`.sendqueue`) and one ``pcap_sendqueue_transmit``.
* **RX**: Packet.dll's ``PacketReceivePacket`` on the capture's adapter
  fills a buffer with many ``bpf_hdr`` records (what libpcap's own read
  does before calling back per packet); the buffer is parsed in NumPy
  passes (:mod:`pynetmap.bsd.bpfbuf`) and copied into the ring's buffers.
  The capture is non-blocking and in immediate mode; a waiter sleeps on
  ``pcap_getevent``'s event, then the next rxsync drains.  The host's own
  transmissions, which Npcap also captures, are filtered out by MAC.
* **host TX ring** (``netmap:NAME^/T``): a second capture in Npcap's
  send-to-RX mode (``pcap_setmode(p, MODE_SENDTORX)``, Npcap >= 1.83):
  what it transmits is indicated up to the stack as received.

Refused, one line each, because Npcap cannot do them per handle: taking
received traffic away from the stack (it keeps its copy; the system-wide
``BlockRxAdapters`` registry value is the alternative) and a host RX ring
(the stack's transmissions still reach the wire, so it could only be a
copy).  None of this has run on Windows.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

import numpy as np

from ..bsd import bpfbuf
from ..constants import NR_FORWARD
from ..errors import NetmapError
from ..kring import KRing, clear_buf_changed, rx_free_rows, scatter
from ..nic_tx import tx_batch
from ..region import Region
from ..ring import Ring
from . import names
from .sendqueue import SendQueueBuilder, frames_sent

MODE_CAPT = 0
MODE_SENDTORX = 0x100  # Npcap >= 1.83: frames sent on this handle go up to the stack
PCAP_ERRBUF_SIZE = 256
#: bytes one PacketReceivePacket may return (the driver's buffer is larger)
READ_BYTES = 1 << 20

HOST_RX_REFUSED = ("the host RX ring is not available with Npcap: it cannot take what the "
                   "stack sends away from the wire, so the ring would only be a copy; open "
                   "the host TX ring alone (NAME^/T) to inject into the stack, and capture "
                   "the stack's traffic on another host")
FORWARD_REFUSED = ("NR_FORWARD needs received traffic taken away from the stack, which Npcap "
                   "cannot do per handle (the stack keeps its copy); the only way is "
                   "system-wide: the BlockRxAdapters registry value of the npcap driver")

P = ctypes.c_void_p
_NPCAP_PROTOS: dict[str, tuple[Any, list[Any]]] = {
    "pcap_sendqueue_transmit": (ctypes.c_uint, [P, P, ctypes.c_int]),
    "pcap_setmode": (ctypes.c_int, [P, ctypes.c_int]),
    "pcap_getevent": (P, [P]),
    "pcap_getadapter": (P, [P]),
    "pcap_compile": (ctypes.c_int, [P, P, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]),
    "pcap_setfilter": (ctypes.c_int, [P, P]),
    "pcap_freecode": (None, [P]),
}
_PACKET_PROTOS: dict[str, tuple[Any, list[Any]]] = {
    "PacketInitPacket": (None, [P, P, ctypes.c_uint]),
    "PacketReceivePacket": (ctypes.c_ubyte, [P, P, ctypes.c_ubyte]),
}


class Packet(ctypes.Structure):
    """Packet32.h's ``PACKET`` (Win64): a read's buffer and what it received."""

    _fields_ = [("hEvent", P), ("OverLapped", ctypes.c_ubyte * 32), ("Buffer", P),
                ("Length", ctypes.c_uint), ("ulBytesReceived", ctypes.c_uint32),
                ("bIoComplete", ctypes.c_ubyte)]


class BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", P)]


def npcap_dir(system_root: str | None = None) -> str:
    root = system_root or os.environ.get("SystemRoot") or r"C:\Windows"
    return os.path.join(root, "System32", "Npcap")


class Npcap:
    """The loaded DLLs and the calls the engine makes (a test substitutes its own)."""

    def __init__(self, system_root: str | None = None, loader: Any = None) -> None:
        from .. import libpcap

        load = loader or ctypes.CDLL
        where = npcap_dir(system_root)
        try:
            self.packet = load(os.path.join(where, "Packet.dll"))
            self.wpcap = load(os.path.join(where, "wpcap.dll"))
        except OSError as e:
            raise NetmapError(errno.ENOENT, f"Npcap is not installed ({where} has no "
                              "Packet.dll/wpcap.dll): install it from https://npcap.com") from e
        for lib, protos in ((self.wpcap, {**libpcap._PROTOS, **_NPCAP_PROTOS}),
                            (self.packet, _PACKET_PROTOS)):
            for fn, (res, args) in protos.items():
                f = getattr(lib, fn)
                f.restype, f.argtypes = res, args
        self.version = (self.wpcap.pcap_lib_version() or b"").decode(errors="replace")
        if not self.version.startswith("Npcap"):  # WinPcap's says "WinPcap version ..."
            raise NetmapError(errno.ENOENT, f"{where}\\wpcap.dll is {self.version!r}, not "
                              "Npcap: install Npcap from https://npcap.com (WinPcap lacks "
                              "send-to-RX mode and is unmaintained)")

    # -- a capture handle --------------------------------------------------------------
    def open(self, device: str, snaplen: int, buffer_bytes: int, not_from: bytes | None) -> int:
        """An activated, non-blocking, immediate capture on ``device``.

        ``not_from``: a MAC whose frames are filtered out (the host's own
        transmissions, which Npcap captures too: it has no direction filter).
        """
        w = self.wpcap
        err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        p = w.pcap_create(device.encode(), err)
        if not p:
            raise NetmapError(errno.ENXIO, f"pcap_create({device}): {err.value.decode()}")
        try:
            w.pcap_set_snaplen(p, snaplen)
            w.pcap_set_promisc(p, 1)
            w.pcap_set_immediate_mode(p, 1)
            w.pcap_set_buffer_size(p, buffer_bytes)
            if w.pcap_activate(p) < 0:
                raise NetmapError(errno.EIO, f"pcap_activate({device}): {self.error(p)}")
            if w.pcap_setnonblock(p, 1, err) < 0:
                raise NetmapError(errno.EIO, f"pcap_setnonblock: {err.value.decode()}")
            if not_from is not None:
                self._filter(p, "not ether src " + ":".join(f"{b:02x}" for b in not_from))
        except BaseException:
            w.pcap_close(p)
            raise
        return p

    def _filter(self, p: int, expr: str) -> None:
        prog = BpfProgram()
        w = self.wpcap
        if w.pcap_compile(p, ctypes.byref(prog), expr.encode(), 1, 0xFFFFFFFF) < 0:
            raise NetmapError(errno.EINVAL, f"pcap_compile({expr!r}): {self.error(p)}")
        try:
            if w.pcap_setfilter(p, ctypes.byref(prog)) < 0:
                raise NetmapError(errno.EIO, f"pcap_setfilter: {self.error(p)}")
        finally:
            w.pcap_freecode(ctypes.byref(prog))

    def send_to_rx(self, p: int, device: str) -> None:
        if self.wpcap.pcap_setmode(p, MODE_SENDTORX) < 0:
            raise NetmapError(errno.EOPNOTSUPP, f"{device}: the host TX ring needs Npcap's "
                              f"send-to-RX mode (Npcap >= 1.83; this is {self.version}); "
                              "upgrade Npcap, or list the adapter in the driver's "
                              "SendToRxAdapters registry value")

    def error(self, p: int) -> str:
        return (self.wpcap.pcap_geterr(p) or b"").decode(errors="replace")

    def transmit(self, p: int, queue: Any) -> int:
        return int(self.wpcap.pcap_sendqueue_transmit(p, ctypes.byref(queue), 0))

    def reader(self, p: int, buf: np.ndarray, size: int) -> Any:
        """A ``PACKET`` that reads into ``buf`` from the capture's adapter."""
        pkt = Packet()
        self.packet.PacketInitPacket(ctypes.byref(pkt), buf.ctypes.data, size)
        return pkt

    def receive(self, p: int, pkt: Any) -> int:
        """One non-blocking read: the bytes of bpf_hdr records it returned (0: none)."""
        if not self.packet.PacketReceivePacket(self.wpcap.pcap_getadapter(p),
                                               ctypes.byref(pkt), 1):
            raise NetmapError(errno.EIO, "PacketReceivePacket failed")
        return int(pkt.ulBytesReceived)

    def event(self, p: int) -> int:
        return int(self.wpcap.pcap_getevent(p))

    def stats(self, p: int) -> dict[str, int]:
        buf = (ctypes.c_uint * 8)()
        if self.wpcap.pcap_stats(p, buf) < 0:
            raise NetmapError(errno.EIO, f"pcap_stats: {self.error(p)}")
        return {"packets": buf[0], "drops": buf[1], "ifdrops": buf[2]}

    def close(self, p: int) -> None:
        self.wpcap.pcap_close(p)


class NpcapQueue:
    """The kernel side of an interface's netmap ring pair (or host TX ring) on Npcap."""

    engine = "npcap"
    mode = "copy"  # the stack keeps its copy of what the NIC receives

    def __init__(self, npcap: Npcap, itf: names.Interface, region: Region, tx: Ring | None,
                 rx: Ring | None, host: bool = False) -> None:
        if host and rx is not None:
            raise NetmapError(errno.EOPNOTSUPP, f"{itf.netmap_name}: {HOST_RX_REFUSED}")
        self.npcap = npcap
        self.device = itf.device
        self.max_frame = region.buf_size - region.lead
        self.nbufs = region.nbufs
        self.bufs = region.bufs
        self.p = npcap.open(itf.device, self.max_frame, 4 * READ_BYTES,
                            itf.mac if rx is not None else None)
        try:
            if host:
                npcap.send_to_rx(self.p, itf.netmap_name)
            self.event = npcap.event(self.p)
            self.sq = SendQueueBuilder()
            # the read buffer, with a frame's slack so the row copy never runs past it
            self.rbuf = np.zeros(READ_BYTES + self.max_frame, np.uint8)
            self.reader = npcap.reader(self.p, self.rbuf, READ_BYTES)
            self.backlog = bpfbuf.parse(self.rbuf, 0, bpfbuf.NPCAP)  # read, not yet ringed
        except BaseException:
            npcap.close(self.p)
            raise

    def fileno(self) -> int:
        raise NetmapError(errno.EOPNOTSUPP, "Npcap has no selectable descriptor: wait with "
                          "Port.poll() (it sleeps on the capture's event)")

    def txsync(self, kring: KRing, head: int) -> None:
        ring, n = kring.ring, kring.num_slots
        hwcur = kring.hwcur
        if head != hwcur:
            idx, lens = tx_batch(ring, hwcur, head, self.nbufs, self.max_frame)
            records = self.sq.records(self.bufs, idx, lens)
            sent = self.npcap.transmit(self.p, self.sq.queue(records))
            done = len(lens) if sent >= len(records) else frames_sent(lens, sent)
            if done:
                end = (hwcur + done) % n
                clear_buf_changed(ring.slot_flags, hwcur, end, n)
                kring.hwcur = hwcur = end
            else:
                raise NetmapError(errno.EIO, f"pcap_sendqueue_transmit on {self.device}: "
                                  f"{self.npcap.error(self.p)}")
        kring.hwtail = (hwcur - 1) % n

    def rxsync(self, kring: KRing, head: int) -> None:
        ring, n = kring.ring, kring.num_slots
        if ring.flags & NR_FORWARD:
            raise NetmapError(errno.EOPNOTSUPP, f"{self.device}: {FORWARD_REFUSED}")
        hwtail, rows = rx_free_rows(kring, head)
        room = len(rows)
        if not room:
            return
        if not len(self.backlog):
            got = self.npcap.receive(self.p, self.reader)
            self.backlog = bpfbuf.parse(self.rbuf, got, bpfbuf.NPCAP)
        now, self.backlog = self.backlog.take(room)
        k = len(now)
        if not k:
            return
        lens = bpfbuf.to_rows(self.rbuf, now, self.bufs, rows[:k])
        scatter(ring.slot_len, hwtail, lens.astype(np.uint16), n)
        scatter(ring.slot_flags, hwtail, np.zeros(k, np.uint16), n)
        kring.hwtail = (hwtail + k) % n

    def pending(self) -> bool:
        """Received packets already read from the driver but not yet on the ring."""
        return bool(len(self.backlog))

    def statistics(self) -> dict[str, int]:
        return self.npcap.stats(self.p)

    def close(self) -> None:
        if self.p:
            self.npcap.close(self.p)
            self.p = 0


def wait_events(handles: list[int], timeout_s: float) -> None:
    """Sleep until one capture event is set (``WaitForMultipleObjects``, any of them).

    Npcap sets a capture's event when its driver buffer holds data; callers
    first check :meth:`NpcapQueue.pending` (packets read but not yet ringed).
    """
    kernel32 = ctypes.WinDLL("kernel32")  # type: ignore[attr-defined]
    arr = (P * len(handles))(*handles)
    kernel32.WaitForMultipleObjects(len(handles), arr, False, max(0, int(timeout_s * 1000)))
