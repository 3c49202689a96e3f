"""pkt-gen's command line: netmap's options and defaults (spec §6.1).

Parsed with :mod:`getopt` and netmap's own option string, so clustered and
attached forms (``-Nv``, ``-n100``) work as with the C tool.  Extensions
use long options and are off by default.
"""

from __future__ import annotations

import getopt
import os
from dataclasses import dataclass, field

from ...constants import NR_NO_TX_POLL, NR_REG_ALL_NIC
from ...names import PortNameError
from ...names import parse as parse_name
from .template import parse_mac

GETOPT = "46a:f:F:Nn:i:Il:d:s:D:S:b:c:o:p:T:w:WvR:XC:H:rP:zZAhBM:"
LONG = ["json", "replay=", "pcap-out=", "busy", "live", "help"]
FUNCTIONS = ("tx", "rx", "ping", "pong", "txseq", "rxseq")

# -o bits
OPT_PREFETCH, OPT_ACCESS, OPT_COPY, OPT_MEMCPY, OPT_TS = 1, 2, 4, 8, 16
OPT_INDIRECT, OPT_DUMP, OPT_RUBBISH, OPT_RANDOM_SRC, OPT_RANDOM_DST = 32, 64, 256, 512, 1024
OPT_PPS_STATS, OPT_UPDATE_CSUM = 2048, 4096

#: every option, what it does here (the usage text and a test use this table)
OPTION_HELP: dict[str, str] = {
    "-i port": "port name (netmap:..., vale...:...; other names get netmap: in front)",
    "-f function": "tx rx ping pong txseq rxseq (default rx)",
    "-n count": "packets to send or receive, split over threads (default 0: forever)",
    "-l size": "frame size without CRC, 16..65536 (default 60); a second -l sets the "
               "minimum of random sizes",
    "-b burst": "packets per ring per round (default 512; 1 for ping/pong; at most half a ring)",
    "-4": "IPv4 (default)",
    "-6": "IPv6",
    "-s range": "source ip[:port][-ip[:port]] (default 10.0.0.1:1234)",
    "-d range": "destination ip[:port][-ip[:port]] (default 10.1.0.1:1234)",
    "-S mac": "source MAC (default: the interface's, else 00:00:00:00:00:00)",
    "-D mac": "destination MAC (default ff:ff:ff:ff:ff:ff)",
    "-a cpu": "pin thread i to cpu (a + i) %% cpus (Linux)",
    "-c cpus": "cpus to use (default 1; 0 = all)",
    "-p threads": "threads, one ring each (processes here)",
    "-T ms": "report interval (default 1000)",
    "-w s": "wait before starting (default 2; 0 for vale ports)",
    "-W": "rx/rxseq: exit after 1 s without packets",
    "-R pps": "rate limit in packets per second",
    "-X": "hexdump every packet",
    "-H len": "virtio-net header length 0, 10 or 12 (zero bytes before each frame)",
    "-P file": "take the frame from the first packet of a pcap file",
    "-z": "random source address and port per packet",
    "-Z": "random destination address and port per packet",
    "-N": "raw numbers instead of K/M/G units",
    "-F frags": "slots per packet, 1..63 (NS_MOREFRAG)",
    "-M size": "fragment size (default: the buffer size)",
    "-I": "NS_INDIRECT (VALE TX only; refused on other ports)",
    "-r": "send buffers without writing them",
    "-A": "add avg/std pps over the last 15 reports",
    "-B": "add 24 bytes of framing per packet to bit rates",
    "-C geom": "tx_slots[,rx_slots[,tx_rings[,rx_rings]]] (deprecated: use @conf:)",
    "-o bits": "1 prefetch 2 access 4 copy 8 memcpy 32 indirect 64 dump 256 rubbish "
               "512 random src 1024 random dst 4096 update csum",
    "-v": "more verbose",
    "-h": "this help",
    "--json": "reports and summary as JSON objects, one per line",
    "--replay file": "tx: send all packets of a pcap/pcapng file in order, looping",
    "--pcap-out file": "rx: write received frames to a pcap file",
    "--busy": "never sleep: spin on the rings (lowest latency, one core at 100%)",
    "--live": "tx on a Linux interface, sent by the kernel (XDP live frames, Linux >= "
              "5.18); -b is the kernel's batch (default 64, at most 256)",
}
#: --live: the kernel builds each frame from one template, so what needs another
#: frame per packet from user space is refused, by name
LIVE_BATCH, LIVE_MAX_BATCH = 64, 256


class UsageError(Exception):
    """A bad command line; the message says why."""


@dataclass
class Config:
    ifname: str = ""
    function: str = "rx"
    npkts: int = 0
    pkt_size: int = 60
    pkt_min_size: int = 0
    burst: int = 0  # 0 = the function's default
    af: int = 4
    src: str = ""
    dst: str = ""
    src_mac: str = ""  # "" = the interface's MAC, else 00:00:00:00:00:00
    dst_mac: str = "ff:ff:ff:ff:ff:ff"
    affinity: int = -1
    cpus: int = 1
    nthreads: int = 1
    report_ms: int = 1000
    wait_link: int = -1
    wait_idle: bool = False
    rate: float = 0.0
    vnet_hdr: int = 0
    pcap_file: str = ""
    normalize: bool = True
    frags: int = 1
    frag_size: int = 0
    avg: bool = False
    framing: bool = False
    geometry: str = ""
    options: int = 0
    verbose: int = 0
    json: bool = False
    replay: str = ""
    pcap_out: str = ""
    busy: bool = False
    live: bool = False
    help: bool = False
    notes: list[str] = field(default_factory=list)

    def share(self, tid: int) -> int:
        """Thread ``tid``'s part of ``-n``: an even split, the remainder to the first
        threads, so the parts add up to exactly ``-n`` (0 when ``-n`` is 0: forever)."""
        q, r = divmod(self.npkts, self.nthreads)
        return q + (tid < r)

    @property
    def dump(self) -> bool:
        return bool(self.options & OPT_DUMP)


def usage() -> str:
    lines = ["Usage: pkt-gen -i port [-f function] [options]", "", "Options (netmap's):"]
    for opt, text in OPTION_HELP.items():
        lines.append(f"  {opt:<16} {text.replace('%%', '%')}")
    return "\n".join(lines) + "\n"


#: what each numeric option counts, for netmap-style "bad <what> <value>" messages
_NUMBERS = {"-n": "count", "-l": "pktsize", "-b": "burst", "-a": "affinity", "-c": "cpus",
            "-p": "nthreads", "-T": "report interval", "-w": "wait", "-R": "rate",
            "-H": "virtio-net header length", "-F": "number of fragments",
            "-M": "fragment size", "-o": "options"}


def number(opt: str, v: str) -> int:
    """The number given to option ``opt`` (C's ``atoi`` rules on bases, with an error)."""
    try:
        return int(v, 0)
    except ValueError:
        raise UsageError(f"option {opt} needs a number, got {v!r}") from None


def seconds(opt: str, v: str) -> float:
    """The seconds given to option ``opt`` (bridge's and lb's ``-T``): a number >= 0."""
    try:
        s = float(v)
    except ValueError:
        s = -1.0
    if not s >= 0:  # also NaN
        raise UsageError(f"option {opt} needs a number of seconds >= 0, got {v!r}")
    return s


def _int(opt: str, v: str) -> int:
    """The number of option ``opt``.  None of pkt-gen's numbers can be negative: refused
    here, before a negative count reads as "none" or a negative cpu count as "too high"."""
    n = number(opt, v)
    if n < 0:
        raise UsageError(f"bad {_NUMBERS[opt]} {n} ({opt} must not be negative)")
    return n


def parse(argv: list[str]) -> Config:
    """Parse pkt-gen's arguments; raises :class:`UsageError`."""
    try:
        opts, rest = getopt.getopt(argv, GETOPT, LONG)
    except getopt.GetoptError as e:
        raise UsageError(str(e)) from None
    if rest:
        raise UsageError(f"unexpected arguments: {' '.join(rest)}")
    c = Config()
    sizes: list[int] = []
    for o, v in opts:
        if o in ("-h", "--help"):
            c.help = True
        elif o == "-i":
            if len(v) > 504:
                raise UsageError("port name too long (at most 504 characters)")
            c.ifname = v
        elif o == "-f":
            if v not in FUNCTIONS:
                raise UsageError(f"unrecognised function {v}")
            c.function = v
        elif o == "-n":
            c.npkts = _int(o, v)
        elif o == "-l":
            sizes.append(_int(o, v))
        elif o == "-b":
            c.burst = _int(o, v)
        elif o == "-4":
            c.af = 4
        elif o == "-6":
            c.af = 6
        elif o == "-s":
            c.src = v
        elif o == "-d":
            c.dst = v
        elif o == "-S":
            c.src_mac = v
        elif o == "-D":
            c.dst_mac = v
        elif o == "-a":
            c.affinity = _int(o, v)
        elif o == "-c":
            c.cpus = _int(o, v)
        elif o == "-p":
            c.nthreads = _int(o, v)
        elif o == "-T":
            c.report_ms = _int(o, v)
        elif o == "-w":
            c.wait_link = _int(o, v)
        elif o == "-W":
            c.wait_idle = True
        elif o == "-R":
            c.rate = float(_int(o, v))
        elif o == "-X":
            c.options |= OPT_DUMP
        elif o == "-H":
            c.vnet_hdr = _int(o, v)
        elif o == "-P":
            c.pcap_file = v
        elif o == "-z":
            c.options |= OPT_RANDOM_SRC
        elif o == "-Z":
            c.options |= OPT_RANDOM_DST
        elif o == "-N":
            c.normalize = False
        elif o == "-F":
            c.frags = _int(o, v)
        elif o == "-M":
            c.frag_size = _int(o, v)
        elif o == "-I":
            c.options |= OPT_INDIRECT
        elif o == "-r":
            c.options |= OPT_RUBBISH
        elif o == "-A":
            c.avg = True
        elif o == "-B":
            c.framing = True
        elif o == "-C":
            c.geometry = v
        elif o == "-o":
            c.options |= _int(o, v)
        elif o == "-v":
            c.verbose += 1
        elif o == "--json":
            c.json = True
        elif o == "--replay":
            c.replay = v
        elif o == "--pcap-out":
            c.pcap_out = v
        elif o == "--busy":
            c.busy = True
        elif o == "--live":
            c.live = True
    if c.help:
        return c
    _finish(c, sizes)
    return c


def _finish(c: Config, sizes: list[int]) -> None:
    """Defaults that depend on other options, and netmap's start-up checks."""
    if not c.ifname:
        raise UsageError("missing -i port")
    if not (c.ifname.startswith(("netmap:", "vale")) or c.ifname == "null"
            or c.ifname.startswith("tap") or c.ifname.startswith("pcap:")):
        c.ifname = "netmap:" + c.ifname
    if sizes:
        c.pkt_size = sizes[0]
        if len(sizes) > 1:
            c.pkt_min_size = sizes[1]
    for s in (c.pkt_size, c.pkt_min_size or c.pkt_size):
        if not 16 <= s <= 65536:
            raise UsageError(f"bad pktsize {s}, must be 16..65536")
    if c.pkt_min_size and c.pkt_min_size >= c.pkt_size:
        raise UsageError(f"the minimum size {c.pkt_min_size} (second -l) must be below the "
                         f"size {c.pkt_size} (first -l)")
    if c.burst == 0:
        c.burst = 1 if c.function in ("ping", "pong") else LIVE_BATCH if c.live else 512
    if c.burst < 1:
        raise UsageError("burst (-b) must be at least 1")
    if c.wait_link < 0:
        c.wait_link = 0 if c.ifname.startswith("vale") else 2
    if not 1 <= c.frags <= 63:
        raise UsageError(f"bad number of fragments {c.frags}, must be 1..63")
    if c.vnet_hdr not in (0, 10, 12):
        raise UsageError(f"bad virtio-net header length {c.vnet_hdr} (0, 10 or 12)")
    for m in (c.src_mac or "00:00:00:00:00:00", c.dst_mac):
        try:
            parse_mac(m)
        except ValueError as e:
            raise UsageError(str(e)) from None
    ncpus = os.cpu_count() or 1
    if c.cpus == 0:
        c.cpus = ncpus
    if not 0 < c.cpus <= ncpus:
        raise UsageError(f"{c.cpus} cpus is too high, have only {ncpus} cpus")
    if c.nthreads < 1:
        raise UsageError("threads (-p) must be at least 1")
    if c.nthreads > 1 and c.function in ("ping", "pong", "txseq"):
        raise UsageError(f"{c.function} supports only one thread (-p 1)")
    if c.report_ms < 1:
        raise UsageError("report interval (-T) must be at least 1 ms")
    if c.geometry:
        try:
            nums = [int(x) for x in c.geometry.split(",")]
        except ValueError:
            raise UsageError(f"bad -C {c.geometry!r}") from None
        if not 1 <= len(nums) <= 4:
            raise UsageError(f"bad -C {c.geometry!r}")
    if c.live:
        _check_live(c)
    if c.function == "txseq" and c.npkts:
        c.notes.append("Ignoring -n argument")
        c.npkts = 0


def _check_live(c: Config) -> None:
    """--live: a whole Linux interface, tx, and only options the kernel's sender keeps."""
    if c.function != "tx":
        raise UsageError(f"--live sends (-f tx); not -f {c.function}")
    try:
        spec = parse_name(c.ifname)
    except PortNameError:
        spec = None
    if (spec is None or spec.prefix != "netmap" or spec.pipe_id is not None
            or spec.mode != NR_REG_ALL_NIC or spec.flags or spec.options):
        raise UsageError(f"--live sends on a whole Linux interface (-i IFNAME or "
                         f"netmap:IFNAME); not {c.ifname}")
    refused = [(c.frags > 1, "-F"), (c.frag_size > 0, "-M"), (c.pkt_min_size > 0, "a second -l"),
               (c.vnet_hdr > 0, "-H"), (bool(c.geometry), "-C"), (bool(c.replay), "--replay"),
               (c.busy, "--busy"), (bool(c.options & OPT_INDIRECT), "-I"),
               (c.dump, "-X"), (bool(c.options & OPT_RUBBISH), "-r"),
               (bool(c.options & OPT_RANDOM_SRC), "-z"), (bool(c.options & OPT_RANDOM_DST), "-Z"),
               (bool(c.options & (OPT_COPY | OPT_MEMCPY)), "-o 4/8 (copy)")]
    names = [name for bad, name in refused if bad]
    if names:
        raise UsageError(f"--live does not support {', '.join(names)}: the kernel sends one "
                         "template with the address/port odometer")
    ncpus = os.cpu_count() or 1
    if c.nthreads > ncpus:
        raise UsageError(f"--live: one worker per cpu, have only {ncpus} cpus (-p {c.nthreads})")
    if c.burst > LIVE_MAX_BATCH:
        raise UsageError(f"--live: -b is the kernel's batch, at most {LIVE_MAX_BATCH}")


def open_kwargs(c: Config) -> dict[str, int]:
    """``open()`` keyword arguments: ``-C``, and ``NR_NO_TX_POLL`` for the functions
    whose poll need not flush TX rings: the receivers never transmit, ping and
    pong txsync explicitly after each send (as netmap's do), so each turn of
    their waiting loop costs one sync less."""
    kw = geometry(c)
    if c.function in ("rx", "rxseq", "ping", "pong"):
        kw["flags"] = NR_NO_TX_POLL
    return kw


def geometry(c: Config) -> dict[str, int]:
    """-C as open() keyword arguments: one number sets both slot counts, the third both rings."""
    if not c.geometry:
        return {}
    nums = [int(x) for x in c.geometry.split(",")]
    out = {"tx_slots": nums[0], "rx_slots": nums[1] if len(nums) > 1 else nums[0]}
    if len(nums) > 2:
        out["tx_rings"] = nums[2]
        out["rx_rings"] = nums[3] if len(nums) > 3 else nums[2]
    return out
