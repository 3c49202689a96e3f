"""The ``bpf()`` system call, an XSKMAP, and the XDP program that feeds AF_XDP sockets.

An AF_XDP socket only receives what an XDP program redirects to it.  Ours is six BPF
instructions, assembled here from their encoding, so no compiler is needed at run time::

    r2 = ctx->rx_queue_index                 ; the queue the frame arrived on
    r1 = &xskmap                             ; 2 instructions (a 64-bit immediate)
    r3 = fallback                            ; XDP_PASS or XDP_DROP
    r0 = bpf_redirect_map(r1, r2, r3)        ; to xskmap[queue], or fallback if empty
    exit

so every queue with a socket in the map is delivered to that socket, and the others go
to the host stack (``XDP_PASS``) or are dropped.

The program is named :data:`PROG_NAME` and its map ``pnm_xsk_<pid>``: an XDP program
stays attached after its process dies, and these names let a later process recognise a
program left by a crashed pynetmap (see :mod:`pynetmap.linux.xdp_attach`).

Longer programs are written with :class:`Asm` (named opcodes, labels for forward
jumps); :class:`XdpLiveRun` runs a loaded XDP program on frames the kernel builds from
a template and transmits (``BPF_PROG_RUN`` with ``BPF_F_TEST_XDP_LIVE_FRAMES``, Linux
5.18), which is how :mod:`pynetmap.linux.live` sends without any socket.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass

from ..errors import NetmapError
from .ifinfo import net_error

_SYS_BPF = {"x86_64": 321, "amd64": 321, "aarch64": 280, "arm64": 280}

BPF_MAP_CREATE = 0
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10  # alias BPF_PROG_RUN
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15

BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_XSKMAP = 17
BPF_F_MMAPABLE = 1 << 10
BPF_PROG_TYPE_XDP = 6
BPF_FUNC_redirect_map = 51
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_OBJ_NAME_LEN = 16

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

PROG_NAME = "pynetmap_xsk"
MAP_PREFIX = "pnm_xsk_"
LICENSE = b"Dual BSD/GPL"

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]


class _MapCreate(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN)]


class _MapElem(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("key", ctypes.c_uint64), ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _ProgLoad(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN)]


class _GetFdById(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32)]


class _InfoByFd(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


class _ProgInfo(ctypes.Structure):
    # The leading fields of struct bpf_prog_info; the kernel fills what we ask for.
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("tag", ctypes.c_uint8 * 8), ("jited_prog_len", ctypes.c_uint32),
                ("xlated_prog_len", ctypes.c_uint32), ("jited_prog_insns", ctypes.c_uint64),
                ("xlated_prog_insns", ctypes.c_uint64), ("load_time", ctypes.c_uint64),
                ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
                ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * BPF_OBJ_NAME_LEN)]


class _MapInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * BPF_OBJ_NAME_LEN)]


def bpf(cmd: int, attr: ctypes.Structure) -> int:
    """``syscall(SYS_bpf, cmd, &attr, sizeof attr)``; returns its result, raises ``OSError``."""
    nr = _SYS_BPF.get(platform.machine().lower())
    if nr is None:
        raise NetmapError(errno.ENOSYS, f"bpf(): no syscall number for {platform.machine()}")
    ret = _syscall(nr, cmd, ctypes.addressof(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _bpf_error(e: OSError, what: str) -> NetmapError:
    if e.errno == errno.EPERM:
        return NetmapError(errno.EPERM, f"bpf({what}): needs CAP_BPF and CAP_NET_ADMIN "
                                        "(run as root or grant them)")
    if e.errno == errno.ENOSYS:
        return NetmapError(errno.ENOSYS,
                           f"bpf({what}): the kernel lacks bpf() (CONFIG_BPF_SYSCALL)")
    return net_error(e.errno or errno.EIO, f"bpf({what})")


def create_xskmap(max_entries: int, name: str | None = None) -> int:
    """Create a ``BPF_MAP_TYPE_XSKMAP`` (queue id -> AF_XDP socket); returns its fd.

    ``name`` defaults to ``pnm_xsk_<pid>``, which marks the map as owned by this process.
    """
    name = MAP_PREFIX + str(os.getpid()) if name is None else name
    attr = _MapCreate(map_type=BPF_MAP_TYPE_XSKMAP, key_size=4, value_size=4,
                      max_entries=max_entries, map_name=name.encode()[:BPF_OBJ_NAME_LEN - 1])
    try:
        return bpf(BPF_MAP_CREATE, attr)
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise NetmapError(errno.EINVAL, "bpf(BPF_MAP_CREATE): the kernel lacks XSKMAP "
                                            "(CONFIG_XDP_SOCKETS)") from None
        raise _bpf_error(e, "BPF_MAP_CREATE") from None


def create_array_map(value_size: int, name: str, mmapable: bool = True) -> int:
    """Create a one-entry ``BPF_MAP_TYPE_ARRAY``; returns its fd.

    One entry lets a program address the value directly (``BPF_PSEUDO_MAP_VALUE``, no
    helper call per frame); ``mmapable`` lets user space read it as memory, so a
    report costs no system call.
    """
    attr = _MapCreate(map_type=BPF_MAP_TYPE_ARRAY, key_size=4, value_size=value_size,
                      max_entries=1, map_flags=BPF_F_MMAPABLE if mmapable else 0,
                      map_name=name.encode()[:BPF_OBJ_NAME_LEN - 1])
    try:
        return bpf(BPF_MAP_CREATE, attr)
    except OSError as e:
        raise _bpf_error(e, "BPF_MAP_CREATE") from None


def map_update(map_fd: int, key: int, value: int) -> None:
    """``map[key] = value`` for a map of u32 -> u32 (an XSKMAP takes a socket fd)."""
    k, v = ctypes.c_uint32(key), ctypes.c_uint32(value)
    attr = _MapElem(map_fd=map_fd, key=ctypes.addressof(k), value=ctypes.addressof(v))
    try:
        bpf(BPF_MAP_UPDATE_ELEM, attr)
    except OSError as e:
        raise _bpf_error(e, f"BPF_MAP_UPDATE_ELEM key {key}") from None


def map_delete(map_fd: int, key: int) -> None:
    """Remove ``map[key]``; a key that is already empty is not an error."""
    k = ctypes.c_uint32(key)
    try:
        bpf(BPF_MAP_DELETE_ELEM, _MapElem(map_fd=map_fd, key=ctypes.addressof(k)))
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise _bpf_error(e, f"BPF_MAP_DELETE_ELEM key {key}") from None


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    # struct bpf_insn on a little-endian CPU: op, dst:4|src:4, s16 offset, s32 immediate
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def xsk_redirect_insns(map_fd: int, fallback: int = XDP_PASS) -> bytes:
    """The program's instructions: redirect to ``map[rx_queue_index]``, else ``fallback``."""
    if fallback not in (XDP_PASS, XDP_DROP):
        raise ValueError("fallback must be XDP_PASS or XDP_DROP")
    return b"".join((
        _insn(0x61, dst=2, src=1, off=16),                # ldxw r2, [r1 + rx_queue_index]
        _insn(0x18, dst=1, src=BPF_PSEUDO_MAP_FD, imm=map_fd),  # lddw r1, map (low half)
        _insn(0x00),                                      #               (high half)
        _insn(0xB7, dst=3, imm=fallback),                 # mov64 r3, fallback
        _insn(0x85, imm=BPF_FUNC_redirect_map),           # call bpf_redirect_map
        _insn(0x95),                                      # exit
    ))


class Asm:
    """A BPF program being written: named opcodes, and labels for forward jumps.

    Opcodes are the kernel's encoding (class | operation | source); the names below
    are the ones this project's programs use.  ``jump`` records a label whose offset
    is resolved by :meth:`code`, so a program reads top to bottom without counted
    offsets.
    """

    # ALU64 (BPF_ALU64 | op | BPF_K or BPF_X)
    ADD_K, ADD_X, AND_K, RSH_K, XOR_K = 0x07, 0x0F, 0x57, 0x77, 0xA7
    MOV_K, MOV_X = 0xB7, 0xBF
    MOV32_K = 0xB4  # 32-bit: zero-extends, so an unsigned 32-bit constant stays one
    BE = 0xDC  # BPF_ALU | BPF_END | BPF_TO_BE: imm = 16/32/64, to network order
    # memory: LDX/STX | BPF_MEM | size
    LDX_W, LDX_DW = 0x61, 0x79
    STX_H, STX_W, STX_DW = 0x6B, 0x63, 0x7B
    # jumps: BPF_JMP (64-bit) and BPF_JMP32 (the low 32 bits, immediate unsigned)
    JA, JGT_X, JGE_X, JNE_K, JNE32_K = 0x05, 0x2D, 0x3D, 0x55, 0x56
    CALL, EXIT = 0x85, 0x95

    def __init__(self) -> None:
        self._insns: list[bytes | tuple[int, int, int, str, int]] = []
        self._labels: dict[str, int] = {}

    def op(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        """One instruction."""
        self._insns.append(_insn(code, dst, src, off, imm))

    def jump(self, code: int, label: str, dst: int = 0, src: int = 0, imm: int = 0) -> None:
        """A conditional (or ``JA``) jump to ``label``, defined later or earlier."""
        self._insns.append((code, dst, src, label, imm))

    def label(self, name: str) -> None:
        """Name the next instruction."""
        if name in self._labels:
            raise ValueError(f"label {name!r} defined twice")
        self._labels[name] = len(self._insns)

    def ld_map_value(self, dst: int, map_fd: int, offset: int = 0) -> None:
        """``dst = &map[0] + offset`` (a 64-bit load the kernel resolves; one-entry arrays)."""
        self.op(0x18, dst=dst, src=BPF_PSEUDO_MAP_VALUE, imm=map_fd)
        self.op(0x00, imm=offset)

    def code(self) -> bytes:
        """The instructions, jumps resolved (an offset counts from the next instruction)."""
        out = []
        for i, ins in enumerate(self._insns):
            if isinstance(ins, tuple):
                code, dst, src, label, imm = ins
                if label not in self._labels:
                    raise ValueError(f"jump to undefined label {label!r}")
                ins = _insn(code, dst, src, self._labels[label] - i - 1, imm)
            out.append(ins)
        return b"".join(out)


def prog_load_xdp(insns: bytes, name: str = PROG_NAME, license: bytes = LICENSE) -> int:
    """Load an XDP program; returns its fd.  A rejection carries the verifier's log."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license)
    attr = _ProgLoad(prog_type=BPF_PROG_TYPE_XDP, insn_cnt=len(insns) // 8,
                     insns=ctypes.addressof(code), license=ctypes.addressof(lic),
                     prog_name=name.encode()[:BPF_OBJ_NAME_LEN - 1])
    try:
        return bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EACCES):
            raise _bpf_error(e, "BPF_PROG_LOAD") from None
        first = e
    # Load again with the verifier's log on, only to explain the failure.
    log = ctypes.create_string_buffer(1 << 16)
    attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
    try:
        fd = bpf(BPF_PROG_LOAD, attr)
    except OSError:
        text = log.value.decode(errors="replace").strip().replace("\n", " | ")
        err = first.errno or errno.EINVAL
        raise NetmapError(err, f"XDP program {name!r} rejected by the kernel "
                               f"({os.strerror(err)}): {text}") from None
    return fd  # a transient failure the second time did not repeat


@dataclass(frozen=True)
class ProgInfo:
    """What the kernel tells about a loaded program."""

    id: int
    name: str
    tag: str
    type: int
    map_ids: tuple[int, ...]


@dataclass(frozen=True)
class MapInfo:
    """What the kernel tells about a map."""

    id: int
    name: str
    type: int
    max_entries: int


def _info(fd: int, info: ctypes.Structure) -> None:
    attr = _InfoByFd(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    try:
        bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    except OSError as e:
        raise _bpf_error(e, "BPF_OBJ_GET_INFO_BY_FD") from None


def prog_info(fd: int) -> ProgInfo:
    """Id, name, tag, type and map ids of the program behind ``fd``."""
    info = _ProgInfo()
    _info(fd, info)  # first pass: how many maps
    n = info.nr_map_ids
    ids = (ctypes.c_uint32 * max(n, 1))()
    info = _ProgInfo(nr_map_ids=n, map_ids=ctypes.addressof(ids))
    _info(fd, info)
    return ProgInfo(id=info.id, name=info.name.decode(errors="replace"),
                    tag=bytes(info.tag).hex(), type=info.type,
                    map_ids=tuple(ids[:min(n, info.nr_map_ids)]))


def map_info(fd: int) -> MapInfo:
    """Id, name, type and size of the map behind ``fd``."""
    info = _MapInfo()
    _info(fd, info)
    return MapInfo(id=info.id, name=info.name.decode(errors="replace"), type=info.type,
                   max_entries=info.max_entries)


def _fd_by_id(cmd: int, obj_id: int, what: str) -> int:
    try:
        return bpf(cmd, _GetFdById(id=obj_id))
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise NetmapError(errno.ENOENT, f"no BPF {what} with id {obj_id}") from None
        if e.errno == errno.EPERM:
            raise NetmapError(errno.EPERM, f"opening BPF {what} {obj_id} by id needs "
                                           "CAP_SYS_ADMIN (run as root)") from None
        raise _bpf_error(e, f"BPF_{what.upper()}_GET_FD_BY_ID") from None


def prog_fd_by_id(prog_id: int) -> int:
    """A new fd for the loaded program ``prog_id`` (needs CAP_SYS_ADMIN)."""
    return _fd_by_id(BPF_PROG_GET_FD_BY_ID, prog_id, "prog")


def map_fd_by_id(map_id: int) -> int:
    """A new fd for the map ``map_id`` (needs CAP_SYS_ADMIN)."""
    return _fd_by_id(BPF_MAP_GET_FD_BY_ID, map_id, "map")


class XskProgram:
    """An XSKMAP and the redirect program over it, owned by this process.

    ``set(queue, xsk_fd)`` makes frames arriving on ``queue`` go to that AF_XDP socket;
    the kernel also removes a socket from the map by itself when the socket is closed.
    Closing this object closes our fds; a program still attached to an interface stays
    loaded until it is detached.
    """

    def __init__(self, max_queues: int = 64, fallback: int = XDP_PASS,
                 name: str = PROG_NAME) -> None:
        self.map_fd = create_xskmap(max_queues)
        try:
            self.fd = prog_load_xdp(xsk_redirect_insns(self.map_fd, fallback), name)
        except BaseException:
            os.close(self.map_fd)
            raise
        self.max_queues = max_queues
        self.id = prog_info(self.fd).id

    @classmethod
    def by_id(cls, prog_id: int) -> XskProgram:
        """A handle on a program another process of ours loaded, to share its XSKMAP.

        Each process binds its own queues' sockets into the one map of the
        interface's program.
        """
        self = cls.__new__(cls)
        self.id = prog_id
        self.fd = self.map_fd = -1
        try:
            self.fd = prog_fd_by_id(prog_id)
            info = prog_info(self.fd)
            if info.name != PROG_NAME or not info.map_ids:
                raise NetmapError(errno.EINVAL, f"BPF program {prog_id} is not pynetmap's")
            self.map_fd = map_fd_by_id(info.map_ids[0])
            self.max_queues = map_info(self.map_fd).max_entries
        except BaseException:
            self.close()
            raise
        return self

    def set(self, queue: int, xsk_fd: int) -> None:
        """Redirect frames received on ``queue`` to the socket ``xsk_fd``."""
        if not 0 <= queue < self.max_queues:
            raise NetmapError(errno.EINVAL, f"queue {queue} beyond the XSKMAP's "
                                            f"{self.max_queues} entries")
        map_update(self.map_fd, queue, xsk_fd)

    def clear(self, queue: int) -> None:
        """Stop redirecting ``queue`` (its frames then meet the fallback action)."""
        map_delete(self.map_fd, queue)

    def close(self) -> None:
        """Close our fds (idempotent)."""
        for attr in ("fd", "map_fd"):
            fd = getattr(self, attr, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)

    def __enter__(self) -> XskProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TestRun(ctypes.Structure):
    # the ``test`` member of union bpf_attr (BPF_PROG_RUN), up to batch_size (5.18)
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]


class _XdpMd(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("data", "data_end", "data_meta",
                                              "ingress_ifindex", "rx_queue_index",
                                              "egress_ifindex")]


class XdpLiveRun:
    """Run an XDP program on live frames: the kernel's packet generator.

    Each :meth:`run` makes the kernel build ``repeat`` frames from ``frame`` (in a page
    pool: a page is initialised once and then recycled, so what a program wrote into
    a frame is still there when the page comes back -- a program that varies fields
    must write them all, every time), run the program on each as if it had arrived on
    ``ifindex``, and act on its verdict: ``XDP_TX`` transmits the frame out of that
    interface, flushed every ``batch_size`` frames.  No copy of the frame is made per
    call beyond the kernel's page set-up, and the GIL is released during the call, so
    threads run their own ``XdpLiveRun`` in parallel.
    """

    def __init__(self, prog_fd: int, frame: bytes, ifindex: int, batch_size: int = 0) -> None:
        self._data = ctypes.create_string_buffer(bytes(frame), len(frame))
        self._ctx = _XdpMd(data_end=len(frame), ingress_ifindex=ifindex)
        self._attr = _TestRun(prog_fd=prog_fd, data_size_in=len(frame),
                              data_in=ctypes.addressof(self._data),
                              ctx_size_in=ctypes.sizeof(self._ctx),
                              ctx_in=ctypes.addressof(self._ctx),
                              flags=BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=batch_size)

    def run(self, repeat: int) -> None:
        """Run the program ``repeat`` times (at least once); ``OSError`` as the kernel says.

        A signal interrupts the call with ``EINTR`` after some frames: the program's own
        count is then the only exact figure of what went.
        """
        self._attr.repeat = repeat
        bpf(BPF_PROG_TEST_RUN, self._attr)
