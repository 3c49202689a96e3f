"""lb's command line, its main loop, its stats lines and its exit (spec §6.7)."""

from __future__ import annotations

import getopt
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from ... import objects
from ... import open as nm_open
from ... import parse as nm_parse
from ...errors import NetmapError
from ...port import POLLIN, POLLOUT, Port, RingError
from ...wake import wait_any
from ..pktgen import report
from ..pktgen.options import UsageError, number, seconds
from ..stopping import Stopper, stop_on_sigint
from .balancer import Balancer, Group, OutPipe

GETOPT = "hi:p:b:B:s:o:w:WT:"
LONG = ["duration="]
DEF_OUT_PIPES = 2
DEF_BATCH = 2048
DEF_WAIT_LINK = 2
#: netmap's poll timeout in the forwarding loop
POLL_TIMEOUT = 0.010

USAGE = f"""\
usage: lb [options]
where options are:
  -h                    view help text
  -i iface              interface name (required)
  -p [prefix:]npipes    add a new group of output pipes
  -B nbufs              number of extra buffers (default: 0)
  -b batch              batch size (default: {DEF_BATCH})
  -w seconds            wait for link up (default: {DEF_WAIT_LINK})
  -W                    enable busy waiting. this will run your CPU at 100%
  -s seconds            seconds between syslog stats messages (default: 0)
  -o seconds            seconds between stdout stats messages (default: 0)
  -T seconds            (pynetmap) stop after this many seconds (also --duration)
"""


@dataclass
class Config:
    """What the command line asks for."""

    ifname: str = ""
    groups: list[tuple[str, int]] = field(default_factory=list)  #: (name or "", pipes)
    extra_bufs: int = 0
    batch: int = DEF_BATCH
    wait_link: int = DEF_WAIT_LINK
    busy_wait: bool = False
    stdout_interval: int = 0
    syslog_interval: int = 0
    duration: float = 0.0
    help: bool = False


def _count(opt: str, v: str, least: int = 0) -> int:
    n = number(opt, v)
    if n < least:
        raise UsageError(f"option {opt} must be at least {least}, got {v}")
    return n


def parse_group(spec: str) -> tuple[str, int]:
    """``-p [name:]N``: the group's pipe name ("" = the input's) and number of pipes."""
    name, sep, count = spec.partition(":")
    if not sep:
        name, count = "", spec
    elif not name:
        raise UsageError(f"missing prefix before ':' in '{spec}'")
    if count == "":
        return name, DEF_OUT_PIPES
    try:
        n = int(count, 0)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"invalid number of pipes '{count}' (must be at least 1)")
    return name, n


def parse(argv: list[str]) -> Config:
    """Parse lb's arguments as netmap's ``main`` does; raises :class:`UsageError`."""
    try:
        opts, rest = getopt.getopt(argv, GETOPT, LONG)
    except getopt.GetoptError as e:
        raise UsageError(f"bad option: {e}") from None
    if rest:
        raise UsageError(f"unexpected arguments: {' '.join(rest)}")
    c = Config()
    for o, v in opts:
        if o == "-h":
            c.help = True
        elif o == "-i":
            c.ifname = v if v.startswith(("netmap:", "vale")) else "netmap:" + v
        elif o == "-p":
            c.groups.append(parse_group(v))
        elif o == "-B":
            c.extra_bufs = _count(o, v)
        elif o == "-b":
            c.batch = _count(o, v, 1)
        elif o == "-w":
            c.wait_link = _count(o, v)
        elif o == "-W":
            c.busy_wait = True
        elif o == "-o":
            c.stdout_interval = _count(o, v)
        elif o == "-s":
            c.syslog_interval = _count(o, v)
        elif o in ("-T", "--duration"):
            c.duration = seconds(o, v)
    if c.help:
        return c
    if not c.ifname:
        raise UsageError("missing interface name")
    if not c.groups:
        c.groups.append(("", DEF_OUT_PIPES))
    return c


def pipe_names(cfg: Config) -> list[Group]:
    """The groups with their pipes' first ids: ids continue across groups of one name."""
    spec = nm_parse(cfg.ifname)
    groups: list[Group] = []
    for name, n in cfg.groups:
        if not name:
            if spec.is_pipe():
                raise UsageError(f"{cfg.ifname} is a pipe: its pipes cannot have pipes, "
                                 "name the output group (-p NAME:N)")
            name = spec.name
        first = sum(g.nports for g in groups if g.name == name)
        groups.append(Group(name, n, first))
    return groups


def interface(g: Group, k: int, mem_id: int) -> str:
    """netmap's output pipe name: ``netmap:P{k/xT@memid`` (no prefix for VALE names)."""
    prefix = "" if g.name.startswith("vale") else "netmap:"
    return f"{prefix}{g.name}{{{g.first_id + k}/xT@{mem_id}"


class Stats:
    """The JSON stats lines (spec §6.7), one snapshot of the counters a second."""

    def __init__(self, lb: Balancer, ifname: str, start: float) -> None:
        self.lb = lb
        self.ifname = ifname
        self.prev_t = start
        self.prev = [(0, 0, 0, 0)] * len(lb.pipes)
        self.ticks = 0

    def snapshot(self, now: float) -> list[str]:
        """Counters now and rates since the previous snapshot, as netmap's lines."""
        lb = self.lb
        usec = max(1, int(round((now - self.prev_t) * 1e6)))
        lines = []
        tot = [0, 0, 0, 0]
        cur = []
        for j, p in enumerate(lb.pipes):
            c = (p.pkts, p.drop, p.bytes, p.drop_bytes)
            cur.append(c)
            tot = [a + b for a, b in zip(tot, c, strict=True)]
            d = [a - b for a, b in zip(c, self.prev[j], strict=True)]
            lines.append(
                f'{{"ts":{now:.6f},"interface":{json.dumps(p.interface)},"output_ring":{j},'
                f'"packets_forwarded":{p.pkts},"packets_dropped":{p.drop},'
                f'{_rates(d, usec)},"overflow_queue_size":{p.oq.n if p.oq else 0}}}')
        d = [a - b for a, b in zip(tot, np.sum(self.prev, axis=0).tolist(), strict=True)]
        lines.append(
            f'{{"ts":{now:.6f},"interface":{json.dumps(self.ifname)},"output_ring":null,'
            f'"packets_received":{lb.received},"packets_forwarded":{tot[0]},'
            f'"packets_dropped":{tot[1]},"non_ip_packets":{lb.non_ip},{_rates(d, usec)},'
            f'"free_buffer_slots":{lb.freeq.n if lb.freeq else 0}}}')
        self.prev, self.prev_t = cur, now
        return lines


def _rates(d: list[int], usec: int) -> str:
    """netmap's four rates over ``usec``: integer per-second counts, then Mbps and kpps."""
    pps, dps, bps, dbps = ((x * 1000000 + usec // 2) // usec for x in d)
    return (f'"data_forward_rate_Mbps":{bps * 8 / 1048576:.4f},'
            f'"data_drop_rate_Mbps":{dbps * 8 / 1048576:.4f},'
            f'"packet_forward_rate_kpps":{pps / 1000:.4f},'
            f'"packet_drop_rate_kpps":{dps / 1000:.4f}')


class LoadBalancer:
    """An open lb: the input port, the output pipes and the loop that feeds them."""

    def __init__(self, cfg: Config, out: TextIO | None = None) -> None:
        self.cfg = cfg
        self.out = out or sys.stdout
        self.inp: Port | None = None
        self.ports: list[Port] = []
        self.lb: Balancer | None = None
        self._stopper = Stopper()
        self._syslog: Any = None
        self._ring_errors = 0
        #: extra buffers taken from the input port and not yet owned by the Balancer
        self._extra_back: list[int] = []

    def open(self) -> None:
        """Open the input (with ``-B`` extra buffers) and every output pipe in its region."""
        cfg = self.cfg
        if cfg.syslog_interval:
            try:
                import syslog
            except ImportError:
                raise NetmapError(95, "-s: this system has no syslog") from None
            syslog.openlog("lb", syslog.LOG_CONS | syslog.LOG_PID | syslog.LOG_NDELAY,
                           syslog.LOG_LOCAL1)
            self._syslog = syslog
        groups = pipe_names(cfg)
        try:
            inp = nm_open(cfg.ifname, extra_bufs=cfg.extra_bufs)
        except (NetmapError, ValueError) as e:
            raise NetmapError(getattr(e, "errno", None) or 22,
                              f"cannot open {cfg.ifname}: {_why(e)}") from None
        self.inp = inp
        report.log("main", 741, f"successfully opened {cfg.ifname}")
        extra: list[int] = []
        if cfg.extra_bufs:
            extra = inp.extra_buffers()
            report.log("main", 751, f"obtained {len(extra)} extra buffers")
            inp.bufs_head = 0  # ours now; given back in close()
            self._extra_back = extra
        pipes: list[OutPipe] = []
        for g in groups:
            for k in range(g.nports):
                name = interface(g, k, inp.mem_id)
                report.log("main", 812, f"opening pipe named {name}")
                try:
                    port = nm_open(name)
                except (NetmapError, ValueError) as e:
                    hint = ""
                    if isinstance(e, NetmapError) and "lives in memory region" in str(e):
                        pid = g.first_id + k
                        hint = (f"; failed to open pipe #{k + 1} in zero-copy mode, please "
                                f"close any application that uses either pipe {g.name}}}{pid}"
                                f", or {g.name}{{{pid}, and retry")
                    raise NetmapError(getattr(e, "errno", None) or 22,
                                      f"cannot open {name}: {_why(e)}{hint}") from None
                self.ports.append(port)
                ring = port.tx_rings[0]
                report.log("main", 828, f"successfully opened pipe #{k + 1} {name} "
                                        f"(tx slots: {ring.num_slots})")
                report.log("main", 837, "zerocopy enabled")
                p = OutPipe(name, port, ring, len(pipes))
                pipes.append(p)
                g.pipes.append(p)
        self.lb = Balancer(groups, extra)
        self._extra_back = []

    # -- running ---------------------------------------------------------------
    def stop(self) -> None:
        """Make :meth:`run` return soon; safe from a signal handler or another thread."""
        self._stopper.stop()

    def sleep(self, seconds: float) -> None:
        self._stopper.sleep(seconds)

    def run(self, duration: float = 0.0) -> None:
        """Forward until :meth:`stop` or ``duration`` seconds (0: no limit)."""
        assert self.inp is not None and self.lb is not None
        inp, lb, cfg = self.inp, self.lb, self.cfg
        pipes = lb.pipes
        start = time.monotonic()
        deadline = start + duration if duration > 0 else None
        stats = Stats(lb, cfg.ifname, time.time())
        next_tick = start + 1.0
        moved = 0
        stop_fd = (self._stopper.fileno(),)
        while not self._stopper.stopped:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if now >= next_tick:
                self._tick(stats)
                next_tick = max(next_tick + 1.0, now + 0.5)
            if moved or cfg.busy_wait:
                self.sync()  # busy: no sleeping, one sync per port
            else:
                ports: list[Port] = [inp]
                events = [POLLIN]
                for p in pipes:
                    ring = p.ring
                    pending = ring.tx_pending()
                    # wake up when tail moves: netmap's cur = tail on a ring with pending slots
                    ring.cur = ring.tail if pending else ring.head
                    ports.append(p.port)
                    events.append(POLLOUT if pending else 0)
                timeout = min(POLL_TIMEOUT, next_tick - now)
                if deadline is not None:
                    timeout = min(timeout, deadline - now)
                wait_any(ports, events, max(0.0, timeout) * 1000, extra_fds=stop_fd)
            moved = self.step()
        self.sync()  # hand the last round over before the ports close

    def step(self) -> int:
        """One round after a sync, in netmap's order: chained releases, overflow queues,
        then new input (one batch per input ring); returns the input slots moved."""
        assert self.inp is not None and self.lb is not None
        lb = self.lb
        lb.chain()
        lb.drain()
        return sum(lb.receive(rx, self.cfg.batch) for rx in self.inp.rx_rings)

    def sync(self) -> None:
        """txsync every output pipe, rxsync the input."""
        assert self.inp is not None
        for port in self.ports:
            self._sync(port.txsync)
        self._sync(self.inp.rxsync)

    def _sync(self, fn: Any) -> None:
        try:
            fn()
        except RingError as e:  # the ring was reset (netmap's POLLERR); said once a second
            now = int(time.time())
            if now != self._ring_errors:
                self._ring_errors = now
                report.log("main", 0, str(e))

    def _tick(self, stats: Stats) -> None:
        cfg = self.cfg
        stats.ticks += 1
        to_out = cfg.stdout_interval and stats.ticks % cfg.stdout_interval == 0
        to_log = cfg.syslog_interval and stats.ticks % cfg.syslog_interval == 0
        lines = stats.snapshot(time.time())
        if to_out:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()
        if to_log:
            for line in lines:
                self._syslog.syslog(self._syslog.LOG_INFO, line)

    def close(self) -> None:
        """Give the queued extra buffers back to the input port, close every port."""
        lb = self.lb
        inp = self.inp
        if inp is not None and not inp.closed:
            bufs = (lb.queued() if lb else []) + self._extra_back
            if bufs or self.cfg.extra_bufs:
                _link(inp, bufs)
                report.log("free_buffers", 376, f"added {len(bufs)} buffers to netmap free list")
        for port in self.ports:
            port.close()
        if inp is not None:
            inp.close()
        self._stopper.close()
        if self._syslog is not None:
            self._syslog.closelog()

    def summary(self) -> str:
        lb = self.lb
        f, d = (lb.forwarded, lb.dropped) if lb else (0, 0)
        return f"{f} packets forwarded.  {d} packets dropped. Total {f + d}\n"


def _why(e: Exception) -> str:
    """An open's error without Python's ``[Errno N]`` prefix."""
    return str(getattr(e, "strerror", None) or e)


def _link(port: Port, bufs: list[int]) -> None:
    """Make ``bufs`` the port's extra-buffer list again (its close frees them)."""
    port.bufs_head = objects.link_list(port.region, np.asarray(bufs, np.uint32))


def main(argv: list[str] | None = None) -> int:
    """Run lb with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = parse(argv)
    except UsageError as e:
        report.log("main", 686, str(e))
        sys.stdout.write(USAGE)  # netmap's usage() prints on stdout
        return 1
    if cfg.help:
        sys.stdout.write(USAGE)
        return 0
    lb = LoadBalancer(cfg)
    with stop_on_sigint(lb.stop):
        try:
            try:
                lb.open()
            except (NetmapError, UsageError) as e:
                report.log("main", 738, str(e) if isinstance(e, UsageError) else
                           (e.strerror or str(e)))
                return 1
            lb.sleep(cfg.wait_link)
            lb.run(cfg.duration)
        finally:
            lb.close()
    sys.stdout.write(lb.summary())
    sys.stdout.flush()
    return 0
