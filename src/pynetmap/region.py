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
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import osl
from .errors import NetmapError
from .registry import State, shm_prefix, thread_lock, tidy, undo

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


class Region:
    """A mapped region: the buffer pool as a 2-D array, the buffer bitmap, the pools' places.

    ``buf`` is the mapping as a memoryview (for scalar casts of ring
    headers); ``mem`` is the same bytes as a NumPy array that *holds* the
    mapping's buffer export, and every NumPy view is made from it, so a
    view the user keeps after ``close()`` keeps the mapping alive instead
    of pointing into unmapped memory.
    """

    def __init__(self, buf: memoryview, mem_id: int, size: int, buf_pool_ofs: int,
                 nbufs: int, buf_size: int, if_pool: tuple[int, int] = (0, 0),
                 ring_pool: tuple[int, int] = (0, 0), bitmap_ofs: int | None = None,
                 owner: Any = None) -> None:
        self.owner = owner  # what to close with the region (a SharedMemory), or None
        self.buf = buf
        self.mem = np.frombuffer(buf, np.uint8)
        self.mem_id = mem_id
        self.size = size
        self.if_pool_ofs, self.if_pool_size = if_pool
        self.ring_pool_ofs, self.ring_pool_size = ring_pool
        self.buf_pool_ofs = buf_pool_ofs
        self.nbufs = nbufs
        self.buf_size = buf_size
        self.bitmap = (None if bitmap_ofs is None else
                       np.ndarray(nbufs, np.uint8, buffer=self.mem, offset=bitmap_ofs))
        #: The buffer pool as a 2-D array: ``bufs[i]`` is buffer i.
        self.bufs = np.ndarray((nbufs, buf_size), np.uint8, buffer=self.mem, offset=buf_pool_ofs)
        self.users = 0
        self._rows: dict[int, np.ndarray] = {}

    def rows(self, nbytes: int) -> np.ndarray:
        """The buffer pool as one item per buffer: its first ``nbytes`` (rounded up to 16).

        Fancy indexing on this 1-D array of fixed-size items copies each
        buffer's prefix with one memcpy: for short frames three to eight
        times faster than indexing the 2-D ``bufs`` (which copies byte columns).
        """
        size = min(self.buf_size, (nbytes + 15) & ~15)
        v = self._rows.get(size)
        if v is None:
            v = self._rows[size] = np.ndarray((self.nbufs,), f"V{size}", buffer=self.mem,
                                              offset=self.buf_pool_ofs,
                                              strides=(self.buf_size,))
        return v

    @classmethod
    def from_shm(cls, shm: Any) -> Region:
        """A pynetmap region in a shared-memory segment (laid out by :func:`create`)."""
        (magic, ver, mem_id, size, bitmap, ifofs, ifsz, ringofs, ringsz, bufofs, nbufs,
         bufsz) = _HDR.unpack_from(shm.buf, 0)
        if magic != MAGIC or ver != LAYOUT_VERSION:
            raise NetmapError(22, f"shared memory {shm.name} is not a pynetmap region")
        # Windows rounds an attached mapping up to a page: the header keeps the true size.
        return cls(shm.buf[:size], mem_id, size, bufofs, nbufs, bufsz, (ifofs, ifsz),
                   (ringofs, ringsz), bitmap, owner=shm)

    @classmethod
    def wrap(cls, buf: Any, mem_id: int, buf_pool_ofs: int, nbufs: int,
             buf_size: int = 2048) -> Region:
        """A region over memory pynetmap did not lay out (a kernel's mapping, a test's bytearray).

        It has no allocator: its rings and buffers are the owner's.
        """
        mv = memoryview(buf).cast("B")
        return cls(mv, mem_id, len(mv), buf_pool_ofs, nbufs, buf_size)

    @property
    def name(self) -> str:
        return self.owner.name if self.owner is not None else f"wrapped-{self.mem_id}"

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
        """Take the ``k`` lowest free buffer indices (netmap's first fit).

        Inside a registry transaction; a transaction that fails gives them back.
        """
        if self.bitmap is None:
            raise NetmapError(22, f"memory region {self.mem_id} is not pynetmap's to allocate")
        free = np.flatnonzero(self.bitmap == 0)[:k]
        if len(free) < k:
            raise NetmapError(
                12, f"memory region {self.mem_id} is out of buffers: {k} needed, "
                f"{len(free)} free of {self.nbufs}; close other ports of this region "
                "or use a separate pipe parent",
            )
        self.bitmap[free] = 1
        undo(lambda: self.free_bufs(free))
        return free.astype(np.uint32)

    def free_bufs(self, idx: np.ndarray) -> None:
        """Give buffers back; reserved and out-of-range indices are ignored."""
        if self.bitmap is None:
            return
        idx = np.asarray(idx, dtype=np.int64)
        idx = idx[(idx >= 2) & (idx < self.nbufs)]
        self.bitmap[idx] = 0

    def close(self) -> None:
        """Unmap (deferred while NumPy views handed out are alive)."""
        self.bitmap = self.bufs = self.mem = None  # type: ignore[assignment]
        self._rows.clear()
        try:
            self.buf.release()
        except BufferError:
            pass  # a NumPy view handed out still exports it: unmapped when it goes
        self.buf = None  # type: ignore[assignment]
        if self.owner is not None:
            osl.shm_close(self.owner)


_cache: dict[int, Region] = {}


def create(state: State, mem_id: int, geom: Geometry) -> Region:
    """Create region ``mem_id`` with geometry ``geom`` and record it in the registry."""
    bitmap, ifp, ringp, bufp, size = geom.layout()
    name = f"{shm_prefix()}{mem_id}"
    try:
        shm = osl.shm_create(name, size)  # replaces a leftover of a registry that was wiped
    except NetmapError:
        raise
    except OSError as e:
        raise NetmapError(e.errno or 12, f"cannot create shared memory of {size} bytes: {e}") from e
    undo(lambda: osl.shm_unlink(name))
    buf = shm.buf
    assert buf is not None  # a new mapping has its buffer
    _HDR.pack_into(buf, 0, MAGIC, LAYOUT_VERSION, mem_id, size, bitmap, ifp,
                   geom.if_pool_size, ringp, geom.ring_pool_size, bufp, geom.nbufs,
                   geom.buf_size)
    region = Region.from_shm(shm)
    assert region.bitmap is not None  # a pynetmap region has one
    region.bitmap[:2] = 1  # indices 0 and 1 are reserved
    state["regions"][str(mem_id)] = {"shm": name, "allocs": {"if": [], "ring": []}}
    _cache[mem_id] = region
    undo(lambda: _forget(region))
    return region


def _forget(region: Region) -> None:
    """Unmap a region this process mapped for an open that failed."""
    if region.users <= 0 and _cache.get(region.mem_id) is region:
        del _cache[region.mem_id]
        region.close()


def attach(state: State, mem_id: int) -> Region:
    """This process's mapping of region ``mem_id`` (one per process, shared by its ports)."""
    region = _cache.get(mem_id)
    rec = state["regions"].get(str(mem_id))
    if rec is None:
        raise NetmapError(22, f"no memory region with id {mem_id}")
    if region is None or region.name.lstrip("/") != rec["shm"]:
        region = Region.from_shm(osl.shm_attach(rec["shm"]))
        _cache[mem_id] = region
        # unmapped at the transaction's end unless a port of ours holds it by then
        # (one mapped only to look at its rings, or for an open that failed)
        tidy(lambda: _forget(region))
    return region


def map_id(mem_id: int) -> Region:
    """Map region ``mem_id`` by its name, without the registry, and hold it (give it
    back with :func:`drop`): a switch's data path maps the regions of the ports it
    delivers to, outside any transaction."""
    with thread_lock:
        region = _cache.get(mem_id)
        if region is None:
            region = Region.from_shm(osl.shm_attach(f"{shm_prefix()}{mem_id}"))
            _cache[mem_id] = region
        hold(region)
    return region


def hold(region: Region) -> None:
    region.users += 1


def drop(region: Region) -> None:
    """A port of this process stopped using ``region``; unmap it after the last.

    Under the thread lock: an open in another thread may be taking this very
    mapping from the cache (inside its transaction) and must not find it closed.
    """
    with thread_lock:
        region.users -= 1
        _forget(region)


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
    _forget(region)
