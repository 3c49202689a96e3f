"""What pkt-gen writes into TX buffers and checks in RX buffers, a burst at a time.

A :class:`FrameSource` knows the frame(s) of a run -- the UDP template,
the first packet of a pcap file (``-P``) or all of them (``--replay``) --
and netmap's copying rule (spec §6.2): a buffer is rewritten only when its
slot says ``NS_BUF_CHANGED`` unless the frames vary (address ranges,
``-z``/``-Z``, random sizes, fragments, replay, ``-o 4|8``).  With ``-F``
each packet is spread over ``frags`` slots, near-equal parts, all but the
last with ``NS_MOREFRAG``.

:class:`RttHistogram` and :class:`SeqChecker` are ping's and rxseq's
bookkeeping, vectorised over a batch.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ... import pcap
from ...constants import NS_BUF_CHANGED, NS_INDIRECT, NS_MOREFRAG, NS_REPORT
from ...ring import Ring
from ...traffic import FrameTable
from . import options as O
from . import report
from .template import (
    DEFAULT_DST,
    DEFAULT_DST6,
    DEFAULT_SRC,
    DEFAULT_SRC6,
    Template,
    parse_mac,
    parse_range,
    swap_addresses,
)

_OR = np.bitwise_or.reduce  # the ufunc's own reduce: no Python wrapper (hot path)


class FrameSource:
    """The frames of one pkt-gen run and how they go into (and come out of) buffers."""

    def __init__(self, cfg: Any, buf_size: int) -> None:
        self.cfg = cfg
        self.h = cfg.vnet_hdr
        v6 = cfg.af == 6
        self.src = parse_range(cfg.src or (DEFAULT_SRC6 if v6 else DEFAULT_SRC), v6)
        self.dst = parse_range(cfg.dst or (DEFAULT_DST6 if v6 else DEFAULT_DST), v6,
                               default=DEFAULT_DST6)
        self.src_mac = parse_mac(cfg.src_mac or "00:00:00:00:00:00")
        self.dst_mac = parse_mac(cfg.dst_mac)
        self.notes: list[str] = []
        self.rnd = np.random.default_rng()
        self.rand_src = bool(cfg.options & O.OPT_RANDOM_SRC)
        self.rand_dst = bool(cfg.options & O.OPT_RANDOM_DST)
        if v6 and (self.rand_src or self.rand_dst):
            self.notes.append("-z/-Z: random addresses are IPv4 only (as netmap); not used")
            self.rand_src = self.rand_dst = False
        self._templates: dict[int, Template] = {}
        self.table: FrameTable | None = None
        self.k = 0  # odometer / replay position
        self.seq = 0  # txseq's next sequence number
        if cfg.replay and cfg.function == "tx":  # other functions only note it (main)
            cap = _ethernet_capture(cfg.replay, "--replay")
            self.table = FrameTable.of(cap)
            self.size = self.table.max_len
            cut = int(np.count_nonzero(cap.orig_lens > cap.lens))
            if cut:
                self.notes.append(f"--replay: {cut} of {len(cap)} frames were cut by the "
                                  "capture (snaplen); sent as captured")
        elif cfg.pcap_file:
            first = _ethernet_capture(cfg.pcap_file, "-P").packet(0)
            self.table = FrameTable.of([bytes(self.h) + first])
            self.size = len(first)
            if cfg.src or cfg.dst or self.rand_src or self.rand_dst:
                self.notes.append("-P: the file's packet is sent as it is; -s/-d/-z/-Z unused")
        else:
            self.size = cfg.pkt_size
        if self.table is not None and cfg.pkt_min_size:
            self.notes.append("-l min: random sizes need the template; unused with -P/--replay")
        self.tpl = self._template(cfg.pkt_size if self.table is None else 60)
        self.frame = self.tpl.frame if self.table is None else self.table.data[0]
        # fragments (spec §6.1 -F/-M): never more bytes per slot than a buffer holds
        frag_size = min(cfg.frag_size or buf_size, buf_size)
        wire = self.size + self.h
        self.frags = max(cfg.frags, math.ceil(wire / frag_size))
        if self.frags > wire:
            raise ValueError(f"{self.frags} fragments for a {wire}-byte packet")
        if self.table is not None and len(self.table) > 1 and self.frags > 1:
            raise ValueError(f"--replay: frames up to {self.size} bytes need {self.frags} "
                             f"slots; replay sends one slot per frame (buffer {buf_size})")
        self.frag_size = frag_size
        #: txseq puts a whole frame in every slot (netmap does), ``-F`` slots per packet
        self.seq_frags = cfg.frags
        if cfg.function == "txseq":
            if wire > buf_size:
                raise ValueError(f"txseq: a {wire}-byte frame does not fit a "
                                 f"{buf_size}-byte buffer")
            self.frags = cfg.frags
        ranges = self.src.is_range or self.dst.is_range
        self.copy = bool(ranges or self.rand_src or self.rand_dst or cfg.pkt_min_size
                         or self.frags > 1 or cfg.options & (O.OPT_COPY | O.OPT_MEMCPY)
                         or (self.table is not None and len(self.table) > 1))
        self.rubbish = bool(cfg.options & O.OPT_RUBBISH)
        if cfg.options & O.OPT_INDIRECT and (self.copy or self.rubbish or self.table is not None):
            raise ValueError("-I sends one constant frame by reference; it does not combine "
                             "with address ranges, random addresses, -M, -F, -P or -o copy/"
                             "rubbish")
        if cfg.options & O.OPT_INDIRECT:
            self.frame = np.ascontiguousarray(self.frame)  # the address every slot points at
        #: the default (one frame, one slot, written once per buffer): write() tests it first
        self.wire = self.size + self.h
        self.constant = not (self.copy or self.rubbish or cfg.options & O.OPT_INDIRECT
                             or (self.table is not None and len(self.table) > 1))

    def _template(self, size: int) -> Template:
        t = self._templates.get(size)
        if t is None:
            t = Template(size, self.src, self.dst, self.src_mac, self.dst_mac, self.h,
                         bool(self.cfg.options & O.OPT_INDIRECT))
            if len(self._templates) < 4096:
                self._templates[size] = t
        return t

    # -- tx --------------------------------------------------------------------------
    def write(self, ring: Ring, b: Any) -> int:
        """Fill the batch ``b`` (whole packets of ``frags`` slots); returns the bytes."""
        if self.constant:  # two NumPy calls: is a buffer new (usually not), set len and flags
            # One OR over the whole ring's flags, even for a batch that wraps: no
            # NS_BUF_CHANGED anywhere (the usual answer) means none in the batch.
            if int(_OR(ring.slot_flags)) & NS_BUF_CHANGED:
                flags = b.flags
                ring.bufs[b.buf_idx[(flags & NS_BUF_CHANGED) != 0], : self.wire] = self.frame
            b.set_len_flags(self.wire, 0)
            self._report(ring, b)
            return b.count * self.size
        npk = b.count // self.frags
        if self.table is not None and len(self.table) > 1:  # --replay
            lens, nbytes, self.k = self.table.write(ring, b.buf_idx, self.k)
            b.len = lens
            b.flags = 0
            self._report(ring, b)
            return nbytes
        size = self.size
        if self.cfg.pkt_min_size and self.table is None:  # a new size per call, as netmap
            lo = self.cfg.pkt_min_size
            size = lo + int(self.rnd.integers(0, self.size - lo))
        wire = size + self.h
        if self.rubbish:
            self._set_lengths(b, wire)
        elif self.cfg.options & O.OPT_INDIRECT:  # -I: no copy, the slot points at the frame
            b.len = wire
            b.flags = NS_INDIRECT
            b.ptr = self.frame.ctypes.data
        elif self.table is not None:  # -P with fragments or -o 4|8
            self._scatter(ring, b, np.broadcast_to(self.frame, (npk, wire)))
        else:
            rows, self.k = self._template(size).batch(self.k, npk, rnd=self.rnd,
                                                      rand_src=self.rand_src,
                                                      rand_dst=self.rand_dst)
            self._scatter(ring, b, rows)
        self._report(ring, b)
        return npk * size

    def write_seq(self, ring: Ring, b: Any) -> int:
        """txseq (as netmap): every slot a whole frame with its own big-endian
        sequence number; ``frags`` slots make one packet (``NS_MOREFRAG``)."""
        n = b.count
        seq = (np.arange(n, dtype=np.uint64) + np.uint64(self.seq)) & np.uint64(0xFFFFFFFF)
        rows, self.k = self.tpl.batch(self.k, n, seq=seq, per=self.seq_frags)
        self.seq = (self.seq + n) & 0xFFFFFFFF
        ring.bufs[b.buf_idx, : rows.shape[1]] = rows
        b.len = rows.shape[1]
        if self.seq_frags > 1:
            flags = np.full(n, NS_MOREFRAG, np.uint16)
            flags[self.seq_frags - 1 :: self.seq_frags] = 0
            b.flags = flags
        else:
            b.flags = 0
        self._report(ring, b)
        return n * rows.shape[1]

    def write_ping(self, ring: Ring, b: Any, seq0: int) -> int:
        """ping: the template with counter and send time (spec §6.3) in each probe."""
        if b.count == 1:
            return self.write_ping_one(ring, b.start, seq0)
        rows = np.repeat(self.frame[None, :], b.count, axis=0)
        if self.table is None:
            self.tpl.stamp_ping(rows, seq0, time.time_ns())
        ring.bufs[b.buf_idx, : rows.shape[1]] = rows
        b.len = rows.shape[1]
        b.flags = 0
        return b.count * self.size

    def write_ping_one(self, ring: Ring, slot: int, seq: int) -> int:
        """ping's usual probe, into one slot: one bytes object (``Ring.write``), no array."""
        ring.write(slot, self.tpl.ping_frame(seq, time.time_ns())
                   if self.table is None else self.frame.tobytes())
        return self.size

    def _scatter(self, ring: Ring, b: Any, rows: np.ndarray) -> None:
        """Copy whole frames (rows) into the batch, ``frags`` slots per frame."""
        idx = b.buf_idx
        wire = rows.shape[1]
        f = self.frags
        if f == 1:
            ring.bufs[idx, :wire] = rows
            b.len = wire
            b.flags = 0
            return
        lens = np.empty(b.count, np.uint16)
        flags = np.full(b.count, NS_MOREFRAG, np.uint16)
        for j in range(f):  # per fragment, not per packet
            lo, hi = j * wire // f, (j + 1) * wire // f
            ring.bufs[idx[j::f], : hi - lo] = rows[:, lo:hi]
            lens[j::f] = hi - lo
        flags[f - 1 :: f] = 0
        b.len = lens
        b.flags = flags

    def _set_lengths(self, b: Any, wire: int) -> None:
        f = self.frags
        lens = np.array([(j + 1) * wire // f - j * wire // f for j in range(f)], np.uint16)
        b.len = np.tile(lens, b.count // f)
        flags = np.full(f, NS_MOREFRAG, np.uint16)
        flags[-1] = 0
        b.flags = np.tile(flags, b.count // f)

    @staticmethod
    def _report(ring: Ring, b: Any) -> None:
        """``NS_REPORT`` on the batch's last slot, as netmap's pkt-gen (through the
        ring's memoryview of the slots: a NumPy scalar costs more, once per batch)."""
        if b.count:
            ring._h[8 * ((b.start + b.count - 1) % ring.num_slots) + 3] |= NS_REPORT

    # -- rx side -------------------------------------------------------------------------
    def rtts(self, bufs: np.ndarray, idx: np.ndarray, now_ns: int) -> np.ndarray:
        return now_ns - self.tpl.read_ping_ns(bufs, idx)

    def rtt_one(self, ring: Ring, slot: int, now_ns: int) -> int:
        """The RTT of the one ping answer in ``slot`` (ping's usual batch: no arrays)."""
        return now_ns - self.tpl.ping_ns(ring.read(slot))

    def pong_one(self, rx: Ring, rs: int, tx: Ring, ts: int) -> int:
        """pong for one packet: slot ``rs`` of ``rx`` copied to slot ``ts`` of ``tx`` with
        addresses swapped, as bytes (``Ring.read``/``write``: no array call at all).
        Its cost is part of every RTT: one join of slices, no bytearray edits."""
        f = rx.read(rs)
        ln, h = len(f), self.h
        if ln >= h + 34 and f[h + 12 : h + 14] == b"\x08\x00":  # IPv4: swap the addresses too
            parts: tuple[bytes, ...] = (f[:h], f[h + 6 : h + 12], f[h : h + 6], f[h + 12 : h + 26],
                                        f[h + 30 : h + 34], f[h + 26 : h + 30], f[h + 34 :])
        else:
            parts = (f[:h], f[h + 6 : h + 12], f[h : h + 6], f[h + 12 :])
        tx.write(ts, b"".join(parts))
        return ln

    def rtt_histogram(self) -> RttHistogram:
        return RttHistogram()

    def seq_checker(self) -> SeqChecker:
        return SeqChecker(self.h)

    def pcap_writer(self, tid: int) -> pcap.Writer:
        return pcap.Writer(pcap_part(self.cfg.pcap_out, tid))

    def swap_addresses(self, rows: np.ndarray) -> None:
        swap_addresses(rows, self.h)


def pcap_part(path: str, tid: int) -> str:
    """Where worker ``tid`` writes its part of ``--pcap-out``: worker 0 the file
    itself, the others a part file that main appends to it at the end."""
    return path if tid == 0 else f"{path}.part{tid}"


def _ethernet_capture(path: str, opt: str) -> pcap.Capture:
    """The packets of ``path`` if they can be sent as they are: Ethernet frames
    (pkt-gen sends every frame as one), each with at least its 14-byte header."""
    cap = pcap.read(path)
    if not len(cap):
        raise ValueError(f"{opt} {path}: no packets")
    if cap.linktype != pcap.LINKTYPE_ETHERNET:
        raise ValueError(f"{opt} {path}: link type {cap.linktype}, not Ethernet (1); "
                         "its frames cannot be sent as Ethernet frames")
    short = np.flatnonzero(cap.lens < 14)
    if len(short):
        raise ValueError(f"{opt} {path}: packet {int(short[0]) + 1} has "
                         f"{int(cap.lens[short[0]])} bytes, less than an Ethernet header "
                         f"({len(short)} such)")
    return cap


class RttHistogram:
    """ping's statistics: a window printed once a second, and the run's totals (§6.3)."""

    def __init__(self) -> None:
        self.buckets = np.zeros(64, np.int64)
        self.count = 0
        self.sum = 0
        self.min = -1
        self.g_sum = 0
        self.g_min = -1
        self.last_ns = time.time_ns()
        self._arrays: list[np.ndarray] = []  # the RTTs (ns) so far, in arrival order
        self._ints: list[int] = []  # and the latest ones added one by one (add_one)

    def samples(self) -> np.ndarray:
        """Every RTT seen (ns), in arrival order, for callers that want percentiles."""
        return np.concatenate([*self._arrays, np.array(self._ints, np.int64)])

    def received(self) -> int:
        return len(self._ints) + sum(len(a) for a in self._arrays)

    def add_one(self, rtt: int) -> None:
        """One RTT: ping's usual batch, in plain integers (no array operation)."""
        v = max(rtt, 1)
        self._ints.append(v)
        self.buckets[v.bit_length() - 1] += 1
        self.count += 1
        self.sum += v
        self.min = v if self.min < 0 else min(self.min, v)

    def add(self, rtts: np.ndarray) -> None:
        if not len(rtts):
            return
        r = np.maximum(rtts.astype(np.int64), 1)
        if self._ints:  # keep the arrival order
            self._arrays.append(np.array(self._ints, np.int64))
            self._ints = []
        self._arrays.append(r)
        k = np.frexp(r.astype(np.float64))[1] - 1  # index of the highest set bit
        self.buckets += np.bincount(k, minlength=64)[:64]
        self.count += len(r)
        self.sum += int(r.sum())
        m = int(r.min())
        self.min = m if self.min < 0 else min(self.min, m)

    def due(self, now_ns: int) -> bool:
        return self.count > 0 and now_ns - self.last_ns >= 1_000_000_000

    def window_lines(self) -> str:
        """The two ``D()`` lines of a window; resets the window."""
        nz = np.flatnonzero(self.buckets)
        kmin, kmax = int(nz[0]), int(nz[-1])
        counts = "".join(f" {int(c):5d}" for c in self.buckets[kmin : kmax + 1])
        out = (report.log_prefix("ping_body", 1075)
               + f"count {self.count} RTT: min {self.min} av {self.sum // self.count} ns\n"
               + report.log_prefix("ping_body", 1088)
               + f"k: {1 << kmin} .. {1 << kmax}\n\t{counts}\n")
        self.g_sum += self.sum
        self.g_min = self.min if self.g_min < 0 else min(self.g_min, self.min)
        self.buckets[:] = 0
        self.count = self.sum = 0
        self.min = -1
        self.last_ns = time.time_ns()
        return out

    def final_line(self, sent: int) -> str:
        """The last window (if any) and ``RTT over N packets`` (av counts unanswered probes)."""
        out = self.window_lines() if self.count else ""
        av = self.g_sum // sent if sent else 0
        return out + report.log_prefix("ping_body", 1107) + \
            f"RTT over {sent} packets: min {self.g_min} av {av} ns\n"


class SeqChecker:
    """rxseq: the sequence number of every slot and the fragment count of every
    packet, per batch (txseq writes a whole frame into each slot)."""

    def __init__(self, h: int = 0) -> None:
        self.h = h
        self.expected: int | None = None
        self.gaps = 0
        self.out_of_order = 0
        self.short = 0
        self.frag_errors = 0
        self.frags: int | None = None
        self.carry = 0  # slots of a packet begun in an earlier batch
        self._msgs = 0
        self._msg_second = 0

    def _say(self, line: int, msg: str) -> None:
        now = int(time.time())  # at most 2 messages a second, as netmap's RD(2, ...)
        if now != self._msg_second:
            self._msg_second, self._msgs = now, 0
        if self._msgs < 2:
            self._msgs += 1
            report.log("rxseq_body", line, msg)

    def check(self, bufs: np.ndarray, idx: np.ndarray, lens: np.ndarray,
              flags: np.ndarray) -> None:
        n = len(idx)
        if not n:
            return
        self._check_frags((flags & NS_MOREFRAG) != 0, lens, flags)
        h = self.h
        v6 = (bufs[idx, h + 12] == 0x86) & (bufs[idx, h + 13] == 0xDD)
        off = np.where(v6, h + 62, h + 42)
        ok = lens >= off + 4
        si = idx
        if not ok.all():
            nshort = int(np.count_nonzero(~ok))
            self.short += nshort
            self._say(1211, f"Packet too short for a sequence number ({nshort})")
        si, off = si[ok], off[ok]
        if not len(si):
            return
        b = bufs[si[:, None], off[:, None] + np.arange(4)].astype(np.uint32)
        seq = (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]
        exp = np.empty_like(seq)
        exp[0] = seq[0] if self.expected is None else self.expected
        exp[1:] = seq[:-1] + np.uint32(1)
        bad = np.flatnonzero(seq != exp)
        if len(bad):
            delta = (seq[bad] - exp[bad]).astype(np.uint32)
            gap = delta < np.uint32(0x7FFFFFFF)
            self.gaps += int(np.count_nonzero(gap))
            self.out_of_order += int(np.count_nonzero(~gap))
            for i in bad[:2]:
                kind = "GAP" if (int(seq[i]) - int(exp[i])) % (1 << 32) < 0x7FFFFFFF \
                    else "OUT OF ORDER"
                self._say(1240, f"Sequence {kind}: exp {int(exp[i])} found {int(seq[i])}")
        self.expected = int(seq[-1] + np.uint32(1))

    def _check_frags(self, more: np.ndarray, lens: np.ndarray, flags: np.ndarray) -> None:
        ends = np.flatnonzero(~more)
        if not len(ends):
            self.carry += len(more)
            return
        counts = np.diff(ends, prepend=-1)
        counts[0] += self.carry
        self.carry = len(more) - 1 - int(ends[-1])
        if self.frags is None:
            self.frags = int(counts[0])
        wrong = np.flatnonzero(counts != self.frags)
        if len(wrong):
            self.frag_errors += len(wrong)
            i = int(wrong[0])
            first = int(ends[i]) - int(counts[i]) + 1
            parts = " ".join(f"|{int(lens[j])},{int(flags[j]):x}|"
                             for j in range(max(first, 0), int(ends[i]) + 1))
            self._say(1262, f"Received packets with {int(counts[i])} frags, expected "
                      f"{self.frags}, '{parts}'")
            self.frags = int(counts[-1])

    def summary(self) -> str:
        return (f"rxseq: {self.gaps} gaps, {self.out_of_order} out of order, "
                f"{self.short} too short, {self.frag_errors} with a wrong fragment count")
