"""One queue of an interface as a netmap ring pair, through an AF_XDP socket.

The port's region is the socket's UMEM: chunk i is buffer i (see
``region.Geometry.lead``), so a netmap slot and an XDP descriptor name the
same memory and the syncs only translate indices, a whole batch at a time:

* txsync: the descriptors of ``[hwcur, head)`` go to the XSK TX ring as
  ``addr = buf_idx * 2048 + 256``, then one ``sendto`` kick.  The kernel
  completes frames in the order it took them, so each completion returns
  the oldest in-flight slot: ``hwtail = hwcur - 1 - in_flight``.
* rxsync: released slots ``[hwcur, head)`` give their buffers (whatever the
  user swapped in, ``NS_BUF_CHANGED`` or not) to the fill ring; received
  descriptors become slots ``[hwtail, ...)`` with ``buf_idx = addr // 2048``.
  Slots the kernel owns name no buffer of their own: a buffer is either
  held by a user slot or lent to the kernel through the fill ring.

The XSK RX ring is as long as the spare buffers the caller gives (on top
of the netmap ring's own, all lent to the fill ring at start): a backlog
the kernel fills while the application is busy, so a receiver that keeps
up on average does not drop during bursts (``rx_ring_full``).
"""

from __future__ import annotations

import numpy as np

from ..kring import KRing, SlotError, clear_buf_changed, gather, rx_room, scatter
from ..nic_tx import tx_batch
from ..region import Region
from ..ring import Ring
from .xsk import XDP_PACKET_HEADROOM, XskSocket


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class XdpQueue:
    """The kernel side of one netmap TX/RX ring pair bound to ``ifname`` queue ``queue``."""

    engine = "xdp"

    def __init__(self, ifname: str, queue: int, region: Region, tx: Ring | None,
                 rx: Ring | None, mode: str, spare: np.ndarray) -> None:
        n_tx = tx.num_slots if tx is not None else 0
        n_rx = rx.num_slots if rx is not None else 0
        fill_size = _pow2(n_rx + len(spare)) if rx is not None else 64
        self.sock = XskSocket(ifname, queue, region.umem(), mode=mode,
                              rx_size=_pow2(max(n_rx, len(spare))) if rx is not None else 0,
                              tx_size=_pow2(n_tx) if tx is not None else 0,
                              fill_size=fill_size, comp_size=_pow2(max(n_tx, 64)),
                              frame_size=region.buf_size)
        self.mode = self.sock.mode
        self.nbufs = region.nbufs
        self.shift = region.buf_size.bit_length() - 1
        if region.lead != XDP_PACKET_HEADROOM:
            raise ValueError("an AF_XDP queue needs a region with a 256-byte lead")
        self.max_frame = region.buf_size - region.lead
        self.in_flight = 0
        fill, comp = self.sock.fill, self.sock.comp
        assert fill is not None and comp is not None  # a bound socket has its UMEM rings
        self.fill, self.comp = fill, comp
        if rx is not None:
            bufs = np.concatenate([rx.slot_buf_idx.astype(np.uint64), spare.astype(np.uint64)])
            fill.produce(bufs << np.uint64(self.shift))

    def fileno(self) -> int:
        return self.sock.fileno()

    def txsync(self, kring: KRing, head: int) -> None:
        ring, n = kring.ring, kring.num_slots
        hwcur = kring.hwcur
        tx = self.sock.tx
        assert tx is not None  # txsync runs only on a queue bound with a TX ring
        if head != hwcur:
            idx, lens = tx_batch(ring, hwcur, head, self.nbufs, self.max_frame)
            addr = (idx.astype(np.uint64) << np.uint64(self.shift)) + np.uint64(
                XDP_PACKET_HEADROOM)
            sent = tx.produce(addr, lens)
            assert sent == len(idx), "XSK TX ring smaller than the netmap ring"
            clear_buf_changed(ring.slot_flags, hwcur, head, n)
            self.in_flight += sent
            kring.hwcur = hwcur = head
        if tx.pending():
            self.sock.kick()
        if self.in_flight:
            self.in_flight -= len(self.comp.consume(self.in_flight))
        kring.hwtail = (hwcur - 1 - self.in_flight) % n

    def rxsync(self, kring: KRing, head: int) -> None:
        ring, n = kring.ring, kring.num_slots
        hwcur = kring.hwcur
        rx = self.sock.rx
        assert rx is not None  # rxsync runs only on a queue bound with an RX ring
        if head != hwcur:
            idx = gather(ring.slot_buf_idx, hwcur, head, n)
            if idx.min() < 2 or idx.max() >= self.nbufs:
                raise SlotError(f"released slots {hwcur}..{head} hold an invalid buffer")
            clear_buf_changed(ring.slot_flags, hwcur, head, n)
            given = self.fill.produce(idx.astype(np.uint64) << np.uint64(self.shift))
            assert given == len(idx), "fill ring smaller than the buffers it serves"
            kring.hwcur = hwcur = head
        hwtail, room = rx_room(kring)
        if room:
            addr, lens = rx.peek(room)
            got = len(addr)
            if got:
                scatter(ring.slot_buf_idx, hwtail, (addr >> np.uint64(self.shift)), n)
                scatter(ring.slot_len, hwtail, lens, n)
                scatter(ring.slot_flags, hwtail, np.zeros(got, np.uint16), n)
                rx.release(got)
                kring.hwtail = (hwtail + got) % n
        self.sock.wakeup_rx()

    def statistics(self) -> dict[str, int]:
        return self.sock.statistics()

    def close(self) -> None:
        self.sock.close()
