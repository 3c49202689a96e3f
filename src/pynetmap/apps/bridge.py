"""netmap's ``bridge`` (spec §6.6): forward packets between two ports.

``bridge -i netmap:a}0 -i netmap:b{0`` moves everything that arrives on one
port out of the other, both ways.  When the two ports share a memory region
it moves nothing but buffer indices (zero copy); otherwise, or with ``-c``,
it copies the bytes.  Options, defaults, log lines and the main loop are
netmap's; a ring pair costs a fixed number of NumPy operations whatever the
burst, never a Python step per packet.

Where we differ from netmap's tool, on purpose:

- ``-T seconds`` (long form ``--duration``) stops after that many seconds:
  a bound for scripts and tests.  Not in netmap.
- On exit (end of ``-T`` or Ctrl-C) the packet counts of both directions are
  printed on stdout; netmap prints nothing.
- ``-v`` prints one line a second with the packets forwarded each way;
  ``-vv`` adds netmap's ``-v`` lines (every poll, every ring pair moved).
  netmap's per-packet lines (its ``-vv``) would cost a Python step per
  packet and are left out.
- A buffer index below 2 is reported but not followed by netmap's
  two-second sleep; a port whose peer is gone (pipes) is reported once.
- Wrong option values that netmap's ``atoi`` would read as 0 are refused
  with a usage message instead.
"""

from __future__ import annotations

import getopt
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .. import open as nm_open
from ..constants import NR_REG_ONE_SW, NR_REG_SW, NS_BUF_CHANGED, NS_MOREFRAG
from ..errors import NetmapError
from ..port import POLLERR, POLLHUP, POLLIN, POLLOUT, Port
from ..ring import Ring
from ..wake import wait_any
from .pktgen import report
from .pktgen.options import UsageError, number, seconds  # pkt-gen's command-line rules
from .stopping import Stopper, stop_on_sigint

GETOPT = "hb:ci:vw:LT:"
LONG = ["duration="]
DEFAULT_BURST = 1024
MAX_BURST = 8192
DEFAULT_WAIT = 4
MAX_WAIT = 100
#: netmap's ``poll(pollfd, 2, 2500)``: an idle bridge logs a timeout line this often
POLL_TIMEOUT = 2.5
#: the TX flag bits a move keeps (netmap replaces only NS_MOREFRAG)
_KEEP_TX_FLAGS = np.uint16(0xFFFF ^ NS_MOREFRAG)

USAGE = """\
netmap bridge program: forward packets between two netmap ports
    usage(1): bridge [-v] [-i ifa] [-i ifb] [-b burst] [-w wait_time] [-c] [-L] [-T secs]
    usage(2): bridge [-v] [-w wait_time] [-c] [-L] [-T secs] [ifa [ifb [burst]]]

    ifa and ifb are specified using the nm_open() syntax.
    When ifb is missing (or is equal to ifa), bridge will
    forward between between ifa and the host stack if -L
    is not specified, otherwise loopback traffic on ifa.

    -b burst   packets moved per ring pair and step, 1..8192 (default 1024)
    -w secs    wait before forwarding, at most 100 (default 4)
    -c         copy the packets even when zero copy is possible
    -L         loopback: with one port, forward its RX back to its TX
    -v         one stats line a second; -vv: netmap's per-poll lines too
    -T secs    (pynetmap) stop after secs seconds (also --duration)

    example: bridge -w 10 -i netmap:eth3 -i netmap:eth1
"""


@dataclass
class Config:
    """What the command line asks for, after netmap's corrections."""

    ifa: str = ""
    ifb: str = ""
    burst: int = DEFAULT_BURST
    wait_link: int = DEFAULT_WAIT
    zerocopy: bool = True
    loopback: bool = False
    verbose: int = 0
    duration: float = 0.0  #: -T; 0 runs until Ctrl-C
    help: bool = False
    #: netmap's D() lines about the options, (source line, text), printed at start
    notes: list[tuple[int, str]] = field(default_factory=list)


def parse(argv: list[str]) -> Config:
    """Parse bridge's arguments as netmap's ``main`` does; raises :class:`UsageError`.

    Options may follow the positional names (GNU getopt, as netmap built on
    Linux).  An equal or missing ``ifb`` turns ``ifa`` into its host rings
    (``ifa^``) unless ``-L`` asks for loopback on ``ifa`` itself.
    """
    try:
        opts, rest = getopt.gnu_getopt(argv, GETOPT, LONG)
    except getopt.GetoptError as e:
        raise UsageError(f"bad option: {e}") from None
    c = Config()
    ifa: str | None = None
    ifb: str | None = None
    burst = DEFAULT_BURST
    for o, v in opts:
        if o == "-h":
            c.help = True
        elif o == "-b":
            burst = number(o, v)  # netmap's bridge clamps a bad one
        elif o == "-i":
            if ifa is None:
                ifa = v
            elif ifb is None:
                ifb = v
            else:
                c.notes.append((226, f"{v} ignored, already have 2 interfaces"))
        elif o == "-c":
            c.zerocopy = False
        elif o == "-v":
            c.verbose += 1
        elif o == "-w":
            c.wait_link = number(o, v)
        elif o == "-L":
            c.loopback = True
        elif o in ("-T", "--duration"):
            c.duration = seconds(o, v)
    if len(rest) > 3:
        raise UsageError(f"unexpected arguments: {' '.join(rest[3:])}")
    if len(rest) > 0:
        ifa = rest[0]
    if len(rest) > 1:
        ifb = rest[1]
    if len(rest) > 2:
        burst = number("burst", rest[2])
    if c.help:
        return c
    if not ifb:
        ifb = ifa
    if not ifa or not ifb:
        raise UsageError("missing interface")
    if not 1 <= burst <= MAX_BURST:
        c.notes.append((261, f"invalid burst {burst}, set to {DEFAULT_BURST}"))
        burst = DEFAULT_BURST
    if not 0 <= c.wait_link <= MAX_WAIT:  # netmap's is unsigned: negative means huge
        c.notes.append((265, f"invalid wait_link {c.wait_link}, set to {DEFAULT_WAIT}"))
        c.wait_link = DEFAULT_WAIT
    if ifa == ifb:
        if not c.loopback:
            c.notes.append((270, "same interface, endpoint 0 goes to host"))
            ifa = ifa + "^"
        else:
            c.notes.append((274, "same interface, loopbacking traffic"))
    c.ifa, c.ifb, c.burst = ifa, ifb, burst
    return c


def rx_slots_avail(port: Port) -> int:
    """Received slots not yet moved, over all bound RX rings (netmap's helper)."""
    return sum(r.space() for r in port.rx_rings)


def tx_slots_avail(port: Port) -> int:
    """Free TX slots over all bound TX rings (netmap's helper, for the -vv lines)."""
    return sum(r.space() for r in port.tx_rings)


def _side(port: Port) -> str:
    return "host" if port.spec.mode in (NR_REG_SW, NR_REG_ONE_SW) else "nic"


class Bridge:
    """Forwarding between two open ports: the moves, the main loop, the counters.

    ``run`` blocks until ``stop`` (any thread, or a signal handler) or the
    duration ends.  ``a2b`` and ``b2a`` count the packets (slots) moved.
    """

    def __init__(self, pa: Port, pb: Port, burst: int = DEFAULT_BURST, zerocopy: bool = True,
                 verbose: int = 0) -> None:
        if zerocopy and pa.mem_id != pb.mem_id:
            raise ValueError("zero copy needs both ports in one memory region")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.pa, self.pb = pa, pb
        self.burst = burst
        self.zerocopy = zerocopy
        self.verbose = verbose
        self.a2b = 0
        self.b2a = 0
        self.msg_a2b = f"{pa.name}:{_side(pa)} --> {pb.name}:{_side(pb)}"
        self.msg_b2a = f"{pb.name}:{_side(pb)} --> {pa.name}:{_side(pa)}"
        self._stopper = Stopper()
        self._rd_second = 0
        self._rd_count = 0
        self._hup_seen: set[int] = set()

    # -- moving ----------------------------------------------------------------------
    def _rd(self, line: int, msg: str) -> None:
        """netmap's ``RD(2, ...)``: at most two such messages a second."""
        now = int(time.time())
        if now != self._rd_second:
            self._rd_second, self._rd_count = now, 0
        if self._rd_count < 2:
            self._rd_count += 1
            report.log("rings_move", line, msg)

    def rings_move(self, rx: Ring, tx: Ring, msg: str) -> int:
        """Move ``min(burst, rx ready, tx free)`` slots from ``rx`` to ``tx``; returns how many.

        Each ring's range is one or two slices (``SlotBatch``), so the cost
        does not depend on the count.  Lengths above the buffer size become
        0, as netmap's; only ``NS_MOREFRAG`` is taken from the RX flags.
        """
        if rx.flags or tx.flags:
            report.log("rings_move", 78, f"{msg} rxflags {rx.flags:x} txflags {tx.flags:x}")
        k = min(self.burst, rx.space(), tx.space())
        if k <= 0:
            return 0
        src, dst = rx.receive(k), tx.reserve(k)
        sidx, didx = src.buf_idx, dst.buf_idx
        if sidx.min() < 2 or didx.min() < 2:
            j = int(np.argmin(np.minimum(sidx, didx)))
            self._rd(94, f"wrong index rxr[{(src.start + j) % rx.num_slots}] = {sidx[j]}  -> "
                         f"txr[{(dst.start + j) % tx.num_slots}] = {didx[j]}")
        lens = src.len
        # copying needs the bytes to fit the TX buffer too (equal in every region we make)
        max_len = rx.buf_size if self.zerocopy else min(rx.buf_size, tx.buf_size)
        bad = lens > max_len
        if bad.any():
            j = int(np.argmax(bad))
            self._rd(100, f"{msg}: invalid len {lens[j]}, rxr[{(src.start + j) % rx.num_slots}]"
                          f" -> txr[{(dst.start + j) % tx.num_slots}] ({int(bad.sum())} slots)")
            lens = np.where(bad, 0, lens).astype(lens.dtype)
            src.len = lens
        dst.len = lens
        morefrag = src.flags & NS_MOREFRAG
        if self.zerocopy:
            sidx = sidx.copy()  # a view of the RX slots when the range does not wrap
            src.buf_idx = didx
            dst.buf_idx = sidx
            src.flags = src.flags | NS_BUF_CHANGED
            dst.flags = (dst.flags & _KEEP_TX_FLAGS) | morefrag | NS_BUF_CHANGED
        else:
            width = int(lens.max())
            if width:  # rows of the batch, only as wide as its longest packet
                tx.bufs[didx, :width] = rx.bufs[sidx, :width]
            dst.flags = (dst.flags & _KEEP_TX_FLAGS) | morefrag
        rx.advance(k)
        tx.advance(k)
        if self.verbose > 1:
            report.log("rings_move", 131, f"{msg} fwd {k} packets: rxring {rx.ringid} --> "
                                          f"txring {tx.ringid}")
        return k

    def ports_move(self, src: Port, dst: Port, msg: str) -> int:
        """Move from ``src``'s RX rings to ``dst``'s TX rings in order, skipping empty ones."""
        rxs, txs = src.rx_rings, dst.tx_rings
        si = di = m = 0
        while si < len(rxs) and di < len(txs):
            if rxs[si].empty():
                si += 1
            elif txs[di].empty():
                di += 1
            else:
                m += self.rings_move(rxs[si], txs[di], msg)
        return m

    # -- main loop -------------------------------------------------------------------
    def stop(self) -> None:
        """Make ``run`` return soon; safe from another thread or a signal handler."""
        self._stopper.stop()

    def sleep(self, seconds: float) -> None:
        """Sleep, but return as soon as ``stop`` is called (the -w wait)."""
        self._stopper.sleep(seconds)

    def run(self, duration: float = 0.0) -> None:
        """netmap's main loop until :meth:`stop` or ``duration`` seconds (0: no limit).

        netmap polls both fds at once; here :func:`pynetmap.wait_any` syncs
        and arms each port for its events, then sleeps on both ports' file
        descriptors and the stop socket.  A side with packets
        waits for the other side's TX space (POLLOUT), a side without waits
        for packets (POLLIN), so a full TX ring does not make it spin.
        """
        pa, pb = self.pa, self.pb
        start = time.monotonic()
        deadline = start + duration if duration > 0 else None
        next_report = start + 1.0
        last = (0, 0, start)
        idle_since = start
        while not self._stopper.stopped:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if self.verbose and now >= next_report:
                last = self._report(last, now)
                next_report = now + 1.0
            n0, n1 = rx_slots_avail(pa), rx_slots_avail(pb)
            ev_a = (0 if n0 else POLLIN) | (POLLOUT if n1 else 0)
            ev_b = (POLLOUT if n0 else 0) | (0 if n1 else POLLIN)
            timeout = POLL_TIMEOUT - (now - idle_since)
            if deadline is not None:
                timeout = min(timeout, deadline - now)
            if self.verbose:
                timeout = min(timeout, next_report - now)
            ra, rb = wait_any((pa, pb), (ev_a, ev_b), max(0.0, timeout) * 1000,
                              extra_fds=(self._stopper.fileno(),))
            if not (ra or rb):
                if time.monotonic() - idle_since >= POLL_TIMEOUT:
                    self._poll_line("timeout", ev_a, 0, ev_b, 0)
                    idle_since = time.monotonic()
                continue
            idle_since = time.monotonic()
            if self.verbose > 1:
                self._poll_line("ok", ev_a, ra, ev_b, rb)
            self._errors(ra, rb)
            if ra & POLLOUT:
                self.b2a += self.ports_move(pb, pa, self.msg_b2a)
            if rb & POLLOUT:
                self.a2b += self.ports_move(pa, pb, self.msg_a2b)
            # No txsync here: the next round's sync flushes, as netmap's poll does.
        # Hand over what the last round moved before the caller closes the ports.
        for p in (pa, pb):
            if not p.closed:
                p.poll(0, 0)

    def _errors(self, ra: int, rb: int) -> None:
        for i, (p, rev) in enumerate(((self.pa, ra), (self.pb, rb))):
            if rev & POLLERR and p.rx_rings:
                rx = p.rx_rings[0]
                report.log("main", 370 + 5 * i,
                           f"error on fd{i}, rx [{rx.head},{rx.cur},{rx.tail})")
            if rev & POLLHUP and i not in self._hup_seen:
                self._hup_seen.add(i)
                report.log("main", 0, f"{p.name}: the peer is gone")

    def _poll_line(self, what: str, ev_a: int, ra: int, ev_b: int, rb: int) -> None:
        pa, pb = self.pa, self.pb
        ha = pa.rx_rings[0].head if pa.rx_rings else 0
        hb = pb.rx_rings[0].head if pb.rx_rings else 0
        report.log("main", 352,
                   f"poll {what} [0] ev {ev_a:x} {ra:x} rx {rx_slots_avail(pa)}@{ha} tx "
                   f"{tx_slots_avail(pa)}, [1] ev {ev_b:x} {rb:x} rx {rx_slots_avail(pb)}@{hb} "
                   f"tx {tx_slots_avail(pb)}")

    def _report(self, last: tuple[int, int, float], now: float) -> tuple[int, int, float]:
        a2b, b2a, t = last
        dt = max(now - t, 1e-9)
        report.log("stats", 0,
                   f"{self.msg_a2b} {self.a2b - a2b} pkts ({report.norm((self.a2b - a2b) / dt)}"
                   f"pps), {self.msg_b2a} {self.b2a - b2a} pkts "
                   f"({report.norm((self.b2a - b2a) / dt)}pps)")
        return self.a2b, self.b2a, now

    def summary(self, seconds: float) -> str:
        """The lines printed on exit: packets forwarded each way."""
        return (f"{self.msg_a2b}: {self.a2b} packets\n"
                f"{self.msg_b2a}: {self.b2a} packets\n"
                f"in {seconds:.2f} seconds.\n")

    def close(self) -> None:
        """Close the stop socket (the ports belong to the caller)."""
        self._stopper.close()


def main(argv: list[str] | None = None) -> int:
    """Run bridge with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = parse(argv)
    except UsageError as e:
        report.log("main", 212, str(e))
        sys.stderr.write(USAGE)
        return 1
    if cfg.help:
        sys.stderr.write(USAGE)
        return 1  # netmap's usage() exits 1, also for -h
    for line, note in cfg.notes:
        report.log("main", line, note)
    try:
        pa = nm_open(cfg.ifa)
    except (NetmapError, ValueError) as e:
        report.log("main", 281, f"cannot open {cfg.ifa}: {e}")
        return 1
    try:
        pb = nm_open(cfg.ifb)
    except (NetmapError, ValueError) as e:
        report.log("main", 287, f"cannot open {cfg.ifb}: {e}")
        pa.close()
        return 1
    zerocopy = cfg.zerocopy and pa.mem_id == pb.mem_id
    report.log("main", 292, f"------- zerocopy {'' if zerocopy else 'NOT '}supported")
    bridge = Bridge(pa, pb, cfg.burst, zerocopy, cfg.verbose)
    start = time.monotonic()
    with stop_on_sigint(bridge.stop):
        try:
            report.log("main", 299, f"Wait {cfg.wait_link} secs for link to come up...")
            bridge.sleep(cfg.wait_link)
            report.log("main", 301, f"Ready to go, {pa.name} 0x{_first(pa)}/"
                                    f"{pa.num_rx_rings} <-> {pb.name} 0x{_first(pb)}/"
                                    f"{pb.num_rx_rings}.")
            start = time.monotonic()
            bridge.run(cfg.duration)
        finally:
            bridge.close()
            pb.close()
            pa.close()
    sys.stdout.write(bridge.summary(time.monotonic() - start))
    sys.stdout.flush()
    return 0


def _first(port: Port) -> str:
    """netmap's ``first_rx_ring`` in hex."""
    return f"{port.rx_rings[0].ringid:x}" if port.rx_rings else "0"


if __name__ == "__main__":
    sys.exit(main())
