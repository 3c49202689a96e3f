"""An interface as one netmap ring pair through AF_PACKET mmap rings (the fallback engine).

Used where AF_XDP is not available (old kernel, no CAP_BPF, a driver without
XDP) or when asked for.  The kernel's TPACKET_V2 rings hold their own copies
of the frames, so this engine copies, a batch at a time with 2-D NumPy
slices: txsync copies the buffers of ``[hwcur, head)`` into free TX frames
and kicks once (the slots are free again at once, as netmap's host TX ring);
rxsync copies ready RX frames into the buffers of the kernel-owned slots
``[hwtail, ...)`` and hands the frames back.

AF_PACKET has no notion of queues, so a port on this engine has one ring
pair, and it cannot take received traffic away from the OS stack: the stack
still gets its copy of every frame.
"""

from __future__ import annotations

import numpy as np

from ..kring import KRing, SlotError, clear_buf_changed, gather, rx_room, scatter
from ..nic_tx import tx_batch
from ..region import Region
from ..ring import Ring
from .tpacket import PacketSocket


class PacketQueue:
    """The kernel side of the netmap TX/RX ring pair of ``ifname`` on AF_PACKET."""

    engine = "packet"
    mode = "copy"

    def __init__(self, ifname: str, region: Region, tx: Ring | None, rx: Ring | None,
                 backlog: int = 8) -> None:
        # the kernel's RX ring is ``backlog`` times the netmap ring: frames it can take
        # while the application is busy (AF_PACKET drops when its ring is full)
        rx_frames = rx.num_slots * (1 + backlog) if rx is not None else 0
        self.sock = PacketSocket(ifname, rx_frames=rx_frames,
                                 tx_frames=tx.num_slots if tx is not None else 0,
                                 frame_size=region.buf_size)
        self.nbufs = region.nbufs
        self.bufs = region.bufs
        self.max_frame = min(region.buf_size - region.lead,
                             self.sock.tx.max_len if self.sock.tx is not None else 1 << 16)

    def fileno(self) -> int:
        return self.sock.fileno()

    def txsync(self, kring: KRing, head: int) -> None:
        ring, n = kring.ring, kring.num_slots
        hwcur = kring.hwcur
        tx = self.sock.tx
        assert tx is not None  # txsync runs only on a queue bound with a TX ring
        if head != hwcur:
            idx, lens = tx_batch(ring, hwcur, head, self.nbufs, self.max_frame)
            taken = tx.produce(self.bufs, lens, rows=idx)
            if taken:
                end = (hwcur + taken) % n
                clear_buf_changed(ring.slot_flags, hwcur, end, n)
                kring.hwcur = hwcur = end
        if tx.in_flight():
            self.sock.kick()
        kring.hwtail = (hwcur - 1) % n

    def rxsync(self, kring: KRing, head: int) -> None:
        ring, n = kring.ring, kring.num_slots
        hwcur = kring.hwcur
        rx = self.sock.rx
        assert rx is not None  # rxsync runs only on a queue bound with an RX ring
        if head != hwcur:
            clear_buf_changed(ring.slot_flags, hwcur, head, n)
            kring.hwcur = hwcur = head
        hwtail, room = rx_room(kring)
        got = rx.ready(room) if room else 0
        if not got:
            return
        end = (hwtail + got) % n
        rows = gather(ring.slot_buf_idx, hwtail, end, n)
        if rows.min() < 2 or rows.max() >= self.nbufs:
            # the user swapped a bad buffer into a slot it had released
            raise SlotError(f"slots {hwtail}..{end} hold an invalid buffer")
        lens = rx.copy_to(self.bufs, got, rows=rows)
        rx.release(got)
        scatter(ring.slot_len, hwtail, lens, n)
        scatter(ring.slot_flags, hwtail, np.zeros(got, np.uint16), n)
        kring.hwtail = end

    def statistics(self) -> dict[str, int]:
        return self.sock.statistics()

    def close(self) -> None:
        self.sock.close()
