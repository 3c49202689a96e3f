"""AF_PACKET with TPACKET_V2 mmap rings: the NIC path where AF_XDP is not available.

A TPACKET_V2 ring is an array of fixed-size frames shared with the kernel; each frame
starts with a ``tpacket2_hdr`` whose ``tp_status`` word says who owns it.  We size
blocks as a multiple of the frame size, so frames are evenly spaced and the whole ring
is one 2-D ``uint8`` array (``frames``), with strided NumPy views of each header field
(``status``, ``length``, ``snaplen``, ``mac``) across all frames.

RX: the kernel fills frames in ring order and sets ``TP_STATUS_USER``; we find the
ready run from our cursor with one vectorised test (``status[i:j] & TP_STATUS_USER``),
copy the batch out with one 2-D slice per distinct MAC offset (in practice one), and
hand the frames back by storing ``TP_STATUS_KERNEL`` into the run's status slice.

TX: we find the run of ``TP_STATUS_AVAILABLE`` frames, copy a batch in (data at offset
32, right after the header), store the lengths, then ``TP_STATUS_SEND_REQUEST``, and
one ``send()`` makes the kernel transmit every requested frame (:meth:`PacketSocket.kick`).
``PACKET_QDISC_BYPASS`` sends straight to the driver, as netmap does; ``PACKET_LOSS``
makes the kernel skip a malformed frame rather than stall the ring.

This is a copy path (frames are copied between the ring and the caller's buffers), the
price of working on every interface.  Memory ordering as in :mod:`.shmring`.
"""

from __future__ import annotations

import errno
import math
import mmap
import select
import socket
import struct

import numpy as np

from ..errors import NetmapError
from .ifinfo import net_error, require_up
from .shmring import make_fence, spans

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_FANOUT = 18
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
TPACKET_V2 = 1
ETH_P_ALL = 0x0003

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_WRONG_FORMAT = 4

PACKET_FANOUT_HASH, PACKET_FANOUT_LB, PACKET_FANOUT_CPU = 0, 1, 2
PACKET_FANOUT_ROLLOVER, PACKET_FANOUT_RND, PACKET_FANOUT_QM = 3, 4, 5

#: struct tpacket2_hdr (32 bytes, TPACKET_ALIGN'ed).
HDR = np.dtype([("tp_status", "<u4"), ("tp_len", "<u4"), ("tp_snaplen", "<u4"),
                ("tp_mac", "<u2"), ("tp_net", "<u2"), ("tp_sec", "<u4"), ("tp_nsec", "<u4"),
                ("tp_vlan_tci", "<u2"), ("tp_vlan_tpid", "<u2"), ("tp_padding", "V4")])
#: Where a TX frame's data starts: right after the aligned header (no PACKET_TX_HAS_OFF).
TX_DATA_OFFSET = 32
ETH_HLEN = 14


class FrameRing:
    """One TPACKET_V2 ring: ``frames`` (n x frame_size) and per-field header views."""

    def __init__(self, mm: mmap.mmap, offset: int, nframes: int, frame_size: int) -> None:
        self.size = nframes
        self.frame_size = frame_size
        self.frames = np.ndarray((nframes, frame_size), np.uint8, buffer=mm, offset=offset)
        hdr = np.ndarray((nframes,), HDR, buffer=mm, offset=offset, strides=(frame_size,))
        self.status = hdr["tp_status"]
        self.length = hdr["tp_len"]
        self.snaplen = hdr["tp_snaplen"]
        self.mac = hdr["tp_mac"]
        #: Index of the next frame we will look at (the kernel keeps its own in step).
        self.cursor = 0
        self._fence = make_fence()

    def _run(self, max: int, want: int, mask: int) -> int:
        """How many frames from the cursor (up to ``max``) have ``status & mask == want``."""
        n = 0
        for a, b, _ in spans(self.cursor, min(max, self.size), self.size):
            ok = (self.status[a:b] & mask) == want
            k = b - a if ok.all() else int(np.argmin(ok))
            n += k
            if k < b - a:
                break
        return n

    def _set_status(self, n: int, value: int) -> None:
        if self._fence is not None:
            self._fence()  # frame contents before the status that hands them over
        for a, b, _ in spans(self.cursor, n, self.size):
            self.status[a:b] = value
        self.cursor = (self.cursor + n) % self.size

    def _indices(self, n: int) -> np.ndarray:
        return (self.cursor + np.arange(n)) % self.size

    def close(self) -> None:
        """Drop the views (the owner unmaps)."""
        self.frames = self.status = self.length = self.snaplen = self.mac = None


class RxFrames(FrameRing):
    """Received frames: from the cursor, a run of frames the kernel has handed us."""

    def ready(self, max: int) -> int:
        """How many frames from the cursor (up to ``max``) hold a received packet."""
        n = self._run(max, TP_STATUS_USER, TP_STATUS_USER)
        if n and self._fence is not None:
            self._fence()  # the status before the bytes it covers
        return n

    def peek(self, max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(frame index, captured length, MAC offset)`` of up to ``max`` ready frames.

        The packet of frame ``i`` is ``frames[i, mac[i]:mac[i] + length[i]]``; it was
        truncated if the wire length (``self.length[i]``) is larger.  Not released.
        """
        n = self.ready(max)
        idx = self._indices(n)
        return idx, self.snaplen[idx], self.mac[idx]

    def copy_to(self, dst: np.ndarray, n: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Copy the next ``n`` ready packets into rows of the 2-D ``dst``; their lengths.

        Packet k goes to ``dst[rows[k]]`` (``dst[k]`` without ``rows``), truncated to the
        row width.  One slice assignment per distinct MAC offset in the batch.  The frames
        are not released; ``n`` must not exceed :meth:`ready`.
        """
        lens = np.empty(n, np.uint32)
        width = dst.shape[1]
        for a, b, k in spans(self.cursor, n, self.size):
            snap = np.minimum(self.snaplen[a:b], width)
            lens[k:k + b - a] = snap
            macs = self.mac[a:b]
            for m in np.unique(macs):
                sel = np.flatnonzero(macs == m)
                m = int(m)
                L = min(int(snap[sel].max()), self.frame_size - m)
                src = self.frames[a:b, m:m + L]
                out = (k + sel) if rows is None else rows[k + sel]
                if len(sel) == b - a and rows is None:
                    dst[k:k + b - a, :L] = src
                else:
                    dst[out, :L] = src[sel]
        return lens

    def release(self, n: int) -> None:
        """Hand the next ``n`` frames back to the kernel."""
        self._set_status(n, TP_STATUS_KERNEL)


class TxFrames(FrameRing):
    """Frames to send: a run of free frames from the cursor is filled, then requested."""

    @property
    def max_len(self) -> int:
        """Largest frame this ring can send."""
        return self.frame_size - TX_DATA_OFFSET

    def free(self, max: int) -> int:
        """How many frames from the cursor (up to ``max``) we may fill now."""
        return self._run(max, TP_STATUS_AVAILABLE, 0xFFFFFFFF)

    def produce(self, src: np.ndarray, lengths: np.ndarray, rows: np.ndarray | None = None
                ) -> int:
        """Queue frames ``src[rows[k], :lengths[k]]`` (``src[k]`` without ``rows``).

        Returns how many were queued (a prefix, as many as there are free frames).
        Lengths must be in ``[14, max_len]``: a bad one raises ``ValueError`` and nothing
        is queued.  Call :meth:`PacketSocket.kick` to send.
        """
        n = self.free(len(lengths))
        if not n:
            return 0
        lens = np.asarray(lengths[:n])
        if int(lens.min()) < ETH_HLEN or int(lens.max()) > self.max_len:
            raise ValueError(f"frame lengths must be in [{ETH_HLEN}, {self.max_len}]")
        for a, b, k in spans(self.cursor, n, self.size):
            part = lens[k:k + b - a]
            L = int(part.max())
            data = src[k:k + b - a, :L] if rows is None else src[rows[k:k + b - a], :L]
            self.frames[a:b, TX_DATA_OFFSET:TX_DATA_OFFSET + L] = data
            self.length[a:b] = part
        self._set_status(n, TP_STATUS_SEND_REQUEST)
        return n

    def in_flight(self) -> int:
        """Frames requested or being sent that the kernel has not given back yet."""
        return int(np.count_nonzero(self.status != TP_STATUS_AVAILABLE))


def _geometry(frames: int, frame_size: int) -> tuple[int, int, int]:
    """(block size, block count, frame count): blocks hold whole frames, evenly spaced."""
    block = math.lcm(mmap.PAGESIZE, frame_size)
    per_block = block // frame_size
    nblocks = -(-frames // per_block)
    return block, nblocks, nblocks * per_block


class PacketSocket:
    """An AF_PACKET socket on one interface with TPACKET_V2 RX and/or TX rings.

    ``rx_frames``/``tx_frames`` are rounded up to whole blocks (0 leaves a ring out).
    ``frame_size`` must be a multiple of 16; an RX frame holds ``frame_size - mac``
    bytes of packet (``mac`` is 66 for Ethernet: the header, a ``sockaddr_ll``, padding).
    ``ignore_outgoing`` hides the host's own transmissions from the RX ring (netmap's
    NIC RX ring sees only received traffic).  ``fanout=(group_id, PACKET_FANOUT_*)``
    spreads received traffic over the sockets of one group.
    """

    def __init__(self, ifname: str, *, rx_frames: int = 1024, tx_frames: int = 1024,
                 frame_size: int = 2048, qdisc_bypass: bool = True,
                 ignore_outgoing: bool = True, fanout: tuple[int, int] | None = None,
                 protocol: int = ETH_P_ALL) -> None:
        if frame_size % 16 or frame_size < 128:
            raise ValueError("frame_size must be a multiple of 16 and at least 128")
        if not (rx_frames or tx_frames):
            raise ValueError("a packet socket needs an RX or a TX ring")
        self.ifname = ifname
        self.ifindex = require_up(ifname)
        self.rx: RxFrames | None = None
        self.tx: TxFrames | None = None
        self._mm: mmap.mmap | None = None
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as e:
            if e.errno == errno.EPERM:
                raise NetmapError(errno.EPERM, "AF_PACKET sockets need CAP_NET_RAW "
                                               "(run as root or grant it)") from None
            raise net_error(e.errno or errno.EIO, "AF_PACKET socket") from None
        try:
            self._setup(rx_frames, tx_frames, frame_size, qdisc_bypass, ignore_outgoing,
                        fanout, protocol)
        except BaseException:
            self.close()
            raise

    def _opt(self, opt: int, value: bytes | int, what: str) -> None:
        try:
            self._sock.setsockopt(SOL_PACKET, opt, value)
        except OSError as e:
            raise net_error(e.errno or errno.EIO, f"AF_PACKET {what} on {self.ifname}",
                            self.ifname) from None

    def _setup(self, rx_frames: int, tx_frames: int, frame_size: int, qdisc_bypass: bool,
               ignore_outgoing: bool, fanout: tuple[int, int] | None, protocol: int) -> None:
        self._opt(PACKET_VERSION, TPACKET_V2, "PACKET_VERSION")
        if tx_frames:  # both before the rings exist (the kernel refuses them after)
            self._opt(PACKET_LOSS, 1, "PACKET_LOSS")
            if qdisc_bypass:
                self._opt(PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS")
        rings = []
        for opt, want in ((PACKET_RX_RING, rx_frames), (PACKET_TX_RING, tx_frames)):
            if want:
                block, nblocks, nframes = _geometry(want, frame_size)
                self._opt(opt, struct.pack("4I", block, nblocks, frame_size, nframes),
                          "ring setup")
                rings.append((opt, block * nblocks, nframes))
        total = sum(size for _, size, _ in rings)
        self._mm = mmap.mmap(self._sock.fileno(), total, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        offset = 0  # the RX ring comes first in the mapping, then the TX ring
        for opt, size, nframes in rings:
            if opt == PACKET_RX_RING:
                self.rx = RxFrames(self._mm, offset, nframes, frame_size)
            else:
                self.tx = TxFrames(self._mm, offset, nframes, frame_size)
            offset += size
        if rx_frames and ignore_outgoing:
            self._opt(PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING")
        try:
            self._sock.bind((self.ifname, protocol))
        except OSError as e:
            raise net_error(e.errno or errno.EIO, f"AF_PACKET bind to {self.ifname}",
                            self.ifname) from None
        if fanout is not None:
            group, kind = fanout
            self._opt(PACKET_FANOUT, (group & 0xFFFF) | kind << 16, "PACKET_FANOUT")

    def fileno(self) -> int:
        """The socket's fd, for ``poll``/``select`` (readable: RX frames are ready)."""
        return self._sock.fileno()

    def kick(self) -> int:
        """Make the kernel send every frame requested in the TX ring; bytes it sent.

        Non-blocking (``MSG_DONTWAIT``): frames the device cannot take now stay
        requested and go out on the next kick.
        """
        try:
            return self._sock.send(b"", socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                return 0
            raise net_error(e.errno or errno.EIO, f"AF_PACKET send on {self.ifname}",
                            self.ifname) from None

    def wait(self, timeout: float | None) -> bool:
        """Block until the RX ring has a packet or ``timeout`` seconds pass; True if ready."""
        p = select.poll()
        p.register(self.fileno(), select.POLLIN)
        return bool(p.poll(-1 if timeout is None else max(0, int(timeout * 1000))))

    def statistics(self) -> dict[str, int]:
        """Packets received and dropped (ring full) since the previous call."""
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("2I", raw)
        return {"packets": packets, "drops": drops}

    def close(self) -> None:
        """Unmap the rings and close the socket (idempotent)."""
        for r in (self.rx, self.tx):
            if r is not None:
                r.close()
        self.rx = self.tx = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # a caller still holds a view; unmapped when it is dropped
            self._mm = None
        self._sock.close()

    def __enter__(self) -> PacketSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
