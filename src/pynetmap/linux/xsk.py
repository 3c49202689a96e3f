"""AF_XDP sockets, with NumPy views over their four rings.

An AF_XDP socket (XSK) exchanges frames with one queue of one interface through
memory the application provides, the **UMEM**, cut into fixed-size chunks.  Four
single-producer/single-consumer rings, mmap'ed from the socket, carry chunk addresses:

=========== ============ ====================== =================================
ring        producer     entries                meaning
=========== ============ ====================== =================================
fill        us           ``u64`` address        chunks the kernel may receive into
rx          kernel       ``addr, len, options`` received frames
tx          us           ``addr, len, options`` frames to send
completion  kernel       ``u64`` address        chunks whose frame has been sent
=========== ============ ====================== =================================

Every ring is a :class:`Ring` with ``producer``/``consumer``/``flags`` (one-element
``uint32`` views, each read or written by one NumPy operation) and ``desc`` (the
entries), and *batch* methods that move n entries with one or two slice assignments
(two when the range wraps): :meth:`FillRing.produce`, :meth:`CompletionRing.consume`,
:meth:`RxRing.peek` + :meth:`RxRing.release`, :meth:`TxRing.produce` +
:meth:`XskSocket.kick`.  No Python statement runs per frame.

UMEM and addresses.  The caller passes the memory (the core passes its region's buffer
pool: page-aligned, 2048-byte buffers), so buffer index ``i`` is UMEM address
``i * 2048``.  The kernel delivers a received frame at ``chunk + 256 + headroom``
(``XDP_PACKET_HEADROOM`` is reserved in front of every received frame), so an RX
address is ``i * 2048 + rx_offset`` and at most ``2048 - rx_offset`` bytes are received
per frame; ``addr // 2048`` recovers the buffer.  TX addresses may point anywhere in a
chunk (the frame must not cross the chunk's end).

Wake-ups.  With ``XDP_USE_NEED_WAKEUP`` (the default here) the kernel sets a flag in a
ring when it needs a system call to make progress; :meth:`XskSocket.kick` (TX:
``sendto(fd, NULL, 0, MSG_DONTWAIT)``) and :meth:`XskSocket.wakeup_rx` (``recvfrom``)
make that call only when the flag is set, so a busy socket costs no system calls.  In
copy mode the kernel transmits only inside ``sendto``, at most ``tx_budget`` frames per
call, so :meth:`~XskSocket.kick` repeats it while the kernel makes progress.

Memory ordering.  The kernel publishes entries with a store-release of the producer and
reads them after a load-acquire of it.  We write entries, then store the producer
(and read the producer, then the entries, then store the consumer).  On x86-64 (TSO)
the CPU keeps stores in order and loads in order and never moves a store before an
earlier load, and separate NumPy calls cannot be merged by a compiler, so no barrier is
emitted.  On aarch64 a barrier (``dmb``, or ``stlr``/``ldar`` on the index) is needed
between the two steps; :mod:`pynetmap.linux.shmring` supplies one per batch there.

Zero copy needs driver support; veth and most virtual interfaces give copy mode.
``mode="auto"`` tries ``XDP_ZEROCOPY`` and falls back to ``XDP_COPY``; the mode
obtained is :attr:`XskSocket.mode`.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import socket
import struct
import time
from typing import Any

import numpy as np

from ..errors import NetmapError
from .ifinfo import if_name, net_error, require_up
from .shmring import make_fence, spans

AF_XDP = 44
SOL_XDP = 283

XDP_MMAP_OFFSETS = 1
XDP_RX_RING = 2
XDP_TX_RING = 3
XDP_UMEM_REG = 4
XDP_UMEM_FILL_RING = 5
XDP_UMEM_COMPLETION_RING = 6
XDP_STATISTICS = 7
XDP_OPTIONS = 8
XDP_MAX_TX_SKB_BUDGET = 9  # Linux >= 6.17

XDP_SHARED_UMEM = 1 << 0
XDP_COPY = 1 << 1
XDP_ZEROCOPY = 1 << 2
XDP_USE_NEED_WAKEUP = 1 << 3
XDP_OPTIONS_ZEROCOPY = 1 << 0
XDP_RING_NEED_WAKEUP = 1 << 0

XDP_PGOFF_RX_RING = 0
XDP_PGOFF_TX_RING = 0x80000000
XDP_UMEM_PGOFF_FILL_RING = 0x100000000
XDP_UMEM_PGOFF_COMPLETION_RING = 0x180000000

XDP_PACKET_HEADROOM = 256
FRAME_SIZE = 2048
BIND_BUSY_RETRY = 0.25  # seconds

#: struct xdp_desc: one RX or TX ring entry.
DESC = np.dtype([("addr", "<u8"), ("len", "<u4"), ("options", "<u4")])
ADDR = np.dtype("<u8")

STAT_NAMES = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
              "rx_fill_ring_empty_descs", "tx_ring_empty_descs")

_U32 = 0xFFFFFFFF
_libc = ctypes.CDLL(None, use_errno=True)


class _SockaddrXdp(ctypes.Structure):
    _fields_ = [("family", ctypes.c_uint16), ("flags", ctypes.c_uint16),
                ("ifindex", ctypes.c_uint32), ("queue_id", ctypes.c_uint32),
                ("shared_umem_fd", ctypes.c_uint32)]


class Ring:
    """One mmap'ed ring: index views, entry view, and the fence its protocol needs."""

    def __init__(self, mm: mmap.mmap, offsets: tuple[int, int, int, int], size: int,
                 dtype: np.dtype) -> None:
        prod, cons, desc, flags = offsets
        self._mm = mm
        self.size = size
        self.mask = size - 1
        self.producer = np.frombuffer(mm, np.uint32, 1, prod)
        self.consumer = np.frombuffer(mm, np.uint32, 1, cons)
        self.flags = np.frombuffer(mm, np.uint32, 1, flags)
        self.desc = np.frombuffer(mm, dtype, size, desc)
        self._fence = make_fence()

    def needs_wakeup(self) -> bool:
        """The kernel asked for a system call to make progress on this ring."""
        return bool(self.flags[0] & XDP_RING_NEED_WAKEUP)

    def close(self) -> None:
        """Drop our views and unmap (left to the GC if someone still holds a view)."""
        self.producer = self.consumer = self.flags = self.desc = None  # type: ignore[assignment]
        for name in ("_addr", "_len", "_opt"):
            self.__dict__.pop(name, None)
        try:
            self._mm.close()
        except BufferError:
            pass


class _ProducerRing(Ring):
    """A ring we fill and the kernel drains (fill, tx).  We own the producer index."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._prod = int(self.producer[0])

    def free(self) -> int:
        """Entries we may produce now."""
        return self.size - ((self._prod - int(self.consumer[0])) & _U32)

    def pending(self) -> int:
        """Entries produced that the kernel has not taken yet."""
        return (self._prod - int(self.consumer[0])) & _U32

    def _publish(self, n: int) -> None:
        if self._fence is not None:
            self._fence()  # entries before the index
        self._prod = (self._prod + n) & _U32
        self.producer[0] = self._prod


class _ConsumerRing(Ring):
    """A ring the kernel fills and we drain (rx, completion).  We own the consumer index."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._cons = int(self.consumer[0])

    def available(self) -> int:
        """Entries the kernel has published that we have not released."""
        n = (int(self.producer[0]) - self._cons) & _U32
        if n and self._fence is not None:
            self._fence()  # the index before the entries it covers
        return n

    def _gather(self, view: np.ndarray, n: int) -> np.ndarray:
        sp = spans(self._cons, n, self.size)
        if len(sp) == 1:
            return view[sp[0][0]:sp[0][1]].copy()
        return np.concatenate((view[sp[0][0]:sp[0][1]], view[:sp[1][1]]))

    def release(self, n: int) -> None:
        """Give the first ``n`` available entries back to the kernel."""
        if not 0 <= n <= (int(self.producer[0]) - self._cons) & _U32:
            raise ValueError(f"cannot release {n} entries: only "
                             f"{(int(self.producer[0]) - self._cons) & _U32} available")
        if self._fence is not None:
            self._fence()  # our reads of the entries before the index
        self._cons = (self._cons + n) & _U32
        self.consumer[0] = self._cons


class FillRing(_ProducerRing):
    """UMEM addresses handed to the kernel to receive into."""

    def produce(self, addrs: np.ndarray) -> int:
        """Queue as many of ``addrs`` as fit; returns how many (a prefix of ``addrs``)."""
        n = min(len(addrs), self.free())
        if n:
            for a, b, k in spans(self._prod, n, self.size):
                self.desc[a:b] = addrs[k:k + b - a]
            self._publish(n)
        return n


class CompletionRing(_ConsumerRing):
    """UMEM addresses of frames the kernel has finished sending."""

    def consume(self, max: int) -> np.ndarray:
        """Take up to ``max`` completed addresses (a copy) and release their entries."""
        n = min(max, self.available())
        if not n:
            return np.empty(0, ADDR)
        out = self._gather(self.desc, n)
        self.release(n)
        return out


class RxRing(_ConsumerRing):
    """Received frames: ``(addr, len)`` descriptors into the UMEM."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._addr = self.desc["addr"]
        self._len = self.desc["len"]

    def peek(self, max: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``max`` received ``(addr, len)`` (copies), oldest first; not yet released.

        Peeking again without :meth:`release` returns the same frames.  Release them once
        their UMEM chunks are no longer needed or have been handed back to the kernel.
        """
        n = min(max, self.available())
        return self._gather(self._addr, n), self._gather(self._len, n)


class TxRing(_ProducerRing):
    """Frames to send: ``(addr, len)`` descriptors into the UMEM."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._addr = self.desc["addr"]
        self._len = self.desc["len"]
        self._opt = self.desc["options"]

    def produce(self, addr: np.ndarray, length: np.ndarray) -> int:
        """Queue frames ``(addr[k], length[k])`` while they fit; returns how many (a prefix).

        Then :meth:`XskSocket.kick` makes the kernel send them.

        The kernel checks each descriptor (inside the UMEM, not crossing a chunk, not
        longer than the MTU allows) and counts bad ones in ``tx_invalid_descs``.
        """
        n = min(len(addr), len(length), self.free())
        if n:
            for a, b, k in spans(self._prod, n, self.size):
                self._addr[a:b] = addr[k:k + b - a]
                self._len[a:b] = length[k:k + b - a]
                self._opt[a:b] = 0
            self._publish(n)
        return n


def _umem_area(umem: Any) -> np.ndarray:
    """A uint8 array over the caller's memory: a writable buffer or (address, length)."""
    if isinstance(umem, tuple):
        address, length = umem
        return np.frombuffer((ctypes.c_char * length).from_address(address), np.uint8)
    area = np.frombuffer(umem, np.uint8)
    if not area.flags.writeable:
        raise ValueError("the UMEM must be writable memory")
    return area


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class XskSocket:
    """An AF_XDP socket bound to one queue of one interface, with its four rings.

    ``umem`` is the packet memory: a writable buffer (mmap, memoryview, NumPy array:
    page-aligned, a multiple of ``frame_size`` long), an ``(address, length)`` pair, or
    another :class:`XskSocket` whose UMEM this one shares (``XDP_SHARED_UMEM``; it must
    be on another queue or interface, and gets its own fill and completion rings).
    The caller keeps the memory alive while the socket is open; this object holds a
    reference to a buffer it was given.

    ``mode`` is ``"auto"`` (zero copy if the driver can, else copy), ``"zerocopy"`` or
    ``"copy"``; :attr:`mode` says what was obtained.  A ring size of 0 leaves that
    direction out.  ``tx_budget`` is how many frames one ``sendto`` may send in copy
    mode (Linux >= 6.17; default: the TX ring size); :attr:`tx_budget` is None where
    the kernel lacks the option (it then sends 32 per call).

    Frames reach the socket only once an XDP program redirects the queue to it
    (:class:`pynetmap.linux.bpf.XskProgram`: ``prog.set(queue, xsk.fileno())``).
    """

    def __init__(self, ifname: str | int, queue_id: int, umem: Any, *, mode: str = "auto",
                 need_wakeup: bool = True, rx_size: int = 2048, tx_size: int = 2048,
                 fill_size: int = 2048, comp_size: int = 2048, frame_size: int = FRAME_SIZE,
                 headroom: int = 0, tx_budget: int | None = None) -> None:
        if mode not in ("auto", "zerocopy", "copy"):
            raise ValueError(f"mode must be auto, zerocopy or copy, not {mode!r}")
        for what, n in (("rx_size", rx_size), ("tx_size", tx_size)):
            if n and not _pow2(n):
                raise ValueError(f"{what} must be 0 or a power of two, not {n}")
        for what, n in (("fill_size", fill_size), ("comp_size", comp_size)):
            if not _pow2(n):
                raise ValueError(f"{what} must be a power of two, not {n}")
        if not (rx_size or tx_size):
            raise ValueError("an XSK needs an RX or a TX ring")
        self.ifname = if_name(ifname) if isinstance(ifname, int) else ifname
        self.ifindex = require_up(self.ifname)
        self.queue_id = queue_id
        self.frame_size = frame_size
        self.headroom = headroom
        #: Offset of a received frame in its chunk.
        self.rx_offset = XDP_PACKET_HEADROOM + headroom
        self._sizes = (rx_size, tx_size, fill_size, comp_size)
        self._sock: socket.socket | None = None
        self._rings: list[Ring] = []
        self.rx: RxRing | None = None
        self.tx: TxRing | None = None
        self.fill: FillRing | None = None
        self.comp: CompletionRing | None = None
        self.owner: XskSocket | None = None
        self.umem: np.ndarray | None = None
        self.zerocopy = False
        self.mode = "closed"
        self.tx_budget: int | None = None
        self._need_wakeup = False

        try:
            self._start(umem, mode, need_wakeup, tx_budget)
        except BaseException:
            self.close()  # also drops our reference to the caller's memory
            raise

    # -- setup -------------------------------------------------------------------------

    def _start(self, umem: Any, mode: str, need_wakeup: bool, tx_budget: int | None) -> None:
        if isinstance(umem, XskSocket):
            if (umem.ifindex, umem.queue_id) == (self.ifindex, self.queue_id):
                raise ValueError("XSKs sharing a UMEM must be on different queues or "
                                 "interfaces")
            self.owner, self.umem = umem, umem.umem
            self.frame_size, self.headroom, self.rx_offset = (
                umem.frame_size, umem.headroom, umem.rx_offset)
            self._open(XDP_SHARED_UMEM)  # the mode follows the owner's
        else:
            self.umem = _umem_area(umem)
            self._check_umem()
            wake = XDP_USE_NEED_WAKEUP if need_wakeup else 0
            if mode == "auto":
                try:
                    self._open(XDP_ZEROCOPY | wake)
                except NetmapError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    self._open(XDP_COPY | wake)
            else:
                self._open((XDP_ZEROCOPY if mode == "zerocopy" else XDP_COPY) | wake)
        self.zerocopy = bool(self._getsockopt_u32(XDP_OPTIONS) & XDP_OPTIONS_ZEROCOPY)
        self.mode = "zerocopy" if self.zerocopy else "copy"
        self.tx_budget = self._set_tx_budget(tx_budget) if self.tx is not None else None

    def _check_umem(self) -> None:
        assert self.umem is not None
        addr, size = self.umem.ctypes.data, self.umem.nbytes
        if addr % mmap.PAGESIZE:
            raise NetmapError(errno.EINVAL, f"the UMEM must be page-aligned (address "
                                            f"{addr:#x} is not a multiple of {mmap.PAGESIZE})")
        if not size or size % self.frame_size:
            raise NetmapError(errno.EINVAL, f"the UMEM length ({size}) must be a non-zero "
                                            f"multiple of the frame size {self.frame_size}")

    def _error(self, e: OSError, what: str) -> NetmapError:
        err = e.errno or errno.EIO
        where = f"AF_XDP {what} on {self.ifname} queue {self.queue_id}"
        if err == errno.EBUSY:
            return NetmapError(err, f"{where}: the queue is already bound by another AF_XDP "
                                    "socket (or the device is busy)")
        if err == errno.EOPNOTSUPP and what == "bind":
            return NetmapError(err, f"{where}: zero-copy is not supported by this driver "
                                    "(ask for copy mode or auto)")
        if err == errno.EPERM:
            return NetmapError(err, f"{where}: needs CAP_NET_RAW (run as root or grant it)")
        if err == errno.EAFNOSUPPORT:
            return NetmapError(err, "AF_XDP sockets are not available: the kernel lacks "
                                    "CONFIG_XDP_SOCKETS")
        if err == errno.EINVAL and what == "bind":
            return NetmapError(err, f"{where}: rejected (queue id beyond the interface's "
                                    "queues, or ring/UMEM setup refused)")
        return net_error(err, where, self.ifname)

    def _setsockopt(self, opt: int, value: bytes, what: str) -> None:
        assert self._sock is not None
        try:
            self._sock.setsockopt(SOL_XDP, opt, value)
        except OSError as e:
            raise self._error(e, what) from None

    def _getsockopt_u32(self, opt: int) -> int:
        assert self._sock is not None
        return struct.unpack("I", self._sock.getsockopt(SOL_XDP, opt, 4))[0]

    def _open(self, bind_flags: int) -> None:
        """Create, configure, map and bind the socket; on failure leave nothing open."""
        try:
            self._setup(bind_flags)
        except BaseException:
            self._close_fds()
            raise
        self._need_wakeup = bool(bind_flags & XDP_USE_NEED_WAKEUP) or bool(
            self.owner is not None and self.owner._need_wakeup)

    def _setup(self, bind_flags: int) -> None:
        rx_size, tx_size, fill_size, comp_size = self._sizes
        try:
            self._sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        except OSError as e:
            raise self._error(e, "socket") from None
        if self.owner is None:
            assert self.umem is not None
            reg = struct.pack("QQII", self.umem.ctypes.data, self.umem.nbytes,
                              self.frame_size, self.headroom)
            self._setsockopt(XDP_UMEM_REG, reg, "UMEM registration")
        self._setsockopt(XDP_UMEM_FILL_RING, struct.pack("I", fill_size), "fill ring")
        self._setsockopt(XDP_UMEM_COMPLETION_RING, struct.pack("I", comp_size),
                         "completion ring")
        if rx_size:
            self._setsockopt(XDP_RX_RING, struct.pack("I", rx_size), "RX ring")
        if tx_size:
            self._setsockopt(XDP_TX_RING, struct.pack("I", tx_size), "TX ring")
        raw = self._sock.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128)
        off = struct.unpack("16Q", raw)  # rx, tx, fill, completion: producer, consumer, desc, flags

        def ring(cls: type, pgoff: int, o: tuple[int, ...], n: int, dtype: np.dtype) -> Any:
            # o is (producer, consumer, desc, flags)
            length = o[2] + n * dtype.itemsize
            assert self._sock is not None
            try:
                mm = mmap.mmap(self._sock.fileno(), length, mmap.MAP_SHARED | mmap.MAP_POPULATE,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=pgoff)
            except OSError as e:
                raise self._error(e, "ring mmap") from None
            r = cls(mm, o, n, dtype)
            self._rings.append(r)
            return r

        self.fill = ring(FillRing, XDP_UMEM_PGOFF_FILL_RING, off[8:12], fill_size, ADDR)
        self.comp = ring(CompletionRing, XDP_UMEM_PGOFF_COMPLETION_RING, off[12:16],
                         comp_size, ADDR)
        if rx_size:
            self.rx = ring(RxRing, XDP_PGOFF_RX_RING, off[0:4], rx_size, DESC)
        if tx_size:
            self.tx = ring(TxRing, XDP_PGOFF_TX_RING, off[4:8], tx_size, DESC)

        sa = _SockaddrXdp(family=AF_XDP, flags=bind_flags, ifindex=self.ifindex,
                          queue_id=self.queue_id,
                          shared_umem_fd=self.owner.fileno() if self.owner else 0)
        # The kernel frees a closed socket's queue asynchronously (a few ms later), so a
        # close-and-reopen meets EBUSY for a moment: retry it, briefly and boundedly.
        deadline = time.monotonic() + BIND_BUSY_RETRY
        while _libc.bind(self._sock.fileno(), ctypes.byref(sa), ctypes.sizeof(sa)) != 0:
            err = ctypes.get_errno()
            if err != errno.EBUSY or time.monotonic() > deadline:
                raise self._error(OSError(err, os.strerror(err)), "bind")
            time.sleep(0.005)

    def _set_tx_budget(self, budget: int | None) -> int | None:
        assert self.tx is not None
        want = self.tx.size if budget is None else budget
        try:
            self._setsockopt(XDP_MAX_TX_SKB_BUDGET, struct.pack("I", want), "tx budget")
        except NetmapError as e:
            if e.errno == errno.ENOPROTOOPT:
                return None  # kernel < 6.17: 32 frames per sendto
            if e.errno == errno.EACCES:
                raise ValueError(f"tx_budget must be in [32, {self.tx.size}], "
                                 f"not {want}") from None
            raise
        return want  # the kernel has no getsockopt for it; it accepted the value

    # -- data path ---------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's fd: for ``poll``/``select``, and for ``XskProgram.set``."""
        if self._sock is None:
            raise NetmapError(errno.EBADF, "AF_XDP socket is closed")
        return self._sock.fileno()

    def kick(self) -> None:
        """Make the kernel send what the TX ring holds, if it asked for it (need-wakeup).

        In copy mode one ``sendto`` sends at most ``tx_budget`` frames, so the call is
        repeated while the kernel makes progress; it stops early when the completion
        ring is full (consume it) or the device is busy.
        """
        tx = self.tx
        if tx is None or not tx.pending() or (self._need_wakeup and not tx.needs_wakeup()):
            return
        assert self._sock is not None
        for _ in range(tx.size // 32 + 1):
            before = int(tx.consumer[0])
            try:
                self._sock.send(b"", socket.MSG_DONTWAIT)
                return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOBUFS):
                    raise self._error(e, "sendto") from None
            if int(tx.consumer[0]) == before or not tx.pending():
                return

    def wakeup_rx(self) -> None:
        """Let the driver refill from the fill ring, if it asked for it (need-wakeup)."""
        if self.fill is not None and (not self._need_wakeup or self.fill.needs_wakeup()):
            assert self._sock is not None
            try:
                self._sock.recv(0, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOBUFS):
                    raise self._error(e, "recvfrom") from None

    def wait(self, timeout: float | None) -> bool:
        """Block until the RX ring has frames or ``timeout`` seconds pass; True if ready.

        ``poll`` also wakes the driver up where it asked for it.
        """
        p = select.poll()
        p.register(self.fileno(), select.POLLIN)
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        return bool(p.poll(ms))

    def statistics(self) -> dict[str, int]:
        """``XDP_STATISTICS``: frames dropped or refused, by cause (kernel counters)."""
        assert self._sock is not None
        raw = self._sock.getsockopt(SOL_XDP, XDP_STATISTICS, 8 * len(STAT_NAMES))
        # older kernels return fewer counters
        return dict(zip(STAT_NAMES, struct.unpack(f"{len(raw) // 8}Q", raw), strict=False))

    # -- teardown ----------------------------------------------------------------------

    def _close_fds(self) -> None:
        for r in self._rings:
            r.close()
        self._rings.clear()
        self.rx = self.tx = self.fill = self.comp = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Unmap the rings and close the socket (the kernel drops it from any XSKMAP)."""
        self._close_fds()
        self.umem = None
        self.owner = None

    def __enter__(self) -> XskSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self.mode if self._sock is not None else "closed"
        return f"<XskSocket {self.ifname} queue {self.queue_id} {state}>"
