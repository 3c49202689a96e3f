"""netmap's shared-memory ABI as NumPy dtypes (NETMAP-SPEC §1).

The dtypes carry the exact byte offsets of the C structs on LP64, so a
region built by pynetmap could be read by C code using ``netmap_user.h``
and the reverse.  Hot paths do not go through these dtypes field by field:
they use memoryview casts of the ring header (fast scalar access) and
per-field strided views of the slot array (fast bulk access).
"""

from __future__ import annotations

import numpy as np

SLOT_DTYPE = np.dtype(
    {
        "names": ["buf_idx", "len", "flags", "ptr"],
        "formats": ["<u4", "<u2", "<u2", "<u8"],
        "offsets": [0, 4, 6, 8],
        "itemsize": 16,
    }
)

RING_HDR_SIZE = 256
RING_DTYPE = np.dtype(
    {
        "names": [
            "buf_ofs", "num_slots", "nr_buf_size", "ringid", "dir", "head", "cur", "tail",
            "flags", "ts_sec", "ts_usec", "offset_mask", "buf_align", "sem",
        ],
        "formats": [
            "<i8", "<u4", "<u4", "<u2", "<u2", "<u4", "<u4", "<u4",
            "<u4", "<i8", "<i8", "<u8", "<u8", ("u1", 128),
        ],
        "offsets": [0, 8, 12, 16, 18, 20, 24, 28, 32, 40, 48, 56, 64, 128],
        "itemsize": RING_HDR_SIZE,
    }
)

IF_HDR_SIZE = 56
IF_DTYPE = np.dtype(
    {
        "names": [
            "ni_name", "ni_version", "ni_flags", "ni_tx_rings", "ni_rx_rings", "ni_bufs_head",
            "ni_host_tx_rings", "ni_host_rx_rings", "ni_spare1",
        ],
        "formats": ["S16", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", ("<u4", 3)],
        "offsets": [0, 16, 20, 24, 28, 32, 36, 40, 44],
        "itemsize": IF_HDR_SIZE,
    }
)

#: byte offset of ``ni_bufs_head`` in a netmap_if (the extra-buffer list, spec §2.7)
IF_BUFS_HEAD_OFS: int = IF_DTYPE.fields["ni_bufs_head"][1]  # type: ignore[index] # a struct

# Indices of the ring header's 32-bit words, for memoryview("I") access.
RW_NUM_SLOTS = 2
RW_BUF_SIZE = 3
RW_HEAD = 5
RW_CUR = 6
RW_TAIL = 7
RW_FLAGS = 8
# 64-bit words, for memoryview("q") access.
RQ_BUF_OFS = 0
RQ_TS_SEC = 5
RQ_TS_USEC = 6

# Indices of the netmap_if's 32-bit words.
IW_TX_RINGS = 6
IW_RX_RINGS = 7
IW_BUFS_HEAD = 8
IW_HOST_TX_RINGS = 9
IW_HOST_RX_RINGS = 10


def ring_size(num_slots: int) -> int:
    """Bytes of one netmap_ring object with ``num_slots`` slots."""
    return RING_HDR_SIZE + SLOT_DTYPE.itemsize * num_slots


def if_size(n_ring_ofs: int) -> int:
    """Bytes of one netmap_if with ``n_ring_ofs`` entries in ``ring_ofs[]``."""
    return IF_HDR_SIZE + 8 * n_ring_ofs
