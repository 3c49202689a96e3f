"""NIC ports: ``netmap:IFNAME`` for any interface (spec §4.5, DESIGN §5).

Every interface gets one memory region (created by its first open, in this
user's registry, keyed by network namespace and name) holding the rings of
every process that opens it, so ports of one interface -- NIC and host
rings, several queues -- swap buffers with zero copy.  The region is laid
out as an AF_XDP UMEM (``Geometry.lead``).

Engines, per open:

* ``xdp`` -- one AF_XDP socket per queue (``netmap:eth0-2`` is queue 2);
  the interface's XDP program redirects every bound queue to its socket, so
  the OS stack no longer sees that traffic (netmap mode).  The program is
  loaded by the first open, shared through its XSKMAP by later ones (other
  processes included), detached by the last close; one left by a crashed
  process is recognised and replaced.
* ``packet`` -- AF_PACKET mmap rings, one ring pair, copies; where AF_XDP is
  missing or not permitted, or when asked for.  The stack keeps its copy.
* ``pcap`` -- libpcap (:mod:`pynetmap.pcap_queue`), one ring pair, copies;
  the engine on macOS and FreeBSD, where this adapter asks libpcap (not
  the Linux modules) about the interface, and a choice on Linux.
* ``npcap`` -- Npcap (:mod:`pynetmap.windows.npcap`), the engine on Windows
  and only there: one ring pair, copies, the host TX ring through Npcap's
  send-to-RX mode; no host RX ring and no selectable descriptor (``poll``
  sleeps on the capture's event).  Names are Windows' adapters as
  :mod:`pynetmap.windows.names` spells them (``netmap:Ethernet_2``, or the
  GUID).  Never run on Windows: tested on Linux with a fake Npcap.
* ``auto`` (default, or ``$PYNETMAP_ENGINE``) -- ``xdp`` if it works, else
  ``packet``, saying so once on stderr; ``npcap`` on Windows, ``pcap`` on the
  other OSes.

Host rings (``eth0^``, ``eth0*``) are the OS stack's side: see
:mod:`pynetmap.linux.hoststack`.
"""

from __future__ import annotations

import errno
import os
import select
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

from .. import objects
from .. import region as R
from ..adapter import Adapter, Found, PortInfo
from ..constants import (
    NR_FORWARD,
    NR_REG_NIC_SW,
    NR_REG_ONE_SW,
    NR_REG_SW,
    NR_RX,
    NR_TX,
    NS_FORWARD,
)
from ..errors import NetmapError
from ..kring import KRing, gather
from ..names import PortSpec
from ..registry import State, new_mem_id
from ..ring import Ring

if TYPE_CHECKING:
    from ..pcap_queue import PcapQueue
    from ..windows.names import Interface
    from ..windows.npcap import Npcap, NpcapQueue
    from .bpf import XskProgram
    from .hoststack import HostStack
    from .packet_queue import PacketQueue
    from .tpacket import PacketSocket
    from .xdp_queue import XdpQueue

DEFAULT_SLOTS = 1024
#: a 2048-byte buffer less the 256 bytes AF_XDP keeps in front of a received frame
MAX_FRAME = 2048 - 256
MAX_SLOTS = 4096
ENGINES = ("auto", "xdp", "packet", "pcap", "npcap")
LINUX = sys.platform.startswith("linux")
WINDOWS = sys.platform == "win32"
XDP_MODES = ("auto", "zerocopy", "copy")
#: AF_XDP: received frames the kernel may queue beyond a full netmap RX ring, in rings
RX_BACKLOG = 8
#: TX waits are short: AF_XDP completions arrive without a wake-up
TX_RESYNC_S = 0.0005


def _netns() -> int:
    """Identity of the calling thread's network namespace (interface names are per netns)."""
    return os.stat("/proc/thread-self/ns/net").st_ino if LINUX else 0


def _engine(requested: str | None) -> str:
    engine = requested or os.environ.get("PYNETMAP_ENGINE") or "auto"
    if engine == "netmap":  # the native adapter takes it where the kernel has netmap
        raise NetmapError(errno.ENODEV, "engine 'netmap' needs /dev/netmap: the netmap kernel "
                          "module (load netmap.ko) or FreeBSD; here use auto, xdp, packet or pcap")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return engine


def _xdp_refused() -> str | None:
    """Why this process cannot use AF_XDP, or None."""
    from . import ifinfo as I

    for cap in (I.CAP_NET_ADMIN, I.CAP_NET_RAW, I.CAP_BPF):
        if not I.has_capability(cap) and not (
                cap == I.CAP_BPF and I.has_capability(I.CAP_SYS_ADMIN)):
            return f"{I._CAP_NAMES[cap]} is missing"
    import importlib.util
    import socket

    try:
        socket.socket(44, socket.SOCK_RAW, 0).close()
    except OSError as e:
        return f"AF_XDP sockets are not available ({e.strerror})"
    if importlib.util.find_spec("pyroute2") is None:  # attaching the XDP program needs it
        return "pyroute2 is not installed (pip install pyroute2)"
    return None


def _slots(v: int, what: str) -> int:
    if v == 0:
        return DEFAULT_SLOTS
    if not 2 <= v <= MAX_SLOTS or v & (v - 1):
        raise ValueError(f"NIC {what} must be a power of two in 2..{MAX_SLOTS}, got {v}")
    return v


def _region_for(state: State, key: str, nq: int, slots: tuple[int, int], mem_id: int,
                extra: int) -> R.Region:
    if mem_id:
        region = R.attach(state, mem_id)
        if region.lead != 256:
            raise NetmapError(errno.EINVAL, f"memory region {mem_id} was not made for "
                              "AF_XDP (open the interface first, then share its region)")
        return region
    tx_s, rx_s = slots
    # every queue and the host pair: TX ring, RX ring and its backlog, whichever
    # processes open them.  Each AF_XDP socket pins the whole pool, so no more.
    per_pair = tx_s + (1 + RX_BACKLOG) * rx_s
    nbufs = 2 + (nq + 1) * per_pair + extra + 4096
    ring_bytes = 4 * (nq + 1) * (max(tx_s, rx_s) * 16 + 512)
    geom = R.Geometry(if_pool_size=1 << 20, ring_pool_size=max(4 << 20, ring_bytes),
                      nbufs=nbufs, lead=256)
    return R.create(state, new_mem_id(state), geom)


def _ranges(idx: np.ndarray) -> list[list[int]]:
    """Buffer indices as ``[start, stop)`` runs, compact enough for the JSON registry."""
    if not len(idx):
        return []
    idx = np.sort(idx.astype(np.int64))
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = idx[np.concatenate([[0], breaks])]
    stops = idx[np.concatenate([breaks - 1, [len(idx) - 1]])] + 1
    return [[int(a), int(b)] for a, b in zip(starts, stops, strict=True)]


def _mac_text(mac: bytes | None) -> str | None:
    return ":".join(f"{b:02x}" for b in mac) if mac is not None else None


def _linux_facts(spec: PortSpec, engine: str) -> tuple[str, int, dict]:
    """(engine, queues, interface facts) for ``xdp``/``packet``/``auto`` on Linux."""
    from . import ifinfo

    ifname = spec.port
    ifinfo.require_up(ifname)
    if engine != "packet":
        why = _xdp_refused()
        if why is not None:
            if engine == "xdp":
                raise NetmapError(errno.EPERM if "missing" in why else errno.EAFNOSUPPORT,
                                  f"{spec.spec}: AF_XDP engine unavailable: {why} "
                                  "(run as root, or use engine='packet')")
            print(f"pynetmap: {ifname}: AF_XDP unavailable ({why}); using AF_PACKET",
                  file=sys.stderr)
            engine = "packet"
        else:
            engine = "xdp"
    if engine == "packet":
        ifinfo.require_capability(ifinfo.CAP_NET_RAW, what=f"{spec.spec} (AF_PACKET engine)")
    nq = min(ifinfo.queue_counts(ifname)) if engine == "xdp" else 1
    return engine, nq, _kernel_facts(ifname)


def _kernel_facts(ifname: str) -> dict:
    """What the Linux kernel says of the interface: index, MTU, MAC."""
    from . import ifinfo

    return {"ifindex": ifinfo.if_index(ifname), "mtu": ifinfo.mtu(ifname),
            "mac": _mac_text(ifinfo.mac(ifname))}


def _pcap_facts(spec: PortSpec, engine: str) -> dict:
    """Interface facts for the pcap engine: the kernel's on Linux, libpcap's elsewhere.

    Outside Linux pcap is the only engine; host rings are refused (libpcap
    can neither take frames away from the OS stack nor hand frames to it).
    """
    ifname = spec.port
    if engine not in ("auto", "pcap"):
        raise NetmapError(errno.EOPNOTSUPP, f"{spec.spec}: the {engine} engine needs Linux; "
                          "use engine='pcap' (libpcap) here")
    if spec.mode in (NR_REG_SW, NR_REG_ONE_SW, NR_REG_NIC_SW):
        alt = ("use engine='packet' or 'xdp'" if LINUX else
               f"open netmap:{ifname}, whose RX ring sees what arrives while the stack "
               "keeps its own copy")
        raise NetmapError(errno.EOPNOTSUPP, f"{spec.spec}: no host rings with the pcap "
                          "engine: libpcap can neither take frames away from the OS stack "
                          f"nor hand frames to it ({alt})")
    from .. import libpcap

    libpcap.load()  # a missing library is one line at open, not at the first sync
    if LINUX:
        from . import ifinfo

        ifinfo.require_up(ifname)
        ifinfo.require_capability(ifinfo.CAP_NET_RAW, what=f"{spec.spec} (pcap engine)")
        return _kernel_facts(ifname)
    import socket

    dev = libpcap.device(ifname)
    if not dev.up:
        raise NetmapError(errno.ENETDOWN, f"interface {ifname} is down (ifconfig {ifname} up)")
    return {"ifindex": socket.if_nametoindex(ifname), "mtu": dev.mtu, "mac": _mac_text(dev.mac)}


def _npcap_facts(spec: PortSpec, engine: str) -> dict:
    """Interface facts on Windows: Npcap's device joined with Windows' adapter.

    Npcap is loaded here, so a missing install is one line at open; the
    loaded DLLs and the interface go on to the queues (``npcap``, ``itf``).
    ``ifname`` is the interface's netmap name, whichever name (GUID,
    friendly name) the user gave: one record and region per interface.
    """
    if engine not in ("auto", "npcap"):
        raise NetmapError(errno.EOPNOTSUPP, f"{spec.spec}: the {engine} engine is not "
                          "available on Windows; NIC ports here use engine='npcap' (Npcap)")
    from ..windows import interfaces, names, npcap

    lib = npcap.Npcap()
    itf = names.lookup(spec.port, interfaces.windows_table(lib))
    if not itf.up:
        raise NetmapError(errno.ENETDOWN, f"interface {itf.netmap_name} "
                          f"({itf.friendly or itf.device}) is down")
    return {"ifindex": itf.ifindex or 0, "mtu": itf.mtu, "mac": _mac_text(itf.mac),
            "ifname": itf.netmap_name, "npcap": lib, "itf": itf}


def _mtu_fix(ifname: str, facts: dict) -> str:
    """The command that lowers an interface's MTU, on this OS."""
    if LINUX:
        return f"ip link set {ifname} mtu {MAX_FRAME - 14}"
    if WINDOWS:
        return (f'netsh interface ipv4 set subinterface "{facts["itf"].friendly}" '
                f"mtu={MAX_FRAME - 14}")
    return f"ifconfig {ifname} mtu {MAX_FRAME - 14}"


class NicAdapter(Adapter):
    """The kernel side of a NIC port: one engine queue per bound ring pair."""

    kind = "nic"
    exclusive_rings = True  # an AF_XDP queue takes one socket (netmap lets fds share)
    ring_word = "queue"
    doorbell = False
    tx_resync_s = TX_RESYNC_S
    idle_txsync = True

    @classmethod
    def takes(cls, spec: PortSpec) -> bool:
        return not spec.is_pipe() and not spec.is_vale()

    @classmethod
    def prepare(cls, spec: PortSpec, conf: dict, kw: dict) -> dict:
        """The engine, the queue count and the frame checks; no lock needed."""
        engine = kw.pop("engine", None)
        xdp_mode = kw.pop("xdp_mode", "auto")
        super().prepare(spec, conf, kw)
        if xdp_mode not in XDP_MODES:
            raise ValueError(f"xdp_mode must be auto, zerocopy or copy, not {xdp_mode!r}")
        engine = _engine(engine)
        if engine == "npcap" and not WINDOWS:
            raise NetmapError(errno.EOPNOTSUPP, f"{spec.spec}: the npcap engine needs "
                              "Windows (Npcap); leave engine='auto' to get this OS's")
        if WINDOWS:
            engine, nq, facts = "npcap", 1, _npcap_facts(spec, engine)
        elif engine == "pcap" or not LINUX:
            engine, nq, facts = "pcap", 1, _pcap_facts(spec, engine)
        else:
            engine, nq, facts = _linux_facts(spec, engine)
        slots = (_slots(conf.get("tx_slots", 0), "slots"),
                 _slots(conf.get("rx_slots", 0), "slots"))
        if conf.get("host_tx_rings", 0) > 1 or conf.get("host_rx_rings", 0) > 1:
            raise ValueError("NIC ports have one host ring pair")
        ifname, mtu = facts.get("ifname", spec.port), facts["mtu"]
        if mtu is not None and mtu + 14 > MAX_FRAME:
            raise NetmapError(errno.EINVAL, f"{ifname}: MTU {mtu} needs {mtu + 14}-byte "
                              f"frames, more than a netmap buffer holds here ({MAX_FRAME}); "
                              f"lower it: {_mtu_fix(ifname, facts)}")
        return {"engine": engine, "xdp_mode": xdp_mode, "nq": nq, "slots": slots,
                "netns": _netns(), **facts}

    @classmethod
    def record_key(cls, spec: PortSpec, pre: dict) -> tuple[str, str]:
        return f"nic:{pre['netns']}:{pre.get('ifname', spec.port)}", "nic"

    @classmethod
    def get(cls, state: State, spec: PortSpec, conf: dict, pre: dict) -> Found:
        """The interface's record and region (one per interface and namespace)."""
        ifname, engine, nq = pre.get("ifname", spec.port), pre["engine"], pre["nq"]
        key, _ = cls.record_key(spec, pre)
        record = state["ports"].get(key)
        if record is None:
            region = _region_for(state, key, nq, pre["slots"],
                                 spec.mem_id or conf.get("mem_id", 0), conf["extra_bufs"])
            record = {"kind": "nic", "ifname": ifname, "ifindex": pre["ifindex"],
                      "netns": pre["netns"], "mem_id": region.mem_id, "engine": engine,
                      "queues": nq, "xdp_prog": 0, "host": None,
                      "rings": {"nic": {"tx": [0] * (nq + 1), "rx": [0] * (nq + 1)}},
                      "counts": {"nic": [nq, nq, 1, 1]},
                      "endpoints": {"nic": {"opens": []}}}
            state["ports"][key] = record
        else:
            region = R.attach(state, record["mem_id"])
            if record["engine"] != engine:
                raise NetmapError(errno.EBUSY, f"{ifname} is open with the {record['engine']} "
                                  f"engine by another port; open it with the same engine")
        return Found(key, record, "nic", region)

    @classmethod
    def krings_get(cls, state: State, found: Found, tx: list[int], rx: list[int],
                   pre: dict) -> dict:
        """Create the bound queues' rings, and AF_XDP's spare RX buffers (the backlog)."""
        region, record = found.region, found.record
        mine = record["rings"]["nic"]
        tx_s, rx_s = pre["slots"]
        bufs: list[np.ndarray] = []
        for d, ids, n, direction in (("tx", tx, tx_s, NR_TX), ("rx", rx, rx_s, NR_RX)):
            for i in ids:
                b = region.alloc_bufs(n)
                bufs.append(b)
                mine[d][i] = objects.create_ring(state, region, n, direction, i, b)
        spares = ({q: region.alloc_bufs(RX_BACKLOG * rx_s) for q in rx}
                  if pre["engine"] == "xdp" else {})
        bufs.extend(spares.values())
        found.extra["spares"] = spares
        nq = record["queues"]
        return {"host": nq in tx or nq in rx,
                "bufs": _ranges(np.concatenate(bufs)) if bufs else []}

    @classmethod
    def release(cls, state: State, record: dict, o: dict, region: R.Region) -> None:
        """Free an open's rings and buffers; a dead process's XDP program and host stack too."""
        mine = record["rings"]["nic"]
        for d in ("tx", "rx"):
            for i in o[d]:
                objects.free_ring(state, region, mine[d][i])
                mine[d][i] = 0
        for a, b in o["bufs"]:
            region.free_bufs(np.arange(a, b))
        _teardown(record, here=o["pid"] == os.getpid())

    def __init__(self, spec: PortSpec, found: Found, region: R.Region, pre: dict) -> None:
        super().__init__(spec, found, region, pre)
        record = found.record
        self.engine: str = pre["engine"]
        self.xdp_mode: str = pre["xdp_mode"]
        self.spares: dict[int, np.ndarray] = found.extra["spares"]
        self.ifname: str = record["ifname"]
        self.ifindex: int = record["ifindex"]
        self.nq: int = record["queues"]
        self.mac: str | None = pre["mac"]
        self.mtu: int | None = pre["mtu"]
        self.queues: dict[int, XdpQueue | PacketQueue | PcapQueue | NpcapQueue] = {}  # ringid
        #: Npcap: the loaded DLLs, the interface, and the queues with an RX ring
        self.npcap: Npcap | None = pre.get("npcap")
        self.itf: Interface | None = pre.get("itf")
        self._npcap_rx: list[NpcapQueue] = []
        self.program: XskProgram | None = None
        self.host: HostStack | None = None
        self.forward: dict[bool, PacketSocket] = {}  # NR_FORWARD senders, by direction
        self.mode = "copy"
        self.max_frame = region.buf_size - region.lead
        #: poll() object for our own waits (None on Npcap, which has no descriptors);
        #: an epoll fd only if someone asks for fileno()
        self._poll = None if self.engine == "npcap" else select.poll()
        self._epoll: select.epoll | None = None
        self._bound: list[int] = []

    def info(self) -> PortInfo:
        return PortInfo("nic", self.max_frame, self.engine, self.mode, self.mac, self.mtu,
                        multislot=False, one_port_per_ring=True)

    # -- set-up ------------------------------------------------------------------------
    def register(self, state: State, tx: list[Ring], rx: list[Ring]) -> None:
        """Start one engine queue per bound ring pair (and the host stack's side)."""
        super().register(state, tx, rx)
        record = state["ports"][self.key]
        try:
            self._start(record, tx, rx)
        except BaseException:
            self.unregister()
            _teardown(record, here=True)  # what this open set up for the interface
            raise

    def _start(self, record: dict, tx: list[Ring], rx: list[Ring]) -> None:
        host = any(r.ringid >= self.nq for r in tx + rx)
        pairs: dict[int, list[Ring | None]] = {}
        for t in tx:
            pairs.setdefault(t.ringid, [None, None])[0] = t
        for r in rx:
            pairs.setdefault(r.ringid, [None, None])[1] = r
        nic = {q: p for q, p in pairs.items() if q < self.nq}
        if nic and self.engine == "xdp":
            self.program = self._program(record)
        if host and self.engine != "npcap":  # Npcap's host TX ring is a queue of its own
            from .hoststack import HostStack

            self.host = HostStack.setup(self.ifname, record)
        for q, (t_ring, r_ring) in pairs.items():
            on_host = q >= self.nq
            ifname = self.host.app_if if on_host and self.host else self.ifname
            queue = self._queue(ifname, 0 if on_host else q, t_ring, r_ring,
                                self.spares.get(q), self.xdp_mode, on_host)
            self.queues[q] = queue
            if self._poll is not None:
                self._poll.register(queue.fileno(), select.POLLIN)
            if self.engine == "xdp" and r_ring is not None:
                prog = self.host.program if on_host and self.host else self.program
                assert prog is not None  # loaded above for NIC queues, by the host stack
                prog.set(0 if on_host else q, queue.fileno())
                if not on_host:
                    self._bound.append(q)
            if not on_host or not nic:  # the NIC's mode, where the port has NIC rings
                self.mode = queue.mode
            self.max_frame = min(self.max_frame, queue.max_frame)

    def _queue(self, ifname: str, q: int, tx: Ring | None, rx: Ring | None,
               spare: np.ndarray | None, xdp_mode: str,
               host: bool) -> XdpQueue | PacketQueue | PcapQueue | NpcapQueue:
        if self.engine == "npcap":
            from ..windows.npcap import NpcapQueue

            assert self.npcap is not None and self.itf is not None  # from _npcap_facts
            queue = NpcapQueue(self.npcap, self.itf, self.region, tx, rx, host)
            if rx is not None:
                self._npcap_rx.append(queue)
            return queue
        if self.engine == "xdp":
            from .xdp_queue import XdpQueue

            return XdpQueue(ifname, q, self.region, tx, rx, xdp_mode,
                            spare if spare is not None else np.empty(0, np.uint32))
        if self.engine == "pcap":
            from ..pcap_queue import PcapQueue

            return PcapQueue(ifname, self.region, tx, rx, RX_BACKLOG)
        from .packet_queue import PacketQueue

        return PacketQueue(ifname, self.region, tx, rx, RX_BACKLOG)

    def _program(self, record: dict) -> XskProgram:
        """The interface's redirect program: ours to share if a live port loaded it."""
        from . import bpf, xdp_attach

        if record["xdp_prog"]:
            try:
                prog = bpf.XskProgram.by_id(record["xdp_prog"])
            except NetmapError:
                prog = None  # unloaded behind our back: load a new one
            if prog is not None:
                try:
                    xdp_attach.attach(self.ifindex, prog.fd)
                except BaseException:
                    prog.close()
                    raise
                return prog
        prog = bpf.XskProgram(max_queues=max(self.nq, 1))
        try:
            xdp_attach.attach(self.ifindex, prog.fd)
        except BaseException:
            prog.close()
            raise
        record["xdp_prog"] = prog.id
        return prog

    # -- data path ---------------------------------------------------------------------
    def txsync(self, kring: KRing, head: int) -> None:
        self.queues[kring.ringid].txsync(kring, head)

    def rxsync(self, kring: KRing, head: int) -> None:
        if kring.ring.flags & NR_FORWARD and head != kring.hwcur:
            self._forward(kring, head)
        self.queues[kring.ringid].rxsync(kring, head)

    def _forward(self, kring: KRing, head: int) -> None:
        """Transparent mode: released RX slots marked NS_FORWARD go to the other side.

        NIC RX -> host stack, host RX -> the wire; copied through an AF_PACKET
        TX ring on the destination (netmap swaps into the NIC TX rings; a copy
        keeps the NIC TX rings the application's alone).
        """
        ring, n, hwcur = kring.ring, kring.num_slots, kring.hwcur
        fl = gather(ring.slot_flags, hwcur, head, n)
        sel = np.flatnonzero(fl & NS_FORWARD)
        if not len(sel):
            return
        idx = gather(ring.slot_buf_idx, hwcur, head, n)[sel]
        lens = gather(ring.slot_len, hwcur, head, n)[sel]
        ring.slot_flags[(hwcur + sel) % n] &= np.uint16(0xFFFF ^ NS_FORWARD)
        to_host = kring.ringid < self.nq
        dest = self._forwarder(to_host)
        tx = dest.tx
        assert tx is not None  # made with TX frames
        ok = (lens >= 14) & (lens <= tx.max_len)
        tx.produce(self.region.bufs, lens[ok], rows=idx[ok])
        dest.kick()

    def _forwarder(self, to_host: bool) -> PacketSocket:
        if self.engine == "npcap":
            from ..windows.npcap import FORWARD_REFUSED

            raise NetmapError(errno.EOPNOTSUPP, f"{self.ifname}: {FORWARD_REFUSED}")
        if self.host is None:
            raise NetmapError(errno.EINVAL, f"{self.ifname}: NR_FORWARD needs the host "
                              "rings (open netmap:IFNAME* or IFNAME^)")
        sock = self.forward.get(to_host)
        if sock is None:
            from .tpacket import PacketSocket

            sock = PacketSocket(self.host.app_if if to_host else self.ifname, rx_frames=0,
                                tx_frames=1024, frame_size=self.region.buf_size)
            self.forward[to_host] = sock
        return sock

    def fileno(self) -> int:
        """An epoll fd that is readable when any bound queue has received frames.

        Made on first use: a socket with a waiter registered pays a wake-up
        (a locked wait-queue walk) for every frame the kernel frees, about a
        tenth of an AF_XDP sender's time, so ``poll`` registers only while
        it sleeps.  The pcap engine's one queue gives its own fd (there is no
        epoll on macOS or FreeBSD); Npcap's queues have none and refuse
        (``EOPNOTSUPP``, naming ``poll()``, which works).
        """
        if self.engine in ("pcap", "npcap"):
            return next(iter(self.queues.values())).fileno()
        if self._epoll is None:
            self._epoll = select.epoll()
            for queue in self.queues.values():
                self._epoll.register(queue.fileno(), select.EPOLLIN)
        return self._epoll.fileno()

    def wait(self, timeout: float, want_tx: bool) -> None:
        """Sleep until a queue has frames (or, for TX, briefly: completions need no wake-up).

        Npcap: on the RX captures' events, unless a queue already holds
        packets read from the driver that did not fit the ring (no event
        would announce those).  A port without RX rings just sleeps.
        """
        t = min(timeout, self.tx_resync_s) if want_tx else timeout
        if self._poll is not None:
            self._poll.poll(1000 * t)
            return
        rx = self._npcap_rx
        if any(q.pending() for q in rx):
            return
        if rx:
            from ..windows import npcap

            npcap.wait_events([q.event for q in rx], t)
        else:
            time.sleep(t)

    def statistics(self) -> dict[int, dict[str, int]]:
        """Kernel drop counters of every queue (XDP_STATISTICS / PACKET_STATISTICS)."""
        return {q: queue.statistics() for q, queue in self.queues.items()}

    # -- teardown ----------------------------------------------------------------------
    def _stop(self) -> None:
        prog = self.program
        if prog is not None:
            for q in self._bound:
                try:
                    prog.clear(q)
                except NetmapError:
                    pass  # the kernel removed the socket already
        for queue in self.queues.values():
            queue.close()
        for sock in self.forward.values():
            sock.close()
        self.queues.clear()
        self._npcap_rx.clear()
        self.forward.clear()
        self._bound.clear()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def unregister(self) -> None:
        """Stop the queues and close our handles; the release undoes shared set-up.

        Idempotent: a failed register has already called it.
        """
        self._stop()
        for handle in (self.host, self.program):
            if handle is not None:
                handle.close()
        self.host = self.program = None


def _teardown(record: dict, here: bool) -> None:
    """After an open went: undo the host stack and the XDP program if nobody needs them.

    ``here`` is False when a sweep in another process releases a dead
    process's open: the namespace may not be ours, so only clean what we can
    reach (same namespace), else leave it to the next open to recognise.
    """
    opens = record["endpoints"]["nic"]["opens"]
    local = here or record["netns"] == _netns()
    if record["host"] is not None and not any(o["host"] for o in opens) and local:
        from .hoststack import HostStack

        HostStack.undo(record)
    if record["xdp_prog"] and not any(o["rx"] or o["tx"] for o in opens) and local:
        from . import xdp_attach  # Linux only: imported where an XDP program exists

        try:
            xdp_attach.detach(record["ifindex"], record["xdp_prog"])
        except NetmapError:
            pass  # someone replaced it; not ours to remove
        record["xdp_prog"] = 0
