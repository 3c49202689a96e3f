"""pkt-gen's main thread: open the port, start the workers, report, summarise.

With ``-p 1`` (the default) the worker is a thread of this process; with
``-p N`` it is N processes, each opening its own ring (``ONE_NIC`` mode,
ring = index) so they run on N cores.  Counters live in one shared array
(a row per worker) that the report loop sums, as netmap's ``main_thread``
sums its threads' counters.  With ``--pcap-out`` each worker writes its own
part; the parts are appended to the file in worker order when all have stopped.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ... import NR_REG_ONE_NIC, NetmapError, Port, pcap
from ... import open as nm_open
from . import options as O
from . import report
from .frames import FrameSource, pcap_part
from .live import LiveRun, live_queues, reason
from .workers import (
    BYTES,
    DONE,
    EVENTS,
    FUNCTIONS,
    MIN_SPACE,
    NCOUNTERS,
    PKTS,
    STARTED,
    T_START,
    T_STOP,
    Worker,
)

SENDERS = ("tx", "txseq")
RECEIVERS = ("rx", "rxseq")
#: -o bits that have no job in Python, each with the one line we print
_NO_EFFECT = {
    O.OPT_PREFETCH: "-o 1 (prefetch): no effect here (NumPy copies whole batches)",
    O.OPT_TS: "-o 16 (timestamps): unused, as in netmap",
    O.OPT_PPS_STATS: "-o 2048 (pps stats): not implemented; use -A for avg/std",
    O.OPT_UPDATE_CSUM: "-o 4096: checksums and lengths are always correct here",
}


def main(argv: list[str] | None = None) -> int:
    """Run pkt-gen with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = O.parse(argv)
    except O.UsageError as e:
        sys.stderr.write(f"pkt-gen: {e}\n{O.usage()}")
        return 255
    if cfg.help:
        sys.stdout.write(O.usage())
        return 0
    return Run(cfg).run()


class Run:
    """One invocation: ports, workers, the report loop."""

    def __init__(self, cfg: O.Config) -> None:
        self.cfg = cfg
        self.out = sys.stderr if cfg.json else sys.stdout
        self.cancel: Any = None
        #: Ctrl-C seen, also before the workers (and ``cancel``) exist
        self.interrupted = threading.Event()
        self.stats = np.zeros((cfg.nthreads, NCOUNTERS))
        self.workers: list[Any] = []
        self.worker: Worker | None = None  # the -p 1 worker, for ping's statistics
        #: when the workers were started: the first report's interval begins here
        self.t0 = 0.0
        #: called by the report loop before it reads the counters (--live: the kernel's)
        self.refresh: Callable[[], None] | None = None

    # -- start-up ------------------------------------------------------------------------
    def _notes(self) -> list[str]:
        cfg = self.cfg
        notes = list(cfg.notes)
        for bit, text in _NO_EFFECT.items():
            if cfg.options & bit:
                notes.append(text)
        if cfg.options & O.OPT_ACCESS and cfg.function not in RECEIVERS:
            notes.append("-o 2 (access): reads received bytes; rx/rxseq only")
        if cfg.pcap_out and cfg.function not in RECEIVERS:
            notes.append("--pcap-out: writes received frames; rx/rxseq only")
        if cfg.replay and cfg.function != "tx":
            notes.append("--replay: tx only")
        if cfg.wait_idle and cfg.function not in RECEIVERS:
            notes.append("-W: rx/rxseq only")
        if cfg.rate and cfg.function not in ("tx", "txseq"):
            notes.append("-R: rate limiting applies to tx and txseq only")
        if cfg.affinity >= 0 and not hasattr(os, "sched_setaffinity"):
            notes.append("-a: CPU pinning is not available on this system")
        return notes

    def run(self) -> int:
        """Run the function; Ctrl-C (from the start, even while opening) stops it cleanly."""
        old = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._sigint)
        except ValueError:  # not the main thread of the interpreter
            old = None
        try:
            return self._run()
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def _run(self) -> int:
        cfg = self.cfg
        if cfg.live:
            return self._run_live()
        if cfg.options & O.OPT_INDIRECT and not cfg.ifname.startswith("vale"):
            report.log("main", 2990, f"-I (NS_INDIRECT) needs a VALE port; {cfg.ifname} is "
                       "not one")
            return 1
        try:
            port = nm_open(cfg.ifname, **O.open_kwargs(cfg))
        except (NetmapError, ValueError, TypeError) as e:
            report.log("main", 3005, f"Unable to open {cfg.ifname}: {e}")
            return 1
        info = port.info()
        if_mac, if_mtu = info.mac, info.mtu
        if not cfg.src_mac:
            cfg.src_mac = if_mac or "00:00:00:00:00:00"
        try:
            frames = FrameSource(cfg, (port.tx_rings or port.rx_rings)[0].buf_size)
        except (OSError, ValueError) as e:
            port.close()
            report.log("main", 3012, str(e))
            return 1
        rings = port.tx_rings if cfg.function in SENDERS + ("ping",) else port.rx_rings
        mtu = if_mtu or 65536
        if cfg.function in SENDERS and frames.size - 14 > mtu:  # the MTU excludes Ethernet's
            port.close()
            report.log("main", 3020, f"pkt_size ({frames.size}) must be <= mtu ({mtu})")
            return 1
        if cfg.function in SENDERS and not info.multislot and (
                frames.frags > 1 or frames.size > info.max_frame):
            port.close()
            report.log("main", 3021, f"pkt_size ({frames.size}) must fit one slot, at most "
                       f"{info.max_frame} bytes, on {cfg.ifname} ({info.kind} ports take no "
                       "multi-slot packets yet)")
            return 1
        for note in self._notes() + frames.notes:
            report.log("main", 2985, note)
        nq = len(rings)
        if cfg.nthreads > nq:  # a worker without a ring would fail and the rest run on
            port.close()
            report.log("main", 3040, f"bad nthreads {cfg.nthreads}, have {nq} queues")
            return 1
        if cfg.pcap_out and cfg.function in RECEIVERS:
            try:  # fail here, not in a worker after "Ready..."
                open(cfg.pcap_out, "wb").close()  # noqa: SIM115
            except OSError as e:
                port.close()
                report.log("main", 3013, f"--pcap-out {cfg.pcap_out}: {e.strerror}")
                return 1
        if cfg.verbose:
            report.log("main", 3045, f"{port!r}: {len(port.tx_rings)} tx / "
                       f"{len(port.rx_rings)} rx rings of {rings[0].num_slots if rings else 0} "
                       f"slots, buffers of {(rings or port.tx_rings)[0].buf_size} bytes, "
                       f"memory region {port.mem_id}")
        self._announce(frames, nq)
        if cfg.function in SENDERS and frames.frags > 1:
            report.log("sender_body", 1555, f"frags {frames.frags} frag_size "
                       f"{frames.frag_size}")
        if not self._wait_link():  # Ctrl-C before the start: nothing was moved
            port.close()
            self._summary()
            return 0
        report.log("main", 3123, "Ready...")
        self.t0 = time.time()
        try:
            if cfg.nthreads == 1:
                self._start_thread(port, frames)
            else:
                if info.one_port_per_ring:  # the workers' opens need our rings: free them
                    port.close()
                self._start_processes()
                if not info.one_port_per_ring:
                    # A pipe end whose last holder closes reads as gone (POLLHUP) to the
                    # peer: hold it until every worker holds its ring.
                    self._wait_opened()
                    port.close()
                port = None  # type: ignore[assignment]
            self._report_loop()
        finally:
            for w in self.workers:
                w.join()
            if port is not None:
                port.close()
            self._merge_pcap()
        self._summary()
        return 0

    def _announce(self, frames: FrameSource, nq: int) -> None:
        """The start-up lines (stdout, or stderr with --json)."""
        cfg = self.cfg
        self.out.write(report.startup_lines(
            cfg.function, cfg.ifname, nq, cfg.nthreads, cfg.cpus,
            cfg.src or frames.src.text or _addr(frames.src),
            cfg.dst or frames.dst.text or _addr(frames.dst), cfg.src_mac, cfg.dst_mac,
            cfg.replay if frames.table is not None and cfg.replay else "",
            len(frames.table) if frames.table is not None else 0))
        self.out.flush()

    def _wait_link(self) -> bool:
        """-w: wait before starting; False when Ctrl-C came meanwhile."""
        if self.cfg.wait_link:
            report.log("main", 3120, f"Wait {self.cfg.wait_link} secs for phy reset")
            self.interrupted.wait(self.cfg.wait_link)
        return not self.interrupted.is_set()

    def _run_live(self) -> int:
        """--live: the kernel sends (pktgen/live.py); the same lines, reports and summary."""
        lr = LiveRun(self)
        try:
            frames = lr.open()
        except (NetmapError, OSError, ValueError) as e:
            report.log("main", 3005, f"--live on {lr.ifname}: {reason(e)}")
            return 1
        try:
            for note in self._notes() + frames.notes:
                report.log("main", 2985, note)
            self._announce(frames, live_queues(lr.ifname))
            if not self._wait_link():
                self._summary()
                return 0
            report.log("main", 3123, "Ready...")
            self.t0 = time.time()
            lr.start()
            self._report_loop()
            for w in self.workers:
                w.join()
        finally:
            lr.close()
        for note in lr.notes():
            report.log("main", 2985, note)
        self._summary()
        return 1 if lr.error is not None else 0

    def _merge_pcap(self) -> None:
        """-p N --pcap-out: append the workers' parts to the file, in worker order."""
        cfg = self.cfg
        if not cfg.pcap_out or cfg.function not in RECEIVERS or cfg.nthreads == 1:
            return
        parts = [pcap_part(cfg.pcap_out, i) for i in range(1, cfg.nthreads)]
        pcap.append_parts(cfg.pcap_out, [p for p in parts if os.path.exists(p)])

    def _sigint(self, signum: int, frame: Any) -> None:
        self.interrupted.set()
        if self.cancel is not None:
            self.cancel.set()

    def _start_thread(self, port: Port, frames: FrameSource) -> None:
        self.cancel = threading.Event()
        if self.cfg.busy:
            port.spin_us = math.inf
        self.worker = w = Worker(self.cfg, 0, port, self.stats[0], self.cancel, frames)
        t = threading.Thread(target=_run_worker, args=(w,), daemon=True)
        self.workers = [t]
        t.start()

    def _start_processes(self) -> None:
        cfg = self.cfg
        ctx: Any = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.cancel = ctx.Event()
        shared = ctx.RawArray("d", cfg.nthreads * NCOUNTERS)
        self.stats = np.frombuffer(shared, np.float64).reshape(cfg.nthreads, NCOUNTERS)
        from ...names import parse

        spec = parse(cfg.ifname)
        self.opened = [ctx.Event() for _ in range(cfg.nthreads)]
        for i in range(cfg.nthreads):
            name = str(spec.with_ring(NR_REG_ONE_NIC, i))
            p = ctx.Process(target=_child, args=(cfg, i, name, shared, self.cancel,
                                                 self.opened[i]), daemon=True)
            p.start()
            self.workers.append(p)

    def _wait_opened(self, timeout: float = 30.0) -> None:
        """Until every worker process has opened its port (or failed, or died)."""
        deadline = time.monotonic() + timeout
        for ev, p in zip(self.opened, self.workers, strict=True):
            while (not ev.wait(0.05) and p.is_alive() and time.monotonic() < deadline
                   and not self.interrupted.is_set()):
                pass

    # -- reports -------------------------------------------------------------------------
    def _alive(self) -> bool:
        return any(w.is_alive() for w in self.workers) and not self.stats[:, DONE].all()

    def _report_loop(self) -> None:
        """Report every -T ms, and once more at the end for what the last interval
        moved (as netmap's main_thread): the reports add up to the summary."""
        cfg, s = self.cfg, self.stats
        rep = report.Reporter(cfg.normalize, cfg.framing, cfg.avg, cfg.json)
        prev = np.zeros(3)  # from the start: what moved before the first report counts
        prev_t = self.t0
        while True:
            next_t = prev_t + cfg.report_ms / 1000
            while self._alive() and time.time() < next_t:
                time.sleep(min(0.05, max(0.0, next_t - time.time())))
                if self.refresh is not None:
                    self.refresh()
            if self.refresh is not None:
                self.refresh()
            alive = self._alive()
            now = time.time()
            usec = int((now - prev_t) * 1e6)
            cur = s[:, [PKTS, BYTES, EVENTS]].sum(axis=0)
            d = cur - prev
            if alive and usec < 10_000:
                continue
            if alive or d[0]:
                min_space = int(s[:, MIN_SPACE].sum())
                s[:, MIN_SPACE] = 99999
                line = rep.line(int(d[0]), int(d[1]), int(d[2]), max(usec, 1), min_space,
                                now)
                if cfg.json:
                    print(line, flush=True)
                else:
                    report.log("main_thread", 2781, line)
                prev, prev_t = cur, now
            if not alive:
                break

    def _summary(self) -> None:
        """The final lines; ping and pong have none (as netmap's) but a JSON object."""
        cfg, s = self.cfg, self.stats
        if cfg.function not in SENDERS + RECEIVERS and not cfg.json:
            return
        started = s[:, STARTED] > 0
        pkts, nbytes, events = (int(x) for x in s[:, [PKTS, BYTES, EVENTS]].sum(axis=0))
        seconds = 0.0
        if started.any():
            seconds = max(0.0, float(s[started, T_STOP].max() - s[started, T_START].max()))
        if cfg.function == "ping":
            text = report.final_json("ping", pkts, nbytes, events, seconds,
                                     **self._rtt_figures(pkts))
        elif cfg.function == "pong":
            text = report.final_json("pong", pkts, nbytes, events, seconds)
        else:
            text = report.summary(cfg.function in SENDERS, pkts, nbytes, events, seconds,
                                  cfg.normalize, cfg.framing, cfg.json)
        sys.stdout.write(text)
        sys.stdout.flush()


    def _rtt_figures(self, sent: int) -> dict[str, Any]:
        """ping's answers and RTTs (ns) for its JSON object; ``rtt_av_ns`` as the
        ``RTT over`` line: the RTTs' sum over the probes sent."""
        h = self.worker.hist if self.worker is not None else None
        if h is None:
            return {"received": 0, "rtt_min_ns": None, "rtt_av_ns": None}
        received = h.received()
        return {"received": received, "rtt_min_ns": h.g_min if h.g_min >= 0 else None,
                "rtt_av_ns": h.g_sum // sent if sent else None}


def _addr(r: Any) -> str:
    import ipaddress

    a = ipaddress.IPv6Address(r.start) if r.v6 else ipaddress.IPv4Address(r.start)
    return str(a)


def _pin(cfg: O.Config, tid: int) -> None:
    """-a: pin worker ``tid`` to cpu ``(a + tid) % cpus`` (the calling thread on Linux)."""
    if cfg.affinity >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {(cfg.affinity + tid) % cfg.cpus})


def _run_worker(w: Worker) -> None:
    try:
        _pin(w.cfg, w.tid)
        FUNCTIONS[w.cfg.function](w)
    except Exception as e:  # a worker reports and stops; main prints the summary
        report.log("worker", 1950, f"thread {w.tid}: {type(e).__name__}: {e}")
    finally:
        if not w.stats[DONE]:
            w.stop()


def _child(cfg: O.Config, tid: int, name: str, shared: Any, cancel: Any,
           opened: Any) -> None:
    """A ``-p`` worker process: its own ring of the port, its row of the counters."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent tells us through ``cancel``
    stats = np.frombuffer(shared, np.float64).reshape(cfg.nthreads, NCOUNTERS)[tid]
    try:
        port = nm_open(name, **O.open_kwargs(cfg))
    except (NetmapError, ValueError) as e:
        report.log("main", 3005, f"Unable to open {name}: {e}")
        stats[DONE] = 1
        return
    finally:
        opened.set()
    with port:
        if cfg.busy:
            port.spin_us = math.inf
        frames = FrameSource(cfg, (port.tx_rings or port.rx_rings)[0].buf_size)
        _run_worker(Worker(cfg, tid, port, stats, cancel, frames))
