"""An interface as one netmap ring pair through libpcap (the ``pcap`` engine).

The engine for macOS and FreeBSD (BPF underneath), and a third choice on
Linux (``engine="pcap"``).  It copies, a batch per sync, and has one ring
pair:

* txsync: the slots ``[hwcur, head)`` are checked as on every NIC engine,
  their buffer addresses computed with NumPy, and each frame handed to
  ``pcap_inject`` (:meth:`~pynetmap.libpcap.Capture.inject_many`); the
  kernel copies it, so the slots are free again at once, as on the
  AF_PACKET engine.  A frame the device refuses for now (a full queue)
  stays pending with those after it, for the next txsync.
* rxsync: released slots go back to the kernel side; one ``pcap_dispatch``
  writes up to a ring-ful of received packets as records into memory
  (:meth:`~pynetmap.libpcap.Capture.dispatch`), and one NumPy gather copies
  them into the buffers of the slots ``[hwtail, ...)``.

libpcap cannot take received traffic away from the OS stack (the stack
keeps its copy), and sees only frames arriving, not the host's own.
"""

from __future__ import annotations

import numpy as np

from .kring import KRing, clear_buf_changed, rx_free_rows, scatter
from .libpcap import Capture
from .nic_tx import tx_batch
from .region import Region
from .ring import Ring


class PcapQueue:
    """The kernel side of the netmap TX/RX ring pair of ``ifname`` on libpcap."""

    engine = "pcap"
    mode = "copy"

    def __init__(self, ifname: str, region: Region, tx: Ring | None, rx: Ring | None,
                 backlog: int = 8) -> None:
        self.max_frame = region.buf_size - region.lead
        n_rx = rx.num_slots if rx is not None else 0
        # the kernel buffer holds ``backlog`` ring-fuls beyond the RX ring, as the other
        # engines' do; a TX-only port captures nothing it reads, so it gets a small one
        buffer = (1 + backlog) * n_rx * region.buf_size if n_rx else 1 << 16
        self.cap = Capture(ifname, snaplen=self.max_frame, buffer_bytes=buffer,
                           batch=max(n_rx, 1))
        self.nbufs = region.nbufs
        self.bufs = region.bufs
        self.buf_size = region.buf_size
        self.base = region.bufs.ctypes.data  # address of buffer 0
        #: row r is records[r:r + snaplen]: a batch of records is one fancy index
        self.windows = np.lib.stride_tricks.sliding_window_view(self.cap.records,
                                                                self.max_frame)

    def fileno(self) -> int:
        return self.cap.fd

    def txsync(self, kring: KRing, head: int) -> None:
        ring, n = kring.ring, kring.num_slots
        hwcur = kring.hwcur
        if head != hwcur:
            idx, lens = tx_batch(ring, hwcur, head, self.nbufs, self.max_frame)
            addrs = self.base + idx.astype(np.int64) * self.buf_size
            sent = self.cap.inject_many(addrs.tolist(), lens.tolist())
            if sent:
                end = (hwcur + sent) % n
                clear_buf_changed(ring.slot_flags, hwcur, end, n)
                kring.hwcur = hwcur = end
        kring.hwtail = (hwcur - 1) % n

    def rxsync(self, kring: KRing, head: int) -> None:
        ring, n = kring.ring, kring.num_slots
        hwtail, rows = rx_free_rows(kring, head)
        room = len(rows)
        if not room:
            return
        offs, caps = self.cap.dispatch(room)
        got = len(offs)
        if not got:
            return
        width = int(caps.max())
        self.bufs[rows[:got], :width] = self.windows[offs, :width]
        scatter(ring.slot_len, hwtail, caps.astype(np.uint16), n)
        scatter(ring.slot_flags, hwtail, np.zeros(got, np.uint16), n)
        kring.hwtail = (hwtail + got) % n

    def statistics(self) -> dict[str, int]:
        return self.cap.stats()

    def close(self) -> None:
        self.cap.close()
