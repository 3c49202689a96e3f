"""The TX-slot check every NIC engine shares (AF_XDP, AF_PACKET, libpcap, Npcap).

OS-neutral on purpose: the engines live in OS-specific packages
(``linux/``, ``windows/``), and this must import on every OS.
"""

from __future__ import annotations

import numpy as np

from .constants import NS_MOREFRAG
from .kring import SlotError, bad_slots, gather, spans
from .ring import Ring

MIN_FRAME = 14


def check_tx(ring: Ring, hwcur: int, head: int, nbufs: int, max_frame: int) -> None:
    """Raise SlotError unless every slot to send is one whole frame in a valid buffer.

    A length outside [14, max_frame] never reaches the wire.  Multi-slot
    packets (``NS_MOREFRAG``) are refused: each slot would leave as a frame.
    """
    for s in spans(hwcur, head, ring.num_slots):
        lens = ring.slot_len[s]
        if bad_slots(ring.slot_buf_idx[s], lens, nbufs, max_frame) or (
                len(lens) and lens.min() < MIN_FRAME):
            raise SlotError(f"slots {hwcur}..{head} hold an invalid buffer or a length "
                            f"outside [{MIN_FRAME}, {max_frame}]")
        if np.any(ring.slot_flags[s] & NS_MOREFRAG):
            raise SlotError(f"slots {hwcur}..{head}: NS_MOREFRAG (multi-slot packets) is "
                            "not supported on NIC ports yet")


def tx_batch(ring: Ring, hwcur: int, head: int, nbufs: int,
             max_frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(buffer indices, lengths) of the slots ``[hwcur, head)`` a txsync sends, checked."""
    check_tx(ring, hwcur, head, nbufs, max_frame)
    n = ring.num_slots
    return gather(ring.slot_buf_idx, hwcur, head, n), gather(ring.slot_len, hwcur, head, n)
