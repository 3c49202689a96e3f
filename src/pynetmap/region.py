"""A memory region: netmap's allocator, shared between processes (spec §5).

One region per memory id, one shared-memory segment per region, laid out as::

    [control header][buffer bitmap][if pool][ring pool][buffer pool]

The if, ring and buffer pools keep netmap's binary layout, so ring
``buf_ofs`` and buffer indices mean what they mean in netmap.  The buffer
pool starts ``Geometry.lead`` bytes after a page boundary (0, or 256 for an
interface's region) and its buffers are ``buf_size`` (2048) bytes apart, so
the page-aligned area from there registers as an AF_XDP UMEM whose chunk i
(address i * 2048) is buffer i.  Indices 0 and 1 are never handed out.

Pool *bookkeeping* (which byte ranges of the if and ring pools are used)
lives in the registry (control path); the buffer bitmap lives in the region
itself, so allocating n buffers is one NumPy scan.  Both are only changed
inside a registry transaction.

Segments are created mode 0600 (``multiprocessing.shared_memory`` does so on
POSIX), so another user cannot attach to our pipes.  On Linux they are
tmpfs files and sparse: a large buffer pool costs memory only for buffers
that are touched.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import sys
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from .errors import NetmapError
from .registry import State, shm_prefix

PAGE = max(mmap.PAGESIZE, 4096)
MAGIC = b"PYNETMAP"
LAYOUT_VERSION = 1
# magic, version, mem_id, size, bitmap, if pool ofs/size, ring pool ofs/size, buf pool ofs,
# nbufs, buf_size
_HDR = struct.Struct("<8sIIQQQQQQQII")
ALIGN = 64


def _round(x: int, a: int) -> int:
    return (x + a - 1) // a * a


@dataclass(frozen=True)
class Geometry:
    """Sizes of a region's pools."""

    if_pool_size: int
    ring_pool_size: int
    nbufs: int
    buf_size: int = 2048
    #: bytes between a page boundary and the buffer pool.  A region behind an
    #: AF_XDP socket uses 256 (``XDP_PACKET_HEADROOM``): the kernel writes a
    #: received frame 256 bytes into its UMEM chunk, so with the pool starting
    #: 256 bytes after the (page-aligned) UMEM, UMEM chunk i *is* buffer i and
    #: the frame lands at byte 0 of the buffer, where netmap puts it.
    lead: int = 0

    def layout(self) -> tuple[int, int, int, int, int]:
        """(bitmap, if pool, ring pool, buffer pool) offsets and the total size."""
        bitmap = PAGE
        ifp = bitmap + _round(self.nbufs, PAGE)
        ringp = ifp + _round(self.if_pool_size, PAGE)
        bufp = ringp + _round(self.ring_pool_size, PAGE) + self.lead
        return bitmap, ifp, ringp, bufp, bufp + self.nbufs * self.buf_size


def _open_shm(name: str, create: bool, size: int = 0) -> shared_memory.SharedMemory:
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, create=create, size=size, track=False)
    shm = shared_memory.SharedMemory(name, create=create, size=size)
    if sys.platform != "win32":
        # Before 3.13 every attach registers with the resource tracker, which
        # unlinks the segment when *this* process exits, under the feet of
        # the other users.  The registry does the unlinking instead.
        from multiprocessing import resource_tracker

        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    return shm


def unlink(name: str) -> None:
    """Remove a segment's name; mappings that exist stay valid until closed."""
    if sys.platform == "win32":
        return  # a Windows mapping goes away with its last handle
    import _posixshmem  # the module multiprocessing.shared_memory itself uses

    try:
        _posixshmem.shm_unlink("/" + name.lstrip("/"))
    except FileNotFoundError:
        pass


def _close_shm(shm: shared_memory.SharedMemory) -> None:
    try:
        shm.close()
    except BufferError:
        # A NumPy view or memoryview handed to the user is still alive; the
        # mapping is released when the last of them is garbage collected.
        pass


class Region:
    """A mapped region: NumPy views of the buffer pool and the buffer bitmap."""

    def __init__(self, shm: shared_memory.SharedMemory) -> None:
        self.shm = shm
        self.buf = shm.buf
        (magic, ver, mem_id, size, bitmap, ifofs, ifsz, ringofs, ringsz, bufofs, nbufs,
         bufsz) = _HDR.unpack_from(shm.buf, 0)
        if magic != MAGIC or ver != LAYOUT_VERSION:
            raise NetmapError(22, f"shared memory {shm.name} is not a pynetmap region")
        self.mem_id = mem_id
        self.size = size
        self.if_pool_ofs, self.if_pool_size = ifofs, ifsz
        self.ring_pool_ofs, self.ring_pool_size = ringofs, ringsz
        self.buf_pool_ofs = bufofs
        self.nbufs = nbufs
        self.buf_size = bufsz
        self.bitmap = np.ndarray(nbufs, np.uint8, buffer=shm.buf, offset=bitmap)
        #: The buffer pool as a 2-D array: ``bufs[i]`` is buffer i.
        self.bufs = np.ndarray((nbufs, bufsz), np.uint8, buffer=shm.buf, offset=bufofs)
        self.users = 0

    @property
    def name(self) -> str:
        return self.shm.name

    @property
    def base_address(self) -> int:
        """Virtual address of the mapping in this process (for OS interfaces like UMEM)."""
        return ctypes.addressof(ctypes.c_char.from_buffer(self.buf))

    @property
    def lead(self) -> int:
        """Bytes from the page boundary before the buffer pool to buffer 0 (see Geometry)."""
        return self.buf_pool_ofs % PAGE

    def umem(self) -> tuple[int, int]:
        """``(address, length)`` of the page-aligned chunk area behind the buffer pool.

        Chunk i (UMEM address ``i * buf_size``) starts ``lead`` bytes before
        buffer i; register it as an AF_XDP UMEM with ``buf_size`` chunks.
        """
        return self.base_address + self.buf_pool_ofs - self.lead, self.nbufs * self.buf_size

    def alloc_bufs(self, k: int) -> np.ndarray:
        """Take the ``k`` lowest free buffer indices (netmap's first fit)."""
        free = np.flatnonzero(self.bitmap == 0)[:k]
        if len(free) < k:
            raise NetmapError(
                12, f"memory region {self.mem_id} is out of buffers: {k} needed, "
                f"{len(free)} free of {self.nbufs}; close other ports of this region "
                "or use a separate pipe parent",
            )
        self.bitmap[free] = 1
        return free.astype(np.uint32)

    def free_bufs(self, idx: np.ndarray) -> None:
        """Give buffers back; reserved and out-of-range indices are ignored."""
        idx = np.asarray(idx, dtype=np.int64)
        idx = idx[(idx >= 2) & (idx < self.nbufs)]
        self.bitmap[idx] = 0

    def close(self) -> None:
        self.bitmap = self.bufs = None  # type: ignore[assignment]
        self.buf = None  # type: ignore[assignment]
        _close_shm(self.shm)


_cache: dict[int, Region] = {}


def create(state: State, mem_id: int, geom: Geometry) -> Region:
    """Create region ``mem_id`` with geometry ``geom`` and record it in the registry."""
    bitmap, ifp, ringp, bufp, size = geom.layout()
    name = f"{shm_prefix()}{mem_id}"
    unlink(name)  # a leftover of a registry that was wiped
    try:
        shm = _open_shm(name, create=True, size=size)
    except OSError as e:
        raise NetmapError(e.errno or 12, f"cannot create shared memory of {size} bytes: {e}") from e
    _HDR.pack_into(shm.buf, 0, MAGIC, LAYOUT_VERSION, mem_id, size, bitmap, ifp,
                   geom.if_pool_size, ringp, geom.ring_pool_size, bufp, geom.nbufs,
                   geom.buf_size)
    region = Region(shm)
    region.bitmap[:2] = 1  # indices 0 and 1 are reserved
    state["regions"][str(mem_id)] = {"shm": name, "allocs": {"if": [], "ring": []}}
    _cache[mem_id] = region
    return region


def attach(state: State, mem_id: int) -> Region:
    """This process's mapping of region ``mem_id`` (one per process, shared by its ports)."""
    region = _cache.get(mem_id)
    rec = state["regions"].get(str(mem_id))
    if rec is None:
        raise NetmapError(22, f"no memory region with id {mem_id}")
    if region is None or region.name.lstrip("/") != rec["shm"]:
        region = Region(_open_shm(rec["shm"], create=False))
        _cache[mem_id] = region
    return region


def hold(region: Region) -> None:
    region.users += 1


def drop(region: Region) -> None:
    """A port of this process stopped using ``region``; unmap it after the last."""
    region.users -= 1
    if region.users <= 0 and _cache.get(region.mem_id) is region:
        del _cache[region.mem_id]
        region.close()


def alloc(state: State, mem_id: int, pool: str, size: int) -> int:
    """First-fit ``size`` bytes in the if or ring pool; returns the region offset."""
    region = _cache[mem_id]
    base, limit = (
        (region.if_pool_ofs, region.if_pool_size)
        if pool == "if"
        else (region.ring_pool_ofs, region.ring_pool_size)
    )
    size = _round(size, ALIGN)
    used = state["regions"][str(mem_id)]["allocs"][pool]
    pos = 0
    at = len(used)
    for i, (off, sz) in enumerate(used):
        if off - pos >= size:
            at = i
            break
        pos = off + sz
    if at == len(used) and limit - pos < size:
        raise NetmapError(
            12, f"memory region {mem_id}: the {pool} pool is full ({size} bytes needed)"
        )
    used.insert(at, [pos, size])
    return base + pos


def free(state: State, mem_id: int, pool: str, ofs: int) -> None:
    region = _cache[mem_id]
    base = region.if_pool_ofs if pool == "if" else region.ring_pool_ofs
    used = state["regions"][str(mem_id)]["allocs"][pool]
    for i, (off, _sz) in enumerate(used):
        if off == ofs - base:
            del used[i]
            return


def drop_unused(region: Region) -> None:
    """Unmap a region that was attached only for bookkeeping (no port of ours uses it)."""
    if region.users <= 0 and _cache.get(region.mem_id) is region:
        del _cache[region.mem_id]
        region.close()
