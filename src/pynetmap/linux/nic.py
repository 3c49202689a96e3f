"""NIC ports on Linux: ``netmap:IFNAME`` for any interface (spec §4.5, DESIGN §5).

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
* ``auto`` (default, or ``$PYNETMAP_ENGINE``) -- ``xdp`` if it works, else
  ``packet``, saying so once on stderr.

Host rings (``eth0^``, ``eth0*``) are the OS stack's side: see
:mod:`pynetmap.linux.hoststack`.
"""

from __future__ import annotations

import errno
import os
import select
import sys

import numpy as np

from .. import layout as L
from .. import liveness, objects
from .. import region as R
from ..constants import (
    NR_FORWARD,
    NR_REG_ALL_NIC,
    NR_REG_NIC_SW,
    NR_REG_ONE_NIC,
    NR_REG_ONE_SW,
    NR_REG_SW,
    NR_RX,
    NR_RX_RINGS_ONLY,
    NR_TX,
    NR_TX_RINGS_ONLY,
    NS_FORWARD,
)
from ..errors import NetmapError
from ..kring import K_HWCUR, gather
from ..names import PortSpec
from ..port import Port
from ..registry import State, new_mem_id, on_release, release_open, transaction
from ..ring import Ring

DEFAULT_SLOTS = 1024
#: a 2048-byte buffer less the 256 bytes AF_XDP keeps in front of a received frame
MAX_FRAME = 2048 - 256
MAX_SLOTS = 4096
ENGINES = ("auto", "xdp", "packet")
#: AF_XDP: received frames the kernel may queue beyond a full netmap RX ring, in rings
RX_BACKLOG = 8
#: TX waits are short: AF_XDP completions arrive without a wake-up
TX_RESYNC_S = 0.0005


def _netns() -> int:
    """Identity of the calling thread's network namespace (interface names are per netns)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def _engine(requested: str | None) -> str:
    engine = requested or os.environ.get("PYNETMAP_ENGINE") or "auto"
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return engine


def _xdp_refused() -> str | None:
    """Why this process cannot use AF_XDP, or None."""
    from ..linux import ifinfo as I

    for cap in (I.CAP_NET_ADMIN, I.CAP_NET_RAW, I.CAP_BPF):
        if not I.has_capability(cap) and not (
                cap == I.CAP_BPF and I.has_capability(I.CAP_SYS_ADMIN)):
            return f"{I._CAP_NAMES[cap]} is missing"
    import socket

    try:
        socket.socket(44, socket.SOCK_RAW, 0).close()
    except OSError as e:
        return f"AF_XDP sockets are not available ({e.strerror})"
    return None


def _slots(v: int, what: str) -> int:
    if v == 0:
        return DEFAULT_SLOTS
    if not 2 <= v <= MAX_SLOTS or v & (v - 1):
        raise ValueError(f"NIC {what} must be a power of two in 2..{MAX_SLOTS}, got {v}")
    return v


def _bound(spec: PortSpec, nq: int) -> tuple[list[int], list[int], bool]:
    """(NIC TX queues, NIC RX queues, host rings?) that the name binds (spec §1.6)."""
    host = False
    if spec.mode == NR_REG_ALL_NIC:
        q = list(range(nq))
    elif spec.mode == NR_REG_ONE_NIC:
        if spec.ringid >= nq:
            raise NetmapError(errno.EINVAL, f"{spec.spec}: ring {spec.ringid} does not exist "
                              f"({spec.port} has {nq} queue{'s' if nq > 1 else ''} here)")
        q = [spec.ringid]
    elif spec.mode in (NR_REG_SW, NR_REG_ONE_SW):
        if spec.mode == NR_REG_ONE_SW and spec.ringid != 0:
            raise NetmapError(errno.EINVAL, f"{spec.spec}: host ring {spec.ringid} does not "
                              "exist (one host ring pair)")
        q, host = [], True
    elif spec.mode == NR_REG_NIC_SW:
        q, host = list(range(nq)), True
    else:
        raise NetmapError(errno.EINVAL, f"{spec.spec}: not a NIC port name")
    tx, rx = list(q), list(q)
    if spec.flags & NR_RX_RINGS_ONLY:
        tx = []
    if spec.flags & NR_TX_RINGS_ONLY:
        rx = []
    return tx, rx, host


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


def open_nic(spec: PortSpec, conf: dict, extra_bufs: int, flags: int,
             engine: str | None = None, xdp_mode: str = "auto") -> Port:
    """Register ``netmap:IFNAME[...]``: bind its queues (and host rings) to an engine."""
    if not sys.platform.startswith("linux"):
        raise NetmapError(errno.EOPNOTSUPP, f"{spec.spec}: network interfaces are supported "
                          "on Linux only so far")
    from ..linux import ifinfo

    ifname = spec.port
    ifinfo.require_up(ifname)
    engine = _engine(engine)
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
    slots = (_slots(conf.get("tx_slots", 0), "slots"), _slots(conf.get("rx_slots", 0), "slots"))
    if conf.get("host_tx_rings", 0) > 1 or conf.get("host_rx_rings", 0) > 1:
        raise ValueError("NIC ports have one host ring pair")
    tx_q, rx_q, host = _bound(spec, nq)
    max_frame = MAX_FRAME
    mtu = ifinfo.mtu(ifname)
    if mtu + 14 > max_frame:
        raise NetmapError(errno.EINVAL, f"{ifname}: MTU {mtu} needs {mtu + 14}-byte frames, "
                          f"more than a netmap buffer holds here ({max_frame}); lower it: "
                          f"ip link set {ifname} mtu {max_frame - 14}")
    ns = _netns()
    key = f"nic:{ns}:{ifname}"
    with transaction() as state:
        record = state["ports"].get(key)
        if record is None:
            region = _region_for(state, key, nq, slots,
                                 spec.mem_id or conf.get("mem_id", 0), extra_bufs)
            record = {"kind": "nic", "ifname": ifname, "ifindex": ifinfo.if_index(ifname),
                      "netns": ns, "mem_id": region.mem_id, "engine": engine, "queues": nq,
                      "xdp_prog": 0, "host": None,
                      "endpoints": {"nic": {"opens": [], "ever": True}}}
            state["ports"][key] = record
        else:
            region = R.attach(state, record["mem_id"])
            if record["engine"] != engine:
                raise NetmapError(errno.EBUSY, f"{ifname} is open with the {record['engine']} "
                                  f"engine by another port; open it with the same engine")
        _check_free(record, tx_q, rx_q, host)
        rings: list[int] = []
        bufs: list[np.ndarray] = []

        def ring(direction: int, ringid: int, n: int) -> int:
            b = region.alloc_bufs(n)
            bufs.append(b)
            ofs = objects.create_ring(state, region, n, direction, ringid, b)
            rings.append(ofs)
            return ofs

        ntx = nrx = nq
        tx_ofs = {q: ring(NR_TX, q, slots[0]) for q in tx_q}
        rx_ofs = {q: ring(NR_RX, q, slots[1]) for q in rx_q}
        if host:
            tx_ofs[ntx] = ring(NR_TX, ntx, slots[0])
            rx_ofs[nrx] = ring(NR_RX, nrx, slots[1])
        spares = ({q: region.alloc_bufs(RX_BACKLOG * slots[1]) for q in rx_ofs}
                  if engine == "xdp" else {})
        bufs.extend(spares.values())
        nifp = objects.create_if(state, region, ifname, ntx, nrx, 1, 1,
                                 {(q if q < ntx else ntx): o for q, o in tx_ofs.items()},
                                 {(q if q < nrx else nrx): o for q, o in rx_ofs.items()})
        head, got = objects.make_extra_list(region, extra_bufs)
        region.buf[nifp + 32 : nifp + 36] = head.to_bytes(4, "little")
        record["endpoints"]["nic"]["opens"].append({
            "pid": os.getpid(), "token": liveness.token(), "if": nifp, "flags": flags,
            "tx": tx_q, "rx": rx_q, "host": host, "rings": rings, "extra": got,
            "bufs": _ranges(np.concatenate(bufs)) if bufs else [],
        })
        R.hold(region)
        tx_rings = [Ring(region, o, NR_TX, q) for q, o in sorted(tx_ofs.items())]
        rx_rings = [Ring(region, o, NR_RX, q) for q, o in sorted(rx_ofs.items())]
        adapter = NicAdapter(key, record, nifp, region, engine)
        try:
            adapter.start(tx_rings, rx_rings, spares, xdp_mode, host, state)
        except BaseException:
            adapter.abort(state)
            R.drop(region)
            raise
    port = Port(spec, region, nifp, flags, tx_rings, rx_rings, adapter)
    port.extra_bufs = got
    port.engine, port.mode, port.max_frame = engine, adapter.mode, adapter.max_frame
    return port


def _check_free(record: dict, tx: list[int], rx: list[int], host: bool) -> None:
    """netmap lets two fds share a ring; an AF_XDP queue takes one socket, so we cannot."""
    for o in record["endpoints"]["nic"]["opens"]:
        busy = sorted(set(o["tx"]) & set(tx) | set(o["rx"]) & set(rx))
        if busy or (host and o["host"]):
            what = f"queue {busy[0]}" if busy else "the host rings"
            raise NetmapError(errno.EBUSY, f"{record['ifname']}: {what} already bound by "
                              f"pid {o['pid']} (one port per queue)")


class NicAdapter:
    """The kernel side of a NIC port: one engine queue per bound ring pair."""

    def __init__(self, key: str, record: dict, nifp: int, region: R.Region,
                 engine: str) -> None:
        self.key = key
        self.nifp = nifp
        self.region = region
        self.engine = engine
        self.ifname: str = record["ifname"]
        self.ifindex: int = record["ifindex"]
        self.nq: int = record["queues"]
        self.queues: dict[int, object] = {}  # ringid -> XdpQueue | PacketQueue
        self.program = None
        self.host = None
        self.forward: dict[int, object] = {}  # NR_FORWARD senders, by direction
        self.mode = "copy"
        self.max_frame = region.buf_size - region.lead
        #: poll() object for our own waits; an epoll fd only if someone asks for fileno()
        self._poll = select.poll()
        self._epoll: select.epoll | None = None
        self._bound: list[int] = []
        #: see ``Port.tx_resync_s``
        self.tx_resync_s = TX_RESYNC_S

    # -- set-up ------------------------------------------------------------------------
    def start(self, tx: list[Ring], rx: list[Ring], spares: dict[int, np.ndarray],
              xdp_mode: str, host: bool, state: State) -> None:
        record = state["ports"][self.key]
        pairs: dict[int, list[Ring | None]] = {}
        for r in tx:
            pairs.setdefault(r.ringid, [None, None])[0] = r
        for r in rx:
            pairs.setdefault(r.ringid, [None, None])[1] = r
        nic = {q: p for q, p in pairs.items() if q < self.nq}
        if nic and self.engine == "xdp":
            self.program = self._program(record)
        if host:
            from ..linux.hoststack import HostStack

            self.host = HostStack.setup(self.ifname, record)
        for q, (t, r) in pairs.items():
            on_host = q >= self.nq
            ifname = self.host.app_if if on_host else self.ifname
            queue = self._queue(ifname, 0 if on_host else q, t, r, spares.get(q), xdp_mode)
            self.queues[q] = queue
            self._poll.register(queue.fileno(), select.POLLIN)
            if self.engine == "xdp" and r is not None:
                prog = self.host.program if on_host else self.program
                prog.set(0 if on_host else q, queue.fileno())
                if not on_host:
                    self._bound.append(q)
            if not on_host or not nic:  # the NIC's mode, where the port has NIC rings
                self.mode = queue.mode
            self.max_frame = min(self.max_frame, queue.max_frame)

    def _queue(self, ifname: str, q: int, tx: Ring | None, rx: Ring | None,
               spare: np.ndarray | None, xdp_mode: str) -> object:
        if self.engine == "xdp":
            from ..linux.xdp_queue import XdpQueue

            return XdpQueue(ifname, q, self.region, tx, rx, xdp_mode,
                            spare if spare is not None else np.empty(0, np.uint32))
        from ..linux.packet_queue import PacketQueue

        return PacketQueue(ifname, self.region, tx, rx, RX_BACKLOG)

    def _program(self, record: dict) -> object:
        """The interface's redirect program: ours to share if a live port loaded it."""
        from ..linux import bpf, xdp_attach

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
    def txsync(self, ring: Ring, head: int) -> None:
        self.queues[ring.ringid].txsync(ring, head)  # type: ignore[attr-defined]

    def rxsync(self, ring: Ring, head: int) -> None:
        if ring._hdr[L.RW_FLAGS] & NR_FORWARD and head != ring._k[K_HWCUR]:
            self._forward(ring, head)
        self.queues[ring.ringid].rxsync(ring, head)  # type: ignore[attr-defined]

    def _forward(self, ring: Ring, head: int) -> None:
        """Transparent mode: released RX slots marked NS_FORWARD go to the other side.

        NIC RX -> host stack, host RX -> the wire; copied through an AF_PACKET
        TX ring on the destination (netmap swaps into the NIC TX rings; a copy
        keeps the NIC TX rings the application's alone).
        """
        n, hwcur = ring.num_slots, ring._k[K_HWCUR]
        fl = gather(ring.slot_flags, hwcur, head, n)
        sel = np.flatnonzero(fl & NS_FORWARD)
        if not len(sel):
            return
        idx = gather(ring.slot_buf_idx, hwcur, head, n)[sel]
        lens = gather(ring.slot_len, hwcur, head, n)[sel]
        ring.slot_flags[(hwcur + sel) % n] &= np.uint16(0xFFFF ^ NS_FORWARD)
        to_host = ring.ringid < self.nq
        dest = self._forwarder(to_host)
        ok = (lens >= 14) & (lens <= dest.tx.max_len)
        dest.tx.produce(self.region.bufs, lens[ok], rows=idx[ok])
        dest.kick()

    def _forwarder(self, to_host: bool) -> object:
        if self.host is None:
            raise NetmapError(errno.EINVAL, f"{self.ifname}: NR_FORWARD needs the host "
                              "rings (open netmap:IFNAME* or IFNAME^)")
        sock = self.forward.get(to_host)
        if sock is None:
            from ..linux.tpacket import PacketSocket

            sock = PacketSocket(self.host.app_if if to_host else self.ifname, rx_frames=0,
                                tx_frames=1024, frame_size=self.region.buf_size)
            self.forward[to_host] = sock
        return sock

    def peer_gone(self) -> bool:
        return False

    def fileno(self) -> int:
        """An epoll fd that is readable when any bound queue has received frames.

        Made on first use: a socket with a waiter registered pays a wake-up
        (a locked wait-queue walk) for every frame the kernel frees, about a
        tenth of an AF_XDP sender's time, so ``poll`` registers only while
        it sleeps.
        """
        if self._epoll is None:
            self._epoll = select.epoll()
            for queue in self.queues.values():
                self._epoll.register(queue.fileno(), select.EPOLLIN)  # type: ignore[attr-defined]
        return self._epoll.fileno()

    def wait(self, timeout: float, want_tx: bool) -> None:
        """Sleep until a queue has frames (or, for TX, briefly: completions need no wake-up)."""
        self._poll.poll(1000 * (min(timeout, self.tx_resync_s) if want_tx else timeout))

    def statistics(self) -> dict[int, dict[str, int]]:
        """Kernel drop counters of every queue (XDP_STATISTICS / PACKET_STATISTICS)."""
        return {q: queue.statistics() for q, queue in self.queues.items()}  # type: ignore

    # -- teardown ----------------------------------------------------------------------
    def _stop(self) -> None:
        for q in self._bound:
            try:
                self.program.clear(q)  # type: ignore[union-attr]
            except NetmapError:
                pass  # the kernel removed the socket already
        for queue in self.queues.values():
            queue.close()  # type: ignore[attr-defined]
        for sock in self.forward.values():
            sock.close()  # type: ignore[attr-defined]
        self.queues.clear()
        self.forward.clear()
        if self._epoll is not None:
            self._epoll.close()

    def _release(self, state: State) -> None:
        record = state["ports"].get(self.key)
        if record is None:
            return
        for o in record["endpoints"]["nic"]["opens"]:
            if o["pid"] == os.getpid() and o["if"] == self.nifp:
                release_open(state, record, o)
                break
        _teardown(record, here=True, host_handle=self.host, prog=self.program)
        self.host = None
        self.program = None

    def abort(self, state: State) -> None:
        """Undo a failed open (inside the open's transaction)."""
        self._stop()
        self._release(state)

    def close(self) -> None:
        self._stop()
        with transaction() as state:
            self._release(state)


def _teardown(record: dict, here: bool, host_handle: object = None, prog: object = None) -> None:
    """After an open went: undo the host stack and the XDP program if nobody needs them.

    ``here`` is False when a sweep in another process releases a dead
    process's open: the namespace may not be ours, so only clean what we can
    reach (same namespace), else leave it to the next open to recognise.
    """
    from ..linux import xdp_attach

    opens = record["endpoints"]["nic"]["opens"]
    local = here or record["netns"] == _netns()
    if record["host"] is not None and not any(o["host"] for o in opens) and local:
        from ..linux.hoststack import HostStack

        HostStack.undo(record)
    if host_handle is not None:
        host_handle.close()  # type: ignore[attr-defined]
    if record["xdp_prog"] and not any(o["rx"] or o["tx"] for o in opens) and local:
        try:
            xdp_attach.detach(record["ifindex"], record["xdp_prog"])
        except NetmapError:
            pass  # someone replaced it; not ours to remove
        record["xdp_prog"] = 0
    if prog is not None:
        prog.close()  # type: ignore[attr-defined]


@on_release("nic")
def _release(state: State, record: dict, o: dict) -> None:
    """Free an open's rings and buffers; a dead process's XDP program and host stack too."""
    region = R.attach(state, record["mem_id"])
    try:
        objects.free_if(state, region, o["if"], o["extra"])
        for ofs in o["rings"]:
            objects.free_ring(state, region, ofs)
        for a, b in o["bufs"]:
            region.free_bufs(np.arange(a, b))
        if o["pid"] != os.getpid():
            _teardown(record, here=False)
    finally:
        if region.users == 0:
            R.drop_unused(region)
