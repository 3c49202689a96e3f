"""``pkt-gen -f tx --live``: the kernel sends pkt-gen's frames (see :mod:`pynetmap.linux.live`).

pkt-gen builds its template as for ``-f tx``; each worker (a thread: the work is in
the kernel, and the system call releases the GIL) gets its own XDP program and
state, and calls ``BPF_PROG_RUN`` in long runs -- every call costs the kernel about
25 ms of set-up here (it installs the program in its XDP dispatcher and removes it
again), so a call is sized to last about :data:`CALL_S`.  ``-n`` and ``-R`` are kept
by the program itself, which makes them exact whatever the call sizes; the reports
read the programs' counts from shared memory while the calls run.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ...errors import NetmapError
from ...linux import ifinfo
from ...linux.live import Digit, EthtoolStats, LiveSender, Odometer, Pace, VethWatch
from . import report
from .frames import FrameSource
from .template import Template
from .workers import (
    BYTES,
    DONE,
    EVENTS,
    MIN_SPACE,
    PKTS,
    STARTED,
    T_START,
    T_STOP,
    RateLimiter,
)

if TYPE_CHECKING:
    from .main import Run

#: how long one BPF_PROG_RUN call should last (s): long against its fixed cost,
#: short enough for -n's last call not to matter and for Ctrl-C (which stops a call
#: at once anyway, see LiveSender.stop)
CALL_S = 0.5
FIRST_CALL = 4096  # frames: small, so a veth peer without NAPI is seen at once
#: -R: sending time saved up while no call runs (the gap between two calls)
PACE_DEPTH_NS = 50_000_000


def odometer(t: Template) -> Odometer:
    """pkt-gen's odometer (:meth:`Template.digits`) as the program's digits."""
    s, d = t.src, t.dst
    if t.v6:  # one 16-bit word of each address turns
        sa, da, ip = Digit(t.o_sw, 2, s.first, s.last), Digit(t.o_dw, 2, d.first, d.last), None
    else:
        sa, da = Digit(t.o_src, 4, s.first, s.last), Digit(t.o_dst, 4, d.first, d.last)
        ip = t.o_ipsum
    return Odometer((Digit(t.o_udp, 2, s.port0, s.port1), sa,
                     Digit(t.o_udp + 2, 2, d.port0, d.port1), da), udp_csum=t.o_usum,
                    ip_csum=ip)


def interface(ifname: str) -> str:
    """The Linux interface of pkt-gen's ``netmap:IFNAME`` (options checked the form)."""
    return ifname.split(":", 1)[1]


class LiveRun:
    """The --live part of one pkt-gen run: senders, worker threads, the kernel's counts."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.cfg = cfg = run.cfg
        self.ifname = interface(cfg.ifname)
        self.senders: list[LiveSender] = []
        self.watch: VethWatch | None = None
        self.error: NetmapError | None = None
        self._lock = threading.Lock()

    def open(self) -> FrameSource:
        """Senders for every worker; raises NetmapError (one line) when it cannot run."""
        cfg = self.cfg
        if not cfg.src_mac:
            cfg.src_mac = ":".join(f"{b:02x}" for b in ifinfo.mac(self.ifname))
        frames = FrameSource(cfg, 65536)
        mtu = ifinfo.mtu(self.ifname)
        if frames.size - 14 > mtu:
            raise NetmapError(22, f"pkt_size ({frames.size}) must be <= mtu ({mtu})")
        frame = bytes(frames.frame)
        odo = odometer(frames.tpl) if frames.table is None else None
        pace = Pace(gap_ns=max(1, round(1e9 / cfg.rate)), depth_ns=PACE_DEPTH_NS) \
            if cfg.rate else None
        try:  # veth: watch what its peer takes (other drivers: nothing to watch)
            stats = EthtoolStats(self.ifname)
        except NetmapError:
            stats = None
        if stats is not None and stats.driver == "veth":
            self.watch = VethWatch(stats)
        try:
            for tid in range(cfg.nthreads):
                self.senders.append(LiveSender(self.ifname, frame, odo, pace=pace,
                                               limit=cfg.share(tid), batch=cfg.burst))
        except BaseException:
            self.close()
            raise
        return frames

    def start(self) -> None:
        run = self.run
        run.cancel = threading.Event()
        run.refresh = self.refresh
        run.workers = [threading.Thread(target=self._worker, args=(tid,), daemon=True)
                       for tid in range(self.cfg.nthreads)]
        for t in run.workers:
            t.start()

    def refresh(self) -> None:
        """The report loop's view: the kernel's counts; a cancel stops every call now."""
        stop = self.run.cancel.is_set() or self.run.interrupted.is_set()
        for tid, s in enumerate(self.senders):
            if stop:
                s.stop()
            self._count(tid, s.sent)
            self.run.stats[tid, MIN_SPACE] = 0  # no ring here

    def _count(self, tid: int, sent: int) -> None:
        row = self.run.stats[tid]
        row[PKTS] = sent
        row[BYTES] = sent * len(self.senders[tid].frame)

    def _worker(self, tid: int) -> None:
        from .main import _pin

        cfg, row, s = self.cfg, self.run.stats[tid], self.senders[tid]
        cancel = self.run.cancel
        try:
            _pin(cfg, tid)
            if cfg.rate:
                rl = RateLimiter(cfg.rate, 1)
                report.log("sender_body", 1577, f"Sending 1 packets every  "
                           f"{rl.period // 1_000_000_000}.{rl.period % 1_000_000_000:09d} s")
                rl.wait_start(cancel)
                s.start_pace(time.monotonic_ns())
            row[MIN_SPACE] = 0  # no ring here
            row[T_START], row[STARTED] = time.time(), 1
            checked = self.watch is None
            chunk = FIRST_CALL
            while not cancel.is_set() and s.sent < s.limit:
                n = chunk if cfg.rate else min(chunk, s.limit - s.sent)
                t0 = time.monotonic()
                s.run(n)
                dt = time.monotonic() - t0
                row[EVENTS] += 1
                if not checked and s.sent:
                    if self.watch is not None and self.watch.moved() == (0, 0):
                        raise self.watch.no_napi_error(s.sent)
                    checked = True
                chunk = int(min(max(chunk * min(8.0, CALL_S / max(dt, 1e-3)), FIRST_CALL),
                                (1 << 31) - 1))
        except NetmapError as e:
            with self._lock:  # one line for the run, from the first worker to fail
                first, self.error = self.error is None, self.error or e
            if first:
                report.log("worker", 1950, f"thread {tid}: {reason(e)}")
            cancel.set()
        finally:
            self._count(tid, s.sent)
            row[T_STOP] = time.time()
            row[DONE] = 1

    def notes(self) -> list[str]:
        """After the run: what the veth peer refused (its ring was full)."""
        if self.watch is None or self.error is not None:
            return []
        _, refused = self.watch.moved()
        if refused:
            return [f"{refused} of the frames sent were dropped by {self.ifname}'s veth peer "
                    "(its ring was full: tx_queue_*_xdp_xmit_errors)"]
        return []

    def close(self) -> None:
        for s in self.senders:
            s.close()


def reason(e: Exception) -> str:
    """An error's own sentence, without the ``[Errno N]`` of ``str(OSError)``."""
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def live_queues(ifname: str) -> int:
    """TX queues of the interface, for the first line."""
    try:
        return ifinfo.queue_counts(ifname)[1]
    except NetmapError:
        return 1

