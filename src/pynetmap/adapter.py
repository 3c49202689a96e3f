"""The adapter interface: what a port type implements (netmap's ``struct netmap_adapter``).

A port type plays netmap's kernel for one kind of port.  Everything common
to all of them -- ring selection, exclusivity, the ``netmap_if`` and its
extra buffers, the open record, holding the region, building the rings and
the :class:`~pynetmap.port.Port`, one rollback for a refused open -- is done
once by :mod:`pynetmap.register` (netmap's ``netmap_do_regif``).  A port
type supplies only what differs:

=====================  ==========================================================
class-level (control)  run under the registry lock, on the shared port *record*
---------------------  ----------------------------------------------------------
``kind``               the record's kind; :data:`pynetmap.adapters.ADAPTERS` maps
                       it back to the class (releases, sweeps)
``takes(spec)``        which names it opens (``open()`` asks each in order)
``options``            the ``@option``\\ s it implements; others are refused
``prepare(spec, kw)``  checks and choices that need no lock (before it); a
                       ``"spec"`` in its answer renames the port being opened
``record_key(spec)``   the registry key and endpoint a name maps to
``get(state, ...)``    netmap's ``netmap_get_na``: find or create the port record
                       (and its region); returns a :class:`Found`
``krings_get(...)``    make the bound rings exist (pipes made them all already);
                       returns fields to keep in the open record
``release(...)``       an open went (closed, or its process died): free what
                       ``krings_get`` made for it, and the port after its last open
---------------------  ----------------------------------------------------------
instance (data)        one per open port, in the process that opened it
---------------------  ----------------------------------------------------------
``register(...)``      ``nm_register(on)``: start I/O, set each kring's ``sync``
``unregister()``       ``nm_register(off)``: stop it (before the release)
``txsync/rxsync``      ``nm_txsync``/``nm_rxsync``: ``(kring, head)``, between the
                       core's prologue and finalize (:mod:`pynetmap.kring`)
``peer_gone()``        POLLHUP: the other side went away
``info()``             engine, mode, frame limit, MAC, MTU (:class:`PortInfo`)
``fileno/wait``        for kernel-backed ports: what ``poll`` sleeps on instead of
                       the doorbell (``doorbell = False``)
``idle_txsync``        ``poll`` syncs TX rings with nothing submitted too (a NIC's
                       engines send leftovers only when a sync kicks them)
=====================  ==========================================================

A kernel that runs the ring protocol itself (native ``/dev/netmap``) sets
``kernel_sync``: the port then calls ``kernel_txsync``/``kernel_rxsync``
once per sync and skips the prologue and finalize, which the kernel does.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from .errors import NetmapError

if TYPE_CHECKING:
    from .kring import KRing
    from .names import PortSpec
    from .region import Region
    from .registry import State
    from .ring import Ring


@dataclass(frozen=True)
class PortInfo:
    """What a port is backed by; ``Port.info()``."""

    kind: str  #: the port type: ``"pipe"``, ``"null"``, ``"nic"``
    max_frame: int  #: the longest frame one slot may carry out of this port
    engine: str | None = None  #: NIC ports: ``"xdp"``, ``"packet"`` or ``"pcap"``
    mode: str | None = None  #: NIC ports: ``"zerocopy"`` or ``"copy"``
    mac: str | None = None  #: the OS interface's MAC (``aa:bb:...``), if there is one
    mtu: int | None = None  #: and its MTU
    multislot: bool = True  #: takes packets spread over several slots (``NS_MOREFRAG``)
    one_port_per_ring: bool = False  #: a ring can be bound by one port at a time


@dataclass
class Found:
    """The port record an open binds to (``get``'s answer)."""

    key: str  #: the record's key in the registry
    record: dict  #: the record (changed in place inside the transaction)
    ep: str  #: the endpoint of the record this name opens (``master``/``slave``/...)
    region: Region
    extra: dict = field(default_factory=dict)  #: adapter-private, for this open only


class Adapter:
    """Base class of port types; see the module docstring for the protocol."""

    kind: ClassVar[str] = ""
    options: ClassVar[frozenset[str]] = frozenset({"conf", "share"})
    #: one open per ring (an AF_XDP queue takes one socket); else NR_EXCLUSIVE decides
    exclusive_rings: ClassVar[bool] = False
    #: what a ring is called in messages (``"queue"`` for NICs)
    ring_word: ClassVar[str] = "ring"
    #: False: ``poll`` sleeps in ``wait()`` on the adapter's own ``fileno()``
    doorbell: ClassVar[bool] = True
    #: True: a kernel runs the ring protocol (``kernel_txsync``/``kernel_rxsync``)
    kernel_sync: ClassVar[bool] = False
    #: True: the kernel also registers the port (native netmap): ``open_kernel`` does
    #: the whole open instead of :func:`pynetmap.register.open_port`
    kernel_register: ClassVar[bool] = False
    #: seconds a wait for TX room may last before syncing again (ports whose
    #: completions wake nobody); None: the peer's doorbell wakes us
    tx_resync_s: ClassVar[float | None] = None
    #: True: ``poll`` syncs a TX ring even with nothing submitted (a kernel engine
    #: sends what the device could not take yet only when a sync kicks it again);
    #: False: as netmap's poll, only rings with slots submitted, unless for POLLOUT
    idle_txsync: ClassVar[bool] = False

    # -- control path (class-level, under the registry lock) ------------------------------
    @classmethod
    def takes(cls, spec: PortSpec) -> bool:
        return False

    @classmethod
    def prepare(cls, spec: PortSpec, conf: dict, kw: dict) -> dict:
        """Checks and choices made before the lock; ``kw`` holds the type's own keywords."""
        if kw:
            raise TypeError(f"open() got unexpected keyword arguments for a {cls.kind} port: "
                            f"{', '.join(sorted(kw))}")
        return {}

    @classmethod
    def record_key(cls, spec: PortSpec, pre: dict) -> tuple[str, str]:
        """(registry key, endpoint) of the port ``spec`` names (a monitor finds its parent so)."""
        raise NetmapError(errno.EOPNOTSUPP, f"{spec.spec}: {cls.kind} ports cannot be found "
                          "by name")

    @classmethod
    def get(cls, state: State, spec: PortSpec, conf: dict, pre: dict) -> Found:
        raise NotImplementedError

    @classmethod
    def krings_get(cls, state: State, found: Found, tx: list[int], rx: list[int],
                   pre: dict) -> dict:
        """Make sure the rings ``tx``/``rx`` exist; returns fields for the open record."""
        return {}

    @classmethod
    def release(cls, state: State, record: dict, o: dict, region: Region) -> None:
        """Free what ``krings_get`` made for open ``o``, and the port after its last open."""

    # -- data path (per open port) --------------------------------------------------------
    def __init__(self, spec: PortSpec, found: Found, region: Region, pre: dict) -> None:
        self.spec = spec
        self.key = found.key
        self.ep = found.ep
        self.region = region

    def register(self, state: State, tx: list[Ring], rx: list[Ring]) -> None:
        """Start I/O on the bound rings; the default syncs are this object's."""
        for r in tx:
            r.kring.sync = self.txsync
        for r in rx:
            r.kring.sync = self.rxsync

    def unregister(self) -> None:
        """Stop I/O (outside the lock; the core then releases the open)."""

    def txsync(self, kring: KRing, head: int) -> None:
        raise NotImplementedError

    def rxsync(self, kring: KRing, head: int) -> None:
        raise NotImplementedError

    def peer_gone(self) -> bool:
        return False

    def info(self) -> PortInfo:
        return PortInfo(self.kind, self.region.buf_size,
                        one_port_per_ring=self.exclusive_rings)

    def fileno(self) -> int:
        raise NetmapError(errno.EOPNOTSUPP, f"{self.kind} ports wake through the doorbell")

    def wait(self, timeout_s: float, want_tx: bool) -> None:
        raise NetmapError(errno.EOPNOTSUPP, f"{self.kind} ports wake through the doorbell")

    def kernel_txsync(self) -> list[str]:
        raise NotImplementedError

    def kernel_rxsync(self) -> list[str]:
        raise NotImplementedError
