"""pkt-gen's functions (spec §6.3): what one pkt-gen "thread" does on its rings.

Each function runs in a :class:`Worker` that owns one opened port (all its
rings, or one ring pair with ``-p``) and a row of shared counters that the
main loop reads for its reports.  The hot loops touch packets only through
the batch API and NumPy: a burst costs a fixed number of Python operations.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from ...constants import NS_BUF_CHANGED, NS_MOREFRAG
from ...port import POLLERR, POLLHUP, POLLIN, POLLOUT, Port
from . import report
from .options import OPT_ACCESS

_OR, _SUM = np.bitwise_or.reduce, np.add.reduce  # the ufuncs' own reduce (hot path)

# columns of a worker's counter row
PKTS, BYTES, EVENTS, MIN_SPACE, T_START, T_STOP, DONE, STARTED = range(8)
NCOUNTERS = 8
#: the longest a worker waits without looking at its cancel flag (ms): Ctrl-C is
#: honoured within this, whatever the worker waits for
SLICE_MS = 200


@dataclass
class Worker:
    """What one pkt-gen thread needs: its port, options, counters and a stop flag."""

    cfg: Any  # options.Config
    tid: int
    port: Port
    stats: np.ndarray  # float64[NCOUNTERS], shared with the main loop
    cancel: Any  # threading.Event or multiprocessing.Event
    frames: Any  # template.FrameSource (tx-like functions) or None
    out: TextIO = sys.stdout
    touched: int = 0  # -o 2: sum of the bytes read
    seq: Any = None  # rxseq's SeqChecker, for callers
    hist: Any = None  # ping's RttHistogram, for callers

    def __post_init__(self) -> None:
        # the same counters as a memoryview: its scalar updates cost half of NumPy's,
        # and count() runs once per batch (hot path)
        self._s = self.stats.data  # a 1-D float64 row: format "d"

    def log(self, fn: str, line: int, msg: str) -> None:
        report.log(fn, line, msg)

    def count(self, pkts: int, nbytes: int, events: int) -> None:
        s = self._s
        s[PKTS] += pkts
        s[BYTES] += nbytes
        s[EVENTS] += events

    def start(self) -> None:
        self.stats[T_START] = time.time()
        self.stats[STARTED] = 1

    def stop(self, idle_s: float = 0.0) -> None:
        """The clock stops now, less ``idle_s`` of waiting that moved nothing (-W)."""
        self.stats[T_STOP] = time.time() - idle_s
        self.stats[DONE] = 1

    def limit(self) -> int:
        """Packets this thread still has to move for ``-n`` (or a big number); 0 also
        for a thread whose share of a small ``-n`` is nothing."""
        if not self.cfg.npkts:
            return 1 << 62
        return self.cfg.share(self.tid) - int(self.stats[PKTS])

    def poll(self, events: int, timeout_ms: int) -> int:
        """``port.poll(events, timeout_ms)`` in slices of at most :data:`SLICE_MS`, so a
        cancel (Ctrl-C) ends the wait within one slice; 0 on timeout or cancel."""
        rev = self.port.poll(events, min(timeout_ms, SLICE_MS))
        if rev or timeout_ms <= SLICE_MS or self.cancel.is_set():
            return rev  # the usual case: ready at once, no clock read here (hot path)
        deadline = time.monotonic() + (timeout_ms - SLICE_MS) / 1000
        while True:
            left = (deadline - time.monotonic()) * 1000
            rev = self.port.poll(events, max(0.0, min(left, SLICE_MS)))
            if rev or left <= SLICE_MS or self.cancel.is_set():
                return rev


class RateLimiter:
    """``-R``: at most ``burst`` packets per ``period``, started on a whole second (§6.4)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.burst = report.rate_burst(burst, rate)
        self.period = report.rate_period_ns(self.burst, rate)
        self.next_ns = report.rate_start_ns(time.time_ns())
        self.budget = 0

    def wait_start(self, cancel: Any) -> None:
        while not cancel.is_set():
            left = self.next_ns - time.time_ns()
            if left <= 0:
                return
            time.sleep(0.001 if left > 1_000_000 else 0)

    def take(self, want: int, cancel: Any) -> int:
        """How many packets may go now; sleeps until the next period if the budget is spent."""
        if self.budget == 0:
            self.next_ns += self.period
            while not cancel.is_set():
                left = self.next_ns - time.time_ns()
                if left <= 0:
                    break
                # a slow rate has long periods: sleep in slices to see a cancel
                time.sleep(min(left / 1e9, SLICE_MS / 1000) if left > 200_000 else 0)
            self.budget = self.burst
        n = min(want, self.budget)
        self.budget -= n
        return n


def _dump(w: Worker, ring: Any, start: int, count: int) -> None:
    """``-X``: hexdump each slot (a debugging aid, so per-packet Python is fine)."""
    for i in range(count):
        s = (start + i) % ring.num_slots
        idx, ln, fl = int(ring.slot_buf_idx[s]), int(ring.slot_len[s]), int(ring.slot_flags[s])
        w.out.write(report.hexdump(ring.bufs[idx, :ln].tobytes(), ring=id(ring), cur=s,
                                   buf_idx=idx, flags=fl))
    w.out.flush()


# -- tx ------------------------------------------------------------------------------
def half_ring(r: Any) -> int:
    """The most a burst moves at once: half the ring, so that one half is in flight
    while the other is filled (or drained).  A burst of the whole ring would
    leave the two sides waiting for each other in turn: ``-b 2048`` on
    netmap's 1024-slot rings was slower than ``-b 512``; now it is the same."""
    return max(1, r.num_slots // 2)


def tx(w: Worker) -> None:
    """``-f tx``: fill every TX ring with bursts until ``-n`` packets or Ctrl-C."""
    cfg, port, fm = w.cfg, w.port, w.frames
    rings = port.tx_rings
    frags = fm.frags
    for r in rings:  # the first pass writes every buffer (netmap marks all NS_BUF_CHANGED)
        r.slot_flags[:] = NS_BUF_CHANGED
    rl = RateLimiter(cfg.rate, cfg.burst) if cfg.rate else None
    burst = rl.burst if rl else cfg.burst
    if rl:
        w.log("sender_body", 1577, f"Sending {rl.burst} packets every  "
              f"{rl.period // 1_000_000_000}.{rl.period % 1_000_000_000:09d} s")
        rl.wait_start(w.cancel)
    w.start()
    left = w.limit()
    one = rings[0] if len(rings) == 1 else None  # the usual port: no generator per batch
    while left > 0 and not w.cancel.is_set():
        port.txsync()
        if (one.tail == one.cur) if one is not None else all(r.tail == r.cur for r in rings):
            rev = w.poll(POLLOUT, 2000)
            if rev & (POLLERR | POLLHUP):
                w.log("sender_body", 1603, "poll error on queue 0")
                break
            if not rev:
                if not w.cancel.is_set():
                    w.log("sender_body", 1600, f"poll error on queue {w.tid}: timeout")
                continue
        for r in rings:
            if left <= 0:
                break
            want = min(burst, left, half_ring(r))
            if rl:
                want = rl.take(want, w.cancel)
            sent = _send_packets(w, r, want, frags)
            left -= sent
    _flush(w)
    w.stop()


def _send_packets(w: Worker, r: Any, limit: int, frags: int) -> int:
    """Fill up to ``limit`` packets (``frags`` slots each) from ``head``; netmap's send_packets."""
    space = r.space() // frags
    n = min(limit, space)
    if n <= 0:
        return 0
    fm = w.frames
    b = r.reserve(n * frags)
    nbytes = fm.write(r, b)  # writes the buffers that need it, sets len and flags
    if w.cfg.dump:
        _dump(w, r, b.start, b.count)
    r.advance(b.count)
    if n < limit:
        r.cur = r.tail  # wake me when there is more room
    w.count(n, nbytes, 1)
    return n


def _flush(w: Worker) -> None:
    """Push what is queued and wait until every TX ring has been reclaimed."""
    port = w.port
    port.txsync()
    deadline = time.monotonic() + 10
    while any(r.tx_pending() for r in port.tx_rings) and not w.cancel.is_set():
        if time.monotonic() > deadline or port.poll(POLLOUT, 100) & POLLHUP:
            break
        port.txsync()


# -- rx ------------------------------------------------------------------------------
def rx(w: Worker) -> None:
    """``-f rx``: count complete packets and bytes on every RX ring."""
    _receive(w, check_seq=False)


def rxseq(w: Worker) -> None:
    """``-f rxseq``: like rx, and check the sequence numbers of txseq."""
    _receive(w, check_seq=True)


def _receive(w: Worker, check_seq: bool) -> None:
    seq = w.frames.seq_checker() if check_seq else None
    # -p N: each worker writes its own part of --pcap-out (main merges them at the end)
    pcap = w.frames.pcap_writer(w.tid) if w.cfg.pcap_out else None
    idle_s = 0.0
    try:
        if w.limit() > 0:  # a worker whose share of -n is nothing does not wait
            idle_s = _receive_loop(w, seq, pcap)
    finally:
        if pcap is not None:
            pcap.close()
    if seq is not None:
        report.log("rxseq_body", 1290, seq.summary())
    w.seq = seq
    w.stop(idle_s)


def _receive_loop(w: Worker, seq: Any, pcap: Any) -> float:
    """Receive until -n, Ctrl-C, the peer's end or (-W) an idle second, which it
    returns so that it does not count in the run's time."""
    cfg, port = w.cfg, w.port
    rings = port.rx_rings
    access = bool(cfg.options & OPT_ACCESS)
    stats = w._s
    while not w.cancel.is_set():  # the clock starts with the first packet
        if w.poll(POLLIN, 1000) & POLLIN:
            break
    w.start()
    left = w.limit()
    while left > 0 and not w.cancel.is_set():
        rev = w.poll(POLLIN, 1000)
        if not rev & POLLIN:
            if w.cancel.is_set() or rev & POLLHUP:
                break
            if cfg.wait_idle:
                port.rxsync()
                return 1.0
            continue
        for r in rings:
            avail = r.space()
            free = r.num_slots - avail
            if free < stats[MIN_SPACE]:
                stats[MIN_SPACE] = free
            if not avail:
                continue
            b = r.receive(min(avail, cfg.burst, half_ring(r)))
            # One look at the whole ring's flags (even for a batch that wraps): no
            # NS_MOREFRAG anywhere, the usual answer, means no fragment in the batch.
            if int(_OR(r.slot_flags)) & NS_MOREFRAG:
                complete = (b.flags & NS_MOREFRAG) == 0
                npk = int(np.count_nonzero(complete))
            else:
                complete, npk = None, b.count
            if npk >= left:  # -n: stop at exactly n packets, and no fragment of the next
                last = left if complete is None else int(np.flatnonzero(complete)[left - 1]) + 1
                b = r.receive(last)
                npk = left
            lens = b.len
            if cfg.dump:
                _dump(w, r, b.start, b.count)
            if access:  # -o 2: read every byte, as a receiver that looks at its data
                w.touched += int(r.bufs[b.buf_idx, : int(lens.max())].sum(dtype=np.uint64))
            if seq is not None:
                seq.check(r.bufs, b.buf_idx, lens, b.flags)
            if pcap is not None:
                pcap.write_batch(r.bufs, b.buf_idx, lens)
            r.release(b.count)
            w.count(npk, int(_SUM(lens)), 1)  # uint16 lens sum as uint64
            left -= npk
            if left <= 0:
                break
    port.rxsync()  # hand the last slots back to the sender
    return 0.0


# -- txseq -----------------------------------------------------------------------------
def txseq(w: Worker) -> None:
    """``-f txseq``: first TX ring only, every slot rewritten with a sequence number.

    Unlike netmap's, it honours ``-R``: a loss test needs a rate the receiver
    can take.
    """
    port, fm = w.port, w.frames
    r = port.tx_rings[0]
    frags = fm.frags
    rl = RateLimiter(w.cfg.rate, w.cfg.burst) if w.cfg.rate else None
    if rl:
        rl.wait_start(w.cancel)
    w.start()
    while not w.cancel.is_set():
        port.txsync()
        if r.tail == r.cur:
            rev = w.poll(POLLOUT, 2000)
            if rev & (POLLERR | POLLHUP):
                break
            if not rev:
                continue
        n = min(r.space() // frags, rl.burst if rl else w.cfg.burst)
        if n <= 0:
            continue
        if rl:
            n = rl.take(n, w.cancel)
        b = r.reserve(n * frags)
        nbytes = fm.write_seq(r, b)
        if w.cfg.dump:
            _dump(w, r, b.start, b.count)
        r.advance(b.count)
        w.count(n, nbytes, 1)
    _flush(w)
    w.stop()


# -- ping / pong ---------------------------------------------------------------------------
def ping(w: Worker) -> None:
    """``-f ping``: timestamped probes, RTT statistics and a power-of-two histogram."""
    cfg, port, fm = w.cfg, w.port, w.frames
    tx_ring, rings = port.tx_rings[0], port.rx_rings
    hist = w.hist = fm.rtt_histogram()
    sent = 0
    total = cfg.npkts
    w.start()
    while not w.cancel.is_set() and (not total or sent < total):
        n = min(cfg.burst, (total - sent) if total else cfg.burst)
        if tx_ring.space() < n:
            w.log("ping_body", 1011, "-- ouch, cannot send")
        else:
            if n == 1:  # the usual probe: one slot, no batch object
                nbytes = fm.write_ping_one(tx_ring, tx_ring.head, sent)
            else:
                nbytes = fm.write_ping(tx_ring, tx_ring.reserve(n), sent)
            tx_ring.advance(n)
            port.txsync()  # as netmap's ping (its poll, NR_NO_TX_POLL, flushes nothing)
            sent += n
            w.count(n, nbytes, 1)
        rev = w.poll(POLLIN, 3000)
        if rev & POLLHUP:
            break
        if not rev & POLLIN:
            if not w.cancel.is_set():
                w.log("ping_body", 1040, "poll error on queue 0: timeout")
            continue
        now = time.time_ns()
        for r in rings:
            k = r.space()
            if k == 1:  # the usual answer: one slot, no batch object
                hist.add_one(fm.rtt_one(r, r.head, now))
            elif k:
                hist.add(fm.rtts(r.bufs, r.receive().buf_idx, now))
            r.release(k)
        if hist.due(now):
            sys.stderr.write(hist.window_lines())
    port.rxsync()
    _flush(w)
    sys.stderr.write(hist.final_line(sent))
    w.stop()


def pong(w: Worker) -> None:
    """``-f pong``: send every received packet back with MAC (and IPv4) addresses swapped."""
    cfg, port = w.cfg, w.port
    tx_ring, rings = port.tx_rings[0], port.rx_rings
    total = cfg.npkts
    done = 0
    w.start()
    while not w.cancel.is_set() and (not total or done < total):
        rev = w.poll(POLLIN, 1000)
        if rev & POLLHUP:
            break
        if not rev & POLLIN:
            continue
        for r in rings:
            k = r.space()
            if not k:
                continue
            n = min(k, tx_ring.space())
            if n == 1:  # the usual probe: one slot, no batch object
                ln = w.frames.pong_one(r, r.head, tx_ring, tx_ring.head)
                tx_ring.advance(1)
                w.count(1, ln, 1)
            elif n:
                b = r.receive(n)
                t = tx_ring.reserve(n)
                src = b.buf_idx[:n]
                lens = b.len[:n]
                width = int(lens.max())
                rows = r.bufs[src, :width]  # one gather, swap in the copy, one scatter
                w.frames.swap_addresses(rows)
                tx_ring.bufs[t.buf_idx, :width] = rows
                t.len = lens
                t.flags = 0
                tx_ring.advance(n)
                w.count(n, int(lens.sum(dtype=np.int64)), 1)
            done += k
            r.release(k)
        port.txsync()
    port.rxsync()
    _flush(w)
    w.stop()


FUNCTIONS = {"tx": tx, "rx": rx, "txseq": txseq, "rxseq": rxseq, "ping": ping, "pong": pong}

__all__ = ["FUNCTIONS", "Worker", "NCOUNTERS"]
