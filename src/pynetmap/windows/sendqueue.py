"""Npcap send queues over NumPy: a whole TX batch as one transmit call.

Npcap's ``pcap_sendqueue_transmit(p, queue, sync)`` sends every packet of
a queue with one call into the driver.  A queue (``struct
pcap_send_queue {u_int maxlen; u_int len; char *buffer;}``) is a buffer of
pcap file records -- a 16-byte header (``tv_sec``, ``tv_usec`` as 32-bit
longs on Windows, ``caplen``, ``len``) then ``caplen`` bytes, no padding
-- and transmit passes only ``buffer`` and ``len`` down (pcap-npf.c,
Packet32's PacketSendPackets).  So the queue is built here without
``pcap_sendqueue_alloc``/``_queue`` (a C call per packet): the records of
a batch are made by NumPy in one pass, by the pcap file writer's own
record builder (:class:`pynetmap.pcap.Writer`), and the queue points at
them.  With ``sync = 0`` the timestamps are not used.
"""

from __future__ import annotations

import ctypes
from typing import BinaryIO, cast

import numpy as np

from ..pcap import Writer


class PcapSendQueue(ctypes.Structure):
    """``struct pcap_send_queue``."""

    _fields_ = [("maxlen", ctypes.c_uint), ("len", ctypes.c_uint),
                ("buffer", ctypes.c_void_p)]


class _Keep:
    """A write sink that keeps the last chunk (the records of one batch)."""

    data = b""

    def write(self, chunk: bytes) -> int:
        self.data = chunk
        return len(chunk)


class SendQueueBuilder:
    """Turns the buffers of a TX batch into one send queue."""

    def __init__(self) -> None:
        self._sink = _Keep()
        self._writer = Writer(cast(BinaryIO, self._sink))  # its file header goes nowhere

    def records(self, pool: np.ndarray, idx: np.ndarray, lens: np.ndarray) -> bytes:
        """The pcap records of frames ``pool[idx[i], :lens[i]]``, back to back."""
        self._sink.data = b""
        self._writer.write_batch(pool, idx, lens, ts_ns=0)
        return self._sink.data

    def queue(self, records: bytes) -> PcapSendQueue:
        """A send queue over ``records`` (keep ``records`` alive while it is used)."""
        addr = ctypes.cast(ctypes.c_char_p(records), ctypes.c_void_p).value
        return PcapSendQueue(len(records), len(records), addr)


def frames_sent(lens: np.ndarray, nbytes: int) -> int:
    """How many whole records of frames ``lens`` the first ``nbytes`` of a queue hold.

    A transmit that returns fewer bytes than the queue's ``len`` stopped
    after this many frames.
    """
    ends = np.cumsum(np.asarray(lens, np.int64) + 16)
    return int(np.searchsorted(ends, nbytes, side="right"))
