"""Creating and freeing netmap's objects inside a region: rings (with their
kring block), ``netmap_if`` descriptors and extra-buffer lists.

Every port type builds its rings here, so they all start in the state of
spec §2.1 (TX: ``tail = hwtail = n-1``; RX: empty) with netmap's binary
layout.  Callers hold a registry transaction.
"""

from __future__ import annotations

import numpy as np

from . import layout as L
from . import region as R
from .constants import NETMAP_API, NI_PRIV_MEM, NR_TX
from .kring import KRING_SIZE, init_words, kring_words
from .registry import State


def create_ring(state: State, region: R.Region, n: int, direction: int, ringid: int,
                buf_idx: np.ndarray | None) -> int:
    """Allocate and initialise a ring of ``n`` slots; returns its region offset.

    ``buf_idx`` gives the slots' buffers (None: all slots point at buffer 0,
    netmap's placeholder ring).
    """
    ofs = R.alloc(state, region.mem_id, "ring", KRING_SIZE + L.ring_size(n)) + KRING_SIZE
    init_ring(region, ofs, n, direction, ringid, buf_idx)
    return ofs


def init_ring(region: R.Region, ofs: int, n: int, direction: int, ringid: int,
              buf_idx: np.ndarray | None) -> None:
    """Lay out a new ring (and its kring block before it) at ``ofs`` (spec §2.1).

    No allocation: also for regions without an allocator (``Region.wrap``).
    """
    buf = region.mem
    hdr = np.ndarray((), L.RING_DTYPE, buffer=buf, offset=ofs)
    hdr[...] = 0
    hdr["buf_ofs"] = region.buf_pool_ofs - ofs
    hdr["num_slots"] = n
    hdr["nr_buf_size"] = region.buf_size
    hdr["ringid"] = ringid
    hdr["dir"] = direction
    slots = np.ndarray(n, L.SLOT_DTYPE, buffer=buf, offset=ofs + L.RING_HDR_SIZE)
    slots["buf_idx"] = 0 if buf_idx is None else buf_idx
    slots["len"] = region.buf_size
    slots["flags"] = 0
    slots["ptr"] = 0
    init_words(kring_words(buf, ofs), n, direction)
    if direction == NR_TX:
        hdr["tail"] = n - 1


def free_ring(state: State, region: R.Region, ofs: int) -> None:
    R.free(state, region.mem_id, "ring", ofs - KRING_SIZE)


def ring_slots(region: R.Region, ofs: int) -> np.ndarray:
    """The slot array of the ring at ``ofs`` (control-path access)."""
    n = int(np.ndarray((), "<u4", buffer=region.mem, offset=ofs + 8))
    return np.ndarray(n, L.SLOT_DTYPE, buffer=region.mem, offset=ofs + L.RING_HDR_SIZE)


def create_if(state: State, region: R.Region, name: str, ntx: int, nrx: int, nhtx: int,
              nhrx: int, tx_bound: dict[int, int], rx_bound: dict[int, int],
              bufs_head: int = 0) -> int:
    """Allocate a ``netmap_if``; ``*_bound`` map ring id -> ring offset.

    Ring ids count NIC rings first, then host rings, as ``ring_ofs[]``
    does.  Unbound rings get offset 0, as in netmap.  Host ring counts are
    reported as at least 1 (spec §1.3).
    """
    nhtx_if, nhrx_if = max(1, nhtx), max(1, nhrx)
    n_ofs = ntx + nhtx_if + nrx + nhrx_if
    ofs = R.alloc(state, region.mem_id, "if", L.if_size(n_ofs))
    nifp = np.ndarray((), L.IF_DTYPE, buffer=region.mem, offset=ofs)
    nifp[...] = 0
    nifp["ni_name"] = name.encode()[: L.IF_DTYPE["ni_name"].itemsize - 1]
    nifp["ni_version"] = NETMAP_API
    nifp["ni_flags"] = NI_PRIV_MEM
    nifp["ni_tx_rings"] = ntx
    nifp["ni_rx_rings"] = nrx
    nifp["ni_host_tx_rings"] = nhtx_if
    nifp["ni_host_rx_rings"] = nhrx_if
    nifp["ni_bufs_head"] = bufs_head
    ring_ofs = np.ndarray(n_ofs, "<i8", buffer=region.mem, offset=ofs + L.IF_HDR_SIZE)
    ring_ofs[:] = 0
    for i, o in tx_bound.items():
        ring_ofs[i] = o - ofs
    for i, o in rx_bound.items():
        # rx ids count NIC rx rings then host rx rings; both follow all tx entries
        ring_ofs[ntx + nhtx_if + i] = o - ofs
    return ofs


def free_if(state: State, region: R.Region, ofs: int, extra: int) -> None:
    """Free a ``netmap_if`` and the extra buffers its ``ni_bufs_head`` lists."""
    head = int(np.ndarray((), "<u4", buffer=region.mem, offset=ofs + L.IF_BUFS_HEAD_OFS))
    region.free_bufs(np.array(walk_list(region, head, extra), dtype=np.int64))
    R.free(state, region.mem_id, "if", ofs)


def make_extra_list(region: R.Region, k: int) -> tuple[int, int]:
    """Allocate ``k`` extra buffers linked by their first 4 bytes (spec §2.7).

    Returns (head, count).  The list is built by prepending, so the head is
    the last buffer allocated, as netmap does.
    """
    if k <= 0:
        return 0, 0
    idx = region.alloc_bufs(k)
    return link_list(region, idx[::-1]), k


def link_list(region: R.Region, idx: np.ndarray) -> int:
    """Chain buffers ``idx[0] -> idx[1] -> ... -> 0`` by their first 4 bytes (the
    extra-buffer list of spec §2.7); returns the head (0 for none)."""
    idx = np.asarray(idx, np.uint32)
    if not len(idx):
        return 0
    nxt = np.append(idx[1:], np.uint32(0))
    region.bufs[idx, :4] = nxt.view(np.uint8).reshape(-1, 4)
    return int(idx[0])


def walk_list(region: R.Region, head: int, limit: int) -> list[int]:
    """The extra-buffer list from ``head``; stops at an invalid index or ``limit`` entries."""
    out: list[int] = []
    i = head
    while 2 <= i < region.nbufs and len(out) < limit:
        out.append(i)
        i = int(region.bufs[i, :4].view(np.uint32)[0])
    return out
