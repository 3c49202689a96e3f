"""Frames sent by the kernel itself: an XDP program run on live frames (Linux >= 5.18).

``BPF_PROG_RUN`` with ``BPF_F_TEST_XDP_LIVE_FRAMES`` makes the kernel build frames
from a template, run an XDP program on each as if it had arrived on an interface,
and transmit those the program returns ``XDP_TX`` for, out of that interface.  No
socket, no ring, no copy per frame: this is the fastest way to put a generated frame
on a Linux interface without a kernel module.

The program (assembled here, see :func:`program`) turns an *odometer*: up to four
digits -- source port, source address, destination port, destination address, the
first turning fastest -- each counting from ``first`` to ``last`` and back.  For every
frame it writes the current digits into the frame in network order, sets the IPv4
header and UDP checksums by an incremental update from the template's (RFC 1624: the
template's checksum with its digit words taken out and the new ones put in), counts
the frame, then advances the odometer.  The kernel recycles frame pages without
resetting them, so every varying field is written for every frame, never updated
from what the page held.

The state -- a frame count and the four digits -- lives in a one-entry array map per
sender, mapped into our memory: reports read the kernel's count without a system
call, and ``-n`` is exact even when a signal cuts a run short.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from ..checksum import fold
from ..errors import NetmapError
from . import bpf
from .bpf import Asm
from .ifinfo import (
    CAP_BPF,
    CAP_NET_ADMIN,
    SIOCETHTOOL,
    _IfreqData,
    _ioctl,
    if_index,
    if_name,
    require_capability,
    require_up,
)

PROG_NAME = "pynetmap_live"
MAP_PREFIX = "pnm_live_"
MIN_KERNEL = (5, 18)
#: the kernel's largest ``batch_size`` (frames per flush) for live frames
MAX_BATCH = 256
#: the state map's value: frame count, limit, next send time (ns), four u32 digits
STATE = struct.Struct("<3Q4I")
_COUNT, _LIMIT, _NEXT, _DIGITS = 0, 8, 16, 24
NO_LIMIT = (1 << 64) - 1
BPF_FUNC_ktime_get_ns = 5

ETHTOOL_GDRVINFO, ETHTOOL_GSTRINGS, ETHTOOL_GSTATS = 0x03, 0x1B, 0x1D
ETH_SS_STATS = 1
ETH_GSTRING_LEN = 32
NAPI_HINT = "enable GRO on the peer: ethtool -K {peer} gro on"


@dataclass(frozen=True)
class Digit:
    """One odometer digit: a big-endian field of ``width`` bytes (2 or 4) at ``offset``."""

    offset: int
    width: int
    first: int
    last: int

    @property
    def varies(self) -> bool:
        return self.first != self.last


@dataclass(frozen=True)
class Odometer:
    """Where a frame varies: four digits, fastest first, and the checksums they enter.

    Every digit enters the UDP checksum (ports directly, addresses as their 16-bit
    halves); the address digits (1 and 3) also enter the IPv4 header checksum when
    ``ip_csum`` is set.  ``udp_zero`` is RFC 768's rule: a computed 0 is sent as 0xFFFF.
    """

    digits: tuple[Digit, Digit, Digit, Digit]
    udp_csum: int
    ip_csum: int | None = None

    @property
    def varies(self) -> bool:
        return any(d.varies for d in self.digits)

    def end(self) -> int:
        """The first byte past the fields the program writes (its bounds check)."""
        ends = [d.offset + d.width for d in self.digits] + [self.udp_csum + 2]
        if self.ip_csum is not None:
            ends.append(self.ip_csum + 2)
        return max(ends)


def constant(frame: bytes, csum_at: int, digits: list[Digit]) -> int:
    """The one's-complement sum of ``frame``'s checksummed words *without* ``digits``.

    RFC 1624: ``~csum`` is the sum of all words; adding each old digit's complement
    takes it out.  A frame's checksum is then ``~fold(constant + its digits' words)``.
    """
    s = ~int.from_bytes(frame[csum_at:csum_at + 2], "big") & 0xFFFF
    for d in digits:
        for i in range(d.offset, d.offset + d.width, 2):
            s += ~int.from_bytes(frame[i:i + 2], "big") & 0xFFFF
    return fold(s)


@dataclass(frozen=True)
class Pace:
    """``-R``: one frame every ``gap_ns``, up to ``depth_ns`` of sending time saved up.

    The program keeps the next send time in the state; a run before it is a drop
    (``XDP_DROP``, not counted).  The depth lets frames missed while no run took place
    (between two ``BPF_PROG_RUN`` calls) go later, so the average holds.
    """

    gap_ns: int
    depth_ns: int


def program(map_fd: int, frame: bytes, odo: Odometer | None, pace: Pace | None = None
            ) -> bytes:
    """The XDP program: stop at the limit, wait for the pace, write the odometer's
    fields, count the frame, ``XDP_TX``.  A run that sends nothing returns ``XDP_DROP``.

    Registers: r6 ctx, r7 the state, r2/r3 frame start/end, r3-r6 the digits (after
    the bounds check), r0/r1/r8/r9 scratch.
    """
    a = Asm()
    a.op(Asm.MOV_X, dst=6, src=1)
    a.ld_map_value(7, map_fd)
    a.op(Asm.LDX_DW, dst=0, src=7, off=_COUNT)
    a.op(Asm.LDX_DW, dst=1, src=7, off=_LIMIT)
    a.jump(Asm.JGE_X, "drop", dst=0, src=1)    # -n reached, or stopped
    if pace is not None:
        a.op(Asm.CALL, imm=BPF_FUNC_ktime_get_ns)  # r0 = now; r1-r5 clobbered
        a.op(Asm.LDX_DW, dst=8, src=7, off=_NEXT)
        a.jump(Asm.JGT_X, "drop", dst=8, src=0)  # not yet
        a.op(Asm.MOV_X, dst=9, src=0)
        a.op(Asm.ADD_K, dst=9, imm=-pace.depth_ns)
        a.jump(Asm.JGE_X, "in_time", dst=8, src=9)
        a.op(Asm.MOV_X, dst=8, src=9)            # long idle: save up at most depth_ns
        a.label("in_time")
        a.op(Asm.ADD_K, dst=8, imm=pace.gap_ns)
        a.op(Asm.STX_DW, dst=7, src=8, off=_NEXT)
    if odo is not None and odo.varies:
        a.op(Asm.LDX_W, dst=2, src=6, off=0)       # r2 = ctx->data
        a.op(Asm.LDX_W, dst=3, src=6, off=4)       # r3 = ctx->data_end
        a.op(Asm.MOV_X, dst=4, src=2)
        a.op(Asm.ADD_K, dst=4, imm=odo.end())
        a.jump(Asm.JGT_X, "abort", dst=4, src=3)   # frame shorter than our fields
        _odometer(a, frame, odo)
    a.op(Asm.LDX_DW, dst=0, src=7, off=_COUNT)
    a.op(Asm.ADD_K, dst=0, imm=1)
    a.op(Asm.STX_DW, dst=7, src=0, off=_COUNT)
    a.op(Asm.MOV_K, dst=0, imm=bpf.XDP_TX)
    a.op(Asm.EXIT)
    a.label("drop")
    a.op(Asm.MOV_K, dst=0, imm=bpf.XDP_DROP)
    a.op(Asm.EXIT)
    if odo is not None and odo.varies:
        a.label("abort")
        a.op(Asm.MOV_K, dst=0, imm=bpf.XDP_ABORTED)
        a.op(Asm.EXIT)
    return a.code()


def _fold(a: Asm, r: int, tmp: int) -> None:
    """``r = ~fold(r)`` in 16 bits; two folds suffice for any sum below 2**32."""
    for _ in range(2):
        a.op(Asm.MOV_X, dst=tmp, src=r)
        a.op(Asm.RSH_K, dst=tmp, imm=16)
        a.op(Asm.AND_K, dst=r, imm=0xFFFF)
        a.op(Asm.ADD_X, dst=r, src=tmp)
    a.op(Asm.XOR_K, dst=r, imm=0xFFFF)


def _odometer(a: Asm, frame: bytes, odo: Odometer) -> None:
    regs = (3, 4, 5, 6)
    for r, d in zip(regs, odo.digits, strict=True):
        a.op(Asm.LDX_W, dst=r, src=7, off=_DIGITS + 4 * regs.index(r))
        a.op(Asm.MOV_X, dst=8, src=r)            # the field, in network order
        a.op(Asm.BE, dst=8, imm=8 * d.width)
        a.op(Asm.STX_W if d.width == 4 else Asm.STX_H, dst=2, src=8, off=d.offset)
    # r9 = the address digits' words (they enter both checksums)
    a.op(Asm.MOV_K, dst=9, imm=0)
    for r in (4, 6):
        a.op(Asm.MOV_X, dst=8, src=r)
        a.op(Asm.RSH_K, dst=8, imm=16)
        a.op(Asm.ADD_X, dst=9, src=8)
        a.op(Asm.MOV_X, dst=8, src=r)
        a.op(Asm.AND_K, dst=8, imm=0xFFFF)
        a.op(Asm.ADD_X, dst=9, src=8)
    if odo.ip_csum is not None:
        k_ip = constant(frame, odo.ip_csum, [odo.digits[1], odo.digits[3]])
        a.op(Asm.MOV_X, dst=0, src=9)
        a.op(Asm.ADD_K, dst=0, imm=k_ip)
        _fold(a, 0, 8)
        a.op(Asm.BE, dst=0, imm=16)
        a.op(Asm.STX_H, dst=2, src=0, off=odo.ip_csum)
    a.op(Asm.ADD_X, dst=9, src=3)
    a.op(Asm.ADD_X, dst=9, src=5)
    a.op(Asm.ADD_K, dst=9, imm=constant(frame, odo.udp_csum, list(odo.digits)))
    _fold(a, 9, 8)
    a.jump(Asm.JNE_K, "udp_nonzero", dst=9, imm=0)
    a.op(Asm.MOV_K, dst=9, imm=0xFFFF)        # RFC 768: 0 means "no checksum"
    a.label("udp_nonzero")
    a.op(Asm.BE, dst=9, imm=16)
    a.op(Asm.STX_H, dst=2, src=9, off=odo.udp_csum)
    # advance: a digit at its last value goes back to its first and carries
    for i, (r, d) in enumerate(zip(regs, odo.digits, strict=True)):
        a.jump(Asm.JNE32_K, f"inc{i}", dst=r, imm=_s32(d.last))
        a.op(Asm.MOV32_K, dst=r, imm=_s32(d.first))
    a.jump(Asm.JA, "store")
    for i, r in enumerate(regs):
        a.label(f"inc{i}")
        a.op(Asm.ADD_K, dst=r, imm=1)
        if i < 3:
            a.jump(Asm.JA, "store")
    a.label("store")
    for i, r in enumerate(regs):
        a.op(Asm.STX_W, dst=7, src=r, off=_DIGITS + 4 * i)


def _s32(v: int) -> int:
    """An unsigned 32-bit constant as the signed immediate field holds it."""
    return v - (1 << 32) if v >= 1 << 31 else v


# -- the interface's own counts (veth) -----------------------------------------------------

class _DrvInfo(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("driver", ctypes.c_char * 32),
                ("version", ctypes.c_char * 32), ("fw_version", ctypes.c_char * 32),
                ("bus_info", ctypes.c_char * 32), ("erom_version", ctypes.c_char * 32),
                ("reserved2", ctypes.c_char * 12), ("n_priv_flags", ctypes.c_uint32),
                ("n_stats", ctypes.c_uint32), ("testinfo_len", ctypes.c_uint32),
                ("eedump_len", ctypes.c_uint32), ("regdump_len", ctypes.c_uint32)]


def _ethtool(ifname: str, buf: ctypes.Array[ctypes.c_char] | ctypes.Structure) -> None:
    _ioctl(ifname, SIOCETHTOOL, _IfreqData(name=ifname.encode(), data=ctypes.addressof(buf)))


class EthtoolStats:
    """An interface's ``ethtool -S`` counters, read by name (ioctl, this namespace)."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        info = _DrvInfo(cmd=ETHTOOL_GDRVINFO)
        _ethtool(ifname, info)
        self.driver = info.driver.decode(errors="replace")
        self.n = n = info.n_stats
        raw = ctypes.create_string_buffer(12 + n * ETH_GSTRING_LEN)
        struct.pack_into("<III", raw, 0, ETHTOOL_GSTRINGS, ETH_SS_STATS, n)
        if n:
            _ethtool(ifname, raw)
        self.names = [raw.raw[12 + i * ETH_GSTRING_LEN:12 + (i + 1) * ETH_GSTRING_LEN]
                      .split(b"\0")[0].decode() for i in range(n)]
        self._buf = ctypes.create_string_buffer(8 + 8 * n)

    def read(self) -> dict[str, int]:
        """Every counter, now."""
        if not self.n:
            return {}
        struct.pack_into("<II", self._buf, 0, ETHTOOL_GSTATS, self.n)
        _ethtool(self.ifname, self._buf)
        vals = struct.unpack_from(f"<{self.n}Q", self._buf, 8)
        return dict(zip(self.names, vals, strict=True))

    def total(self, suffix: str, values: dict[str, int] | None = None) -> int:
        """The sum of the per-queue counters named ``*suffix``."""
        v = self.read() if values is None else values
        return sum(x for k, x in v.items() if k.endswith(suffix))


class VethWatch:
    """What a veth's peer took of our XDP frames: its per-queue ``xdp_xmit`` counters.

    veth hands an XDP-transmitted frame to its peer only when the peer has a NAPI
    context (GRO on, or an XDP program of its own); otherwise the frame is dropped
    with no counter anywhere.  A burst that moves neither ``xdp_xmit`` nor
    ``xdp_xmit_errors`` therefore means: no NAPI on the peer.
    """

    def __init__(self, stats: EthtoolStats) -> None:
        self.stats = stats
        v = stats.read()
        self.peer = v.get("peer_ifindex", 0)
        self.xmit0 = stats.total("_xdp_xmit", v)
        self.err0 = stats.total("_xdp_xmit_errors", v)

    def moved(self) -> tuple[int, int]:
        """(frames the peer took, frames its full ring refused) since we started."""
        v = self.stats.read()
        return (self.stats.total("_xdp_xmit", v) - self.xmit0,
                self.stats.total("_xdp_xmit_errors", v) - self.err0)

    def peer_name(self) -> str | None:
        """The peer's name when it is in this namespace (its own peer is us), else None."""
        try:
            name = if_name(self.peer)
            if name == self.stats.ifname:  # the peer's index, here, is ours
                return None
            theirs = EthtoolStats(name)
            if theirs.driver == "veth" and theirs.read().get("peer_ifindex") == \
                    if_index(self.stats.ifname):
                return name
        except NetmapError:
            pass
        return None

    def no_napi_error(self, dropped: int) -> NetmapError:
        """The one line for a peer without NAPI (``dropped``: what the program passed)."""
        name = self.peer_name()
        where = "" if name else (f" (PEER: {self.stats.ifname}'s peer, ifindex {self.peer} "
                                 "in another network namespace)")
        return NetmapError(errno.ENETDOWN, f"{self.stats.ifname}: its veth peer has no NAPI "
                           f"and dropped the {dropped} frames sent; "
                           + NAPI_HINT.format(peer=name or "PEER") + where)


# -- checks ----------------------------------------------------------------------------------

def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of the running kernel (or of ``release``)."""
    rel = os.uname().release if release is None else release
    parts = rel.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def check_kernel(release: str | None = None) -> None:
    """``ENOSYS`` with one line when the kernel predates live frames."""
    rel = os.uname().release if release is None else release
    if kernel_version(rel) < MIN_KERNEL:
        raise NetmapError(errno.ENOSYS, f"--live needs Linux {MIN_KERNEL[0]}.{MIN_KERNEL[1]} "
                          f"or later (BPF_F_TEST_XDP_LIVE_FRAMES); this is {rel}")


# -- a sender --------------------------------------------------------------------------------

class LiveSender:
    """One sender on one interface: its state map, its program, its runner.

    Each sender (one per pkt-gen worker) has its own odometer and count, so workers
    never share state and need no atomic operations; a worker may run on any CPU.
    The state is shared memory with the program: :attr:`sent` reads the kernel's
    count, :meth:`stop` ends a run in progress from any thread (the remaining runs of
    the call become drops, which take nanoseconds).
    """

    def __init__(self, ifname: str, frame: bytes, odo: Odometer | None, *,
                 limit: int = 0, pace: Pace | None = None, batch: int = 64) -> None:
        check_kernel()
        require_capability(CAP_BPF, CAP_NET_ADMIN, what="--live")
        self.ifname = ifname
        self.ifindex = require_up(ifname)
        self.frame = bytes(frame)
        self.map_fd = self.fd = -1
        self._mm: mmap.mmap | None = None
        self._q = np.zeros(3, np.uint64)
        try:
            self.map_fd = bpf.create_array_map(STATE.size, f"{MAP_PREFIX}{os.getpid()}")
            self._mm = mmap.mmap(self.map_fd, mmap.PAGESIZE)
            first = [d.first for d in odo.digits] if odo is not None else [0, 0, 0, 0]
            STATE.pack_into(self._mm, 0, 0, limit or NO_LIMIT, 0, *first)
            self._q = np.frombuffer(self._mm, np.uint64, 3)  # count, limit, next
            self.fd = bpf.prog_load_xdp(program(self.map_fd, self.frame, odo, pace),
                                        PROG_NAME)
            self._run = bpf.XdpLiveRun(self.fd, self.frame, self.ifindex,
                                       min(max(batch, 1), MAX_BATCH))
        except BaseException:
            self.close()
            raise

    @property
    def sent(self) -> int:
        """Frames the program has passed to the interface (the kernel's count)."""
        return int(self._q[0])

    @property
    def limit(self) -> int:
        """Where the program stops sending (:data:`NO_LIMIT`: never)."""
        return int(self._q[1])

    def start_pace(self, t_ns: int) -> None:
        """With a :class:`Pace`: the first frame goes at ``t_ns`` (``CLOCK_MONOTONIC``)."""
        self._q[2] = t_ns

    def stop(self) -> None:
        """Send no more frames, from now on (any thread)."""
        self._q[1] = self._q[0]

    def run(self, n: int) -> None:
        """Run the program ``n`` times: up to ``n`` frames (fewer at the limit, by the
        pace, or when a signal interrupts; :attr:`sent` says how many went)."""
        try:
            self._run.run(n)
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            if e.errno == errno.EINVAL:
                raise NetmapError(errno.EINVAL, f"{self.ifname}: the kernel refused live "
                                  f"frames of {len(self.frame)} bytes (a frame must fit one "
                                  "page with its headroom)") from None
            raise NetmapError(e.errno or errno.EIO,
                              f"BPF_PROG_RUN on {self.ifname}: {e.strerror}") from None

    def close(self) -> None:
        """Release the program and the map (idempotent); :attr:`sent` stays readable."""
        if self._mm is not None:
            self._q = self._q.copy()  # drop the view into the mapping before unmapping it
            self._mm.close()
            self._mm = None
        for attr in ("fd", "map_fd"):
            fd = getattr(self, attr, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)

    def __enter__(self) -> LiveSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
