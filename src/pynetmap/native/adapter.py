"""Native netmap: ports of the netmap kernel module through ``/dev/netmap``.

Where ``/dev/netmap`` exists (FreeBSD's base system; Linux with netmap.ko)
a network interface opened by its netmap name is registered with the
kernel itself: ``NIOCCTRL`` with a REGISTER request, ``mmap`` of
``nr_memsize`` bytes, and that mapping wrapped as the port's region
(:meth:`pynetmap.region.Region.wrap`).  The kernel does everything
:mod:`pynetmap.register` does for pynetmap's own port types (ring
selection, exclusivity, the ``netmap_if``, extra buffers) and runs the ring
protocol: a sync is one ``NIOCTXSYNC``/``NIOCRXSYNC`` (``kernel_sync``),
``poll`` sleeps on the file descriptor.  Rings, batches and every tool
then work on the kernel's rings at the kernel's speed.

The kernel's memory has no room for pynetmap's kring block before each
ring (the bytes there belong to the kernel), so each ring gets a private
one: the core keeps its bookkeeping there and never writes into the
kernel's objects beyond what netmap lets an application write.

System calls go through a :class:`Device` so the whole path is tested
against a fake kernel; it has never run on a real netmap kernel.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
from typing import Any

import numpy as np

from .. import layout as L
from .. import region as R
from ..adapter import Adapter, Found, PortInfo
from ..constants import NR_RX, NR_TX
from ..errors import NetmapError
from ..kring import KRING_SIZE, KRing
from ..linux.nic import ENGINES as NIC_ENGINES
from ..names import PortSpec
from ..port import POLLIN, POLLOUT, Port
from ..ring import Ring
from . import abi

DEVICE = "/dev/netmap"
#: the engine names that choose another NIC engine even where /dev/netmap exists:
#: the NIC adapter's, so that a new engine there is one here too
OTHER_ENGINES = tuple(e for e in NIC_ENGINES if e != "auto")


class Device:
    """The system calls native netmap needs (a test substitutes a fake kernel)."""

    def __init__(self, family: str | None = None) -> None:
        self.ctrl, self.txsync, self.rxsync = abi.ioctls(family or abi.os_family())

    def open(self, path: str) -> int:
        return os.open(path, os.O_RDWR)

    def ioctl(self, fd: int, request: int, arg: Any = 0) -> None:
        import fcntl

        fcntl.ioctl(fd, request, arg, True) if arg else fcntl.ioctl(fd, request)

    def mmap(self, fd: int, size: int) -> Any:
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def poll(self, fd: int, events: int, timeout_ms: float) -> None:
        p = select.poll()
        p.register(fd, events)
        p.poll(timeout_ms)

    def close(self, fd: int) -> None:
        os.close(fd)


def available() -> bool:
    return os.path.exists(DEVICE)


class NativeAdapter(Adapter):
    """A port of the netmap kernel: the kernel registers it and runs its rings."""

    kind = "netmap"
    options = frozenset({"conf"})
    doorbell = False
    kernel_sync = True
    #: the kernel does netmap_do_regif: open() calls :meth:`open_kernel` instead of
    #: pynetmap.register.open_port
    kernel_register = True

    @classmethod
    def takes(cls, spec: PortSpec) -> bool:
        """Network interfaces, where the kernel has netmap (pipes and VALE stay pynetmap's)."""
        return not spec.is_pipe() and not spec.is_vale() and available()

    @classmethod
    def open_kernel(cls, spec: PortSpec, conf: dict, extra_bufs: int, flags: int,
                    kw: dict, device: Device | None = None) -> Port:
        """Register ``spec`` with the kernel and build the port over its memory.

        ``engine=`` (or ``$PYNETMAP_ENGINE``) naming another NIC engine hands the
        open to that engine's port type: native netmap is only the default.
        """
        engine = kw.get("engine") or os.environ.get("PYNETMAP_ENGINE") or "auto"
        if engine in OTHER_ENGINES:
            from ..adapters import adapter_of_kind
            from ..register import open_port

            return open_port(adapter_of_kind("nic"), spec, conf, extra_bufs, flags, kw)
        kw.pop("engine", None)
        cls.prepare(spec, conf, kw)  # no other keyword applies (xdp_mode is AF_XDP's)
        if engine not in ("auto", "netmap"):
            raise ValueError(f"engine must be auto, netmap or one of {', '.join(OTHER_ENGINES)}"
                             f", not {engine!r}")
        for opt in spec.options:
            if opt not in cls.options:
                raise NetmapError(errno.EOPNOTSUPP, f"{spec.spec}: option @{opt} is not "
                                  "implemented for native netmap ports")
        dev = device or Device()
        hdr, body = abi.register_request(spec.name, spec.mode, spec.ringid, flags, conf,
                                         extra_bufs)
        try:
            fd = dev.open(DEVICE)
        except OSError as e:
            raise NetmapError(e.errno or errno.ENXIO, f"{spec.spec}: cannot open {DEVICE}: "
                              f"{e.strerror}") from e
        try:
            try:
                dev.ioctl(fd, dev.ctrl, hdr)
            except OSError as e:
                raise NetmapError(e.errno or errno.EINVAL, f"{spec.spec}: the netmap kernel "
                                  f"refused the registration: {e.strerror}") from e
            mem = dev.mmap(fd, body.nr_memsize)
            return _build_port(spec, flags, dev, fd, mem, body)
        except BaseException:
            dev.close(fd)
            raise

    def __init__(self, spec: PortSpec, found: Found, region: R.Region, pre: dict) -> None:
        super().__init__(spec, found, region, pre)
        self.dev: Device = pre["dev"]
        self.fd: int = pre["fd"]
        self.body: abi.NmreqRegister = pre["body"]

    def register(self, state: Any, tx: list[Ring], rx: list[Ring]) -> None:
        """Nothing to start: the kernel registered the rings in ``open_kernel``."""

    def kernel_txsync(self) -> list[str]:
        self._sync(self.dev.txsync, "NIOCTXSYNC")
        return []  # the kernel resets a ring it finds corrupt and says so in its log only

    def kernel_rxsync(self) -> list[str]:
        self._sync(self.dev.rxsync, "NIOCRXSYNC")
        return []

    def _sync(self, request: int, what: str) -> None:
        if self.fd < 0:
            raise NetmapError(errno.ENXIO, f"port {self.spec.spec} is closed")
        try:
            self.dev.ioctl(self.fd, request)
        except OSError as e:
            raise NetmapError(e.errno or errno.EIO, f"{self.spec.spec}: {what}: "
                              f"{e.strerror}") from e

    def fileno(self) -> int:
        """The ``/dev/netmap`` descriptor: netmap's poll on it syncs and sleeps."""
        return self.fd

    def wait(self, timeout_s: float, want_tx: bool) -> None:
        events = POLLIN | (POLLOUT if want_tx else 0)
        self.dev.poll(self.fd, events, max(0.0, timeout_s) * 1000)

    def info(self) -> PortInfo:
        return PortInfo(self.kind, self.region.buf_size, engine="netmap")

    def unregister(self) -> None:
        """Close the descriptor; the kernel unbinds once the mapping goes too.

        The mapping goes when the last NumPy view of it does (views taken
        from the port stay valid after ``close()``, as for every port).
        """
        if self.fd >= 0:
            self.region.close()
            self.dev.close(self.fd)
            self.fd = -1


def _build_port(spec: PortSpec, flags: int, dev: Device, fd: int, mem: Any,
                body: abi.NmreqRegister) -> Port:
    """The port over the kernel's mapping: its ``netmap_if`` says where the rings are."""
    from ..register import select_rings

    nifp_ofs = body.nr_offset
    raw = np.frombuffer(mem, np.uint8)
    nifp = np.ndarray((), L.IF_DTYPE, buffer=raw, offset=nifp_ofs)
    ntx, nrx = int(nifp["ni_tx_rings"]), int(nifp["ni_rx_rings"])
    nhtx, nhrx = int(nifp["ni_host_tx_rings"]), int(nifp["ni_host_rx_rings"])
    ring_ofs = np.ndarray(ntx + nhtx + nrx + nhrx, "<i8", buffer=raw,
                          offset=nifp_ofs + L.IF_HDR_SIZE)
    tx, rx = select_rings(spec, "netmap", ntx, nrx, body.nr_host_tx_rings,
                          body.nr_host_rx_rings)
    where = {NR_TX: [int(ring_ofs[i]) for i in tx],
             NR_RX: [int(ring_ofs[ntx + nhtx + i]) for i in rx]}
    if not all(where[NR_TX] + where[NR_RX]):
        raise NetmapError(errno.EIO, f"{spec.spec}: the kernel's netmap_if maps none of "
                          "the rings the name selects")
    first = nifp_ofs + (where[NR_TX] or where[NR_RX])[0]
    hdr = np.ndarray((), L.RING_DTYPE, buffer=raw, offset=first)
    buf_size = int(hdr["nr_buf_size"])
    buf_pool = first + int(hdr["buf_ofs"])
    del raw, nifp, ring_ofs, hdr  # the region makes its own views
    # The buffer pool is the mapping's last pool: its end bounds the indices.
    region = R.Region.wrap(mem, body.nr_mem_id, buf_pool, (len(mem) - buf_pool) // buf_size,
                           buf_size)
    rings = {d: [_ring(region, nifp_ofs + ofs, d, i) for ofs, i in zip(where[d], ids,
                                                                        strict=True)]
             for d, ids in ((NR_TX, tx), (NR_RX, rx))}
    found = Found(f"netmap:{spec.name}", {}, "netmap", region)
    adapter = NativeAdapter(spec, found, region, {"dev": dev, "fd": fd, "body": body})
    R.hold(region)
    port = Port(spec, region, nifp_ofs, flags, rings[NR_TX], rings[NR_RX], adapter)
    port.extra_bufs = body.nr_extra_bufs
    return port


def _ring(region: R.Region, ofs: int, direction: int, ringid: int) -> Ring:
    """A ring over the kernel's ``netmap_ring``, its kring block private to this process."""
    ring = Ring(region, ofs, direction, ringid)
    words = memoryview(bytearray(KRING_SIZE)).cast("I")
    ring.kring = KRing(ring, words, ring._hdr, ring._hdr64, region.nbufs)
    return ring
