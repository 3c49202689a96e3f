"""A bound port: netmap's file descriptor after REGISTER, in one object.

The port runs the generic half of every sync through each ring's kring
(:mod:`pynetmap.kring`: prologue, the adapter's sync, finalize, reinit of a
corrupted ring), and ``poll``.  The adapter (pipe, null, NIC, ...) plays
netmap's kernel for its port type; see :mod:`pynetmap.adapter`.
"""

from __future__ import annotations

import atexit
import errno
import os
import select
import time
from typing import TYPE_CHECKING

import numpy as np

from . import layout as L
from . import region as R
from .adapter import PortInfo
from .constants import NR_NO_TX_POLL
from .errors import NetmapError
from .kring import HWCUR, KICKS, SlotError
from .names import PortSpec
from .objects import walk_list
from .ring import Ring
from .wake import MAX_SLEEP, Waiter

#: the adaptive spin's default ceiling: a wake-up later than this means an idle peer
SPIN_MAX_US = 1000.0

if TYPE_CHECKING:
    from .adapter import Adapter

POLLIN = select.POLLIN if hasattr(select, "POLLIN") else 0x001
POLLOUT = select.POLLOUT if hasattr(select, "POLLOUT") else 0x004
POLLERR = select.POLLERR if hasattr(select, "POLLERR") else 0x008
POLLHUP = select.POLLHUP if hasattr(select, "POLLHUP") else 0x010
POLLRDNORM = getattr(select, "POLLRDNORM", 0x040)
POLLWRNORM = getattr(select, "POLLWRNORM", 0x100)

__all__ = ["Port", "RingError", "SlotError", "POLLIN", "POLLOUT", "POLLERR", "POLLHUP"]


class RingError(NetmapError):
    """A sync found bad ``head``/``cur`` or bad slots; the ring was reset (§2.5)."""


#: ports of this process not closed yet, closed at interpreter exit (see _close_at_exit)
_open_ports: set[Port] = set()


@atexit.register
def _close_at_exit() -> None:
    """Close what the program left open, as the kernel closes a process's netmap fds.

    Without it the shared memory would be unmapped by the garbage collector
    while our NumPy views still export it ("Exception ignored ... BufferError"),
    and the open would stay in the registry until somebody swept it.  Only
    this process's ports: a forked child that exits must not close its
    parent's.
    """
    pid = os.getpid()
    for port in list(_open_ports):
        if port._pid == pid:
            port.close()


class Port:
    """A netmap port opened by :func:`pynetmap.open`; a context manager.

    One thread at a time syncs a port's rings and waits on it (netmap's kernel
    refuses a second concurrent sync of a ring; nothing here checks it), and
    the port belongs to the process that opened it (see the README's *Faults*).
    """

    def __init__(self, spec: PortSpec, region: R.Region, nifp_ofs: int, flags: int,
                 tx_rings: list[Ring], rx_rings: list[Ring], adapter: Adapter) -> None:
        self.spec = spec
        self.name = spec.spec
        self.region = region
        self.mem_id = region.mem_id
        self.flags = flags
        self.nifp_ofs = nifp_ofs
        #: ``struct netmap_if`` of this port (NumPy record view)
        self.nifp = np.ndarray((), L.IF_DTYPE, buffer=region.mem, offset=nifp_ofs)
        self._if = region.buf[nifp_ofs : nifp_ofs + L.IF_HDR_SIZE].cast("I")
        self.tx_rings = tx_rings
        self.rx_rings = rx_rings
        self.adapter = adapter
        self.extra_bufs = 0
        self._tx_k = [r.kring for r in tx_rings]
        self._rx_k = [r.kring for r in rx_rings]
        self._all_k = self._tx_k + self._rx_k
        self._waiter = Waiter()
        self._waiter.watch(self._all_k)
        self._doorbell = adapter.doorbell
        self._kernel = adapter.kernel_sync
        self._next_hup_check = 0.0
        self._hup = False  # the last peer_gone(): POLLHUP stays set between looks
        #: poll() re-syncs for at least this long before it sleeps: waking a
        #: sleeper costs a system call on each side and a scheduler round trip,
        #: and a spin often finds the next batch of a busy peer first.  0 sleeps
        #: at once (and turns the adaptive spin off); ``math.inf`` never sleeps.
        self.spin_us: float = 50
        #: the adaptive spin's ceiling (see :meth:`poll`)
        self.spin_max_us: float = SPIN_MAX_US
        self._spin_now: float = 50  # the spin that covers this peer's pace, learnt
        self.closed = False
        self._pid = os.getpid()  # the process that opened it (and closes it at exit)
        _open_ports.add(self)

    def info(self) -> PortInfo:
        """What backs the port: kind, engine and mode, frame limit, MAC and MTU."""
        return self.adapter.info()

    # -- netmap_if ---------------------------------------------------------
    @property
    def num_tx_rings(self) -> int:
        return self._if[L.IW_TX_RINGS]

    @property
    def num_rx_rings(self) -> int:
        return self._if[L.IW_RX_RINGS]

    @property
    def bufs_head(self) -> int:
        """``ni_bufs_head``: first extra buffer (0 = none); the user may relink the list."""
        return self._if[L.IW_BUFS_HEAD]

    @bufs_head.setter
    def bufs_head(self, v: int) -> None:
        self._if[L.IW_BUFS_HEAD] = v

    def extra_buffers(self) -> list[int]:
        """Walk the extra-buffer list from ``ni_bufs_head`` (spec §2.7)."""
        return walk_list(self.region, self.bufs_head, self.region.nbufs)

    @property
    def tx_resync_s(self) -> float | None:
        """How long a wait for TX room on :meth:`fileno` may last before syncing again.

        None for software ports, whose peer rings ``fileno()`` when it frees
        slots.  Kernel-backed ports (NIC) get no wake-up when frames complete,
        so a waiter for POLLOUT must come back after this many seconds.
        """
        return self.adapter.tx_resync_s

    def fileno(self) -> int:
        """An fd that becomes readable when a ring we wait on gets something.

        Software ports: a doorbell socket that the peer rings when it
        publishes.  NIC ports: an epoll fd over the kernel sockets of the
        bound queues.
        """
        self._check_open()
        return self._waiter.fileno() if self._doorbell else self.adapter.fileno()

    # -- syncs ---------------------------------------------------------------
    def txsync(self) -> None:
        """``NIOCTXSYNC``: submit ``[hwcur, head)`` of every TX ring, reclaim sent slots."""
        errors = self._txsync()
        if errors:
            raise RingError(22, "; ".join(errors))

    def rxsync(self) -> None:
        """``NIOCRXSYNC``: release ``[hwcur, head)`` of every RX ring, import new packets."""
        errors = self._rxsync()
        if errors:
            raise RingError(22, "; ".join(errors))

    def _txsync(self, idle: bool = True, drain: bool = False) -> list[str]:
        """Sync the TX rings; ``idle=False`` skips those with nothing submitted
        (``head == hwcur``), as netmap's poll flushes only rings with work, unless
        the adapter needs every sync (``Adapter.idle_txsync``: a NIC's socket
        engines).  ``drain`` (poll) also takes the wake-ups the syncs find sent."""
        if self.closed:
            self._check_open()
        if self._kernel:
            return self.adapter.kernel_txsync()
        errors = []
        idle = idle or self.adapter.idle_txsync
        for k in self._tx_k:
            if not idle and k.hdr[L.RW_HEAD] == k.w[HWCUR]:
                continue
            why = k.txsync()
            if drain and k.w[KICKS] != k.seen_kicks:  # the usual answer: nobody rang
                k.take_kicks()
            if why is not None:
                errors.append(f"{self.name} tx ring {k.ringid}: {why}")
        return errors

    def _rxsync(self, drain: bool = False) -> list[str]:
        if self.closed:
            self._check_open()
        if self._kernel:
            return self.adapter.kernel_rxsync()
        errors = []
        now = time.time_ns()
        for k in self._rx_k:
            why = k.rxsync(now)
            if drain and k.w[KICKS] != k.seen_kicks:
                k.take_kicks()
            if why is not None:
                errors.append(f"{self.name} rx ring {k.ringid}: {why}")
        return errors

    # -- poll ----------------------------------------------------------------
    def poll(self, events: int = POLLIN, timeout_ms: float = -1) -> int:
        """netmap's ``poll()`` on this port: sync, then sleep until ready (spec §2.6).

        Returns the revents bitmask: POLLIN when an RX ring has ``cur != tail``,
        POLLOUT when a TX ring has ``cur != tail``, POLLERR when a ring had
        to be reset or a sync failed with EIO (a monitor whose port left),
        POLLHUP when the peer of a pipe or a monitor's port is gone.  TX rings are
        flushed on every call unless the port was opened with NR_NO_TX_POLL; on a
        software port (pipe, VALE), only those with slots submitted
        (``head != hwcur``) unless it waits for POLLOUT, as netmap's poll.
        """
        want_tx = bool(events & (POLLOUT | POLLWRNORM))
        want_rx = bool(events & (POLLIN | POLLRDNORM))
        start = deadline = None  # set after the first look: one clock read if it finds work
        armed: list = []
        armed_at = -1  # waiter.consumed when the rings were armed
        spin_until = None
        slept = False
        waiter = self._waiter
        try:
            while True:
                revents = 0
                try:
                    if want_tx or not self.flags & NR_NO_TX_POLL:
                        if self._txsync(want_tx, True):
                            revents |= POLLERR
                        if want_tx:
                            for k in self._tx_k:
                                if k.pending():
                                    revents |= POLLOUT
                                    break
                    if want_rx:
                        if self._rxsync(True):
                            revents |= POLLERR
                        for k in self._rx_k:
                            if k.pending():
                                revents |= POLLIN
                                break
                except NetmapError as e:
                    if e.errno != errno.EIO:
                        raise
                    revents |= POLLERR  # a sync that cannot go on (a monitor's port left)
                    self._next_hup_check = 0.0
                now = time.monotonic()
                if now >= self._next_hup_check:  # a look at the peer costs: every 0.2 s
                    self._next_hup_check = now + MAX_SLEEP
                    self._hup = self.adapter.peer_gone()
                if self._hup:
                    revents |= POLLHUP
                if start is None:
                    if revents:
                        return revents  # ready at once: nothing waited, nothing to learn
                    start = now
                    deadline = None if timeout_ms < 0 else now + timeout_ms / 1000
                elif revents:
                    self._learn_spin(now - start, slept)
                    return revents
                if deadline is not None and now >= deadline:
                    self._spin_now = self.spin_us
                    return 0
                if spin_until is None:
                    spin = self.spin_us and max(self.spin_us, self._spin_now)
                    spin_until = now + spin / 1e6
                if now < spin_until:
                    continue  # a busy peer publishes soon: cheaper than sleeping
                left = MAX_SLEEP if deadline is None else deadline - now
                if not self._doorbell:
                    # a kernel-backed port: its sockets wake us, no doorbell
                    self.adapter.wait(left, want_tx)
                    continue
                if armed_at != waiter.consumed:
                    # Ask for a wake-up, then look once more (race avoidance).  Again
                    # after a wake-up was consumed: the peer that rang cleared the request.
                    armed = (self._tx_k if want_tx else []) + (self._rx_k if want_rx else [])
                    waiter.arm(armed)
                    armed_at = waiter.consumed
                    continue
                if waiter.sleep(left, self._all_k):
                    self._next_hup_check = 0.0  # the bell may be a peer that closed
                slept = True
        finally:
            if armed:
                waiter.disarm(armed)

    def _learn_spin(self, waited_s: float, slept: bool) -> None:
        """Adapt the spin to the peer's pace (what makes netmap's defaults fast here).

        A peer that streams publishes a batch every few hundred µs: a wait
        that a wake-up ended within ``spin_max_us`` makes the spin cover
        twice that wait next time, so both sides stop paying a sleep and a
        wake-up per batch.  A wait found while spinning lets the spin shrink
        slowly (the pace may have quickened); a longer wait (an idle peer) or
        a timeout goes back to ``spin_us`` at once, so an idle port does not
        burn a core.  A poll that finds its rings ready at once waited for
        nothing and learns nothing.
        """
        waited = waited_s * 1e6
        if not slept:
            self._spin_now = max(self.spin_us, self._spin_now * 0.98)
        elif waited < self.spin_max_us:
            self._spin_now = min(self.spin_max_us, max(self._spin_now, 2 * waited))
        else:
            self._spin_now = self.spin_us

    def arm(self, events: int = POLLIN) -> int:
        """Prepare to wait on :meth:`fileno` from an event loop (selectors, asyncio).

        Syncs like ``poll(events, 0)``; if something is ready returns its
        revents (handle it, then call ``arm`` again).  Otherwise empties the
        doorbell, asks the peers for a wake-up and returns 0: now wait until
        ``fileno()`` is readable, at most :data:`pynetmap.wake.MAX_SLEEP`
        (0.2 s; or :attr:`tx_resync_s` when shorter), then call ``arm`` again.
        A peer that closes rings the bell; one that dies without closing does
        not, so only the bounded wait finds it gone (POLLHUP).  Tools that
        serve several ports use :func:`pynetmap.wait_any`.

        One waiter per port: two threads or tasks arming the same port empty
        each other's doorbell.
        """
        self._next_hup_check = 0.0  # woken by a closing peer: say POLLHUP now
        revents = self.poll(events, 0)
        if revents or not self._doorbell:
            return revents
        krings = ((self._tx_k if events & (POLLOUT | POLLWRNORM) else [])
                  + (self._rx_k if events & (POLLIN | POLLRDNORM) else []))
        waiter = self._waiter
        while True:
            # What the doorbell holds was answered by the sync above, or is stray:
            # either way it must not make fileno() readable now.
            waiter.forget(self._all_k)
            waiter.arm(krings)
            armed_at = waiter.consumed
            revents = self.poll(events, 0)  # look again: a publish may have raced the arming
            if revents or waiter.consumed == armed_at:
                return revents
            # that look consumed a wake-up, whose sender cleared our request: again

    async def wait(self, events: int = POLLIN, timeout_ms: float = -1) -> int:
        """``poll`` for asyncio: suspends on ``loop.add_reader(fileno())`` instead of blocking."""
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = None if timeout_ms < 0 else loop.time() + timeout_ms / 1000
        while True:
            revents = self.arm(events)
            if revents:
                return revents
            fut = loop.create_future()
            fd = self.fileno()
            loop.add_reader(fd, _wake, fut)
            try:
                left = MAX_SLEEP if deadline is None else min(MAX_SLEEP, deadline - loop.time())
                if events & (POLLOUT | POLLWRNORM) and self.tx_resync_s is not None:
                    left = min(left, self.tx_resync_s)
                await asyncio.wait_for(fut, max(0.0, left))
            except asyncio.TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    return self.poll(events, 0)
            finally:
                loop.remove_reader(fd)

    # -- life cycle ------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise NetmapError(6, f"port {self.name} is closed")  # ENXIO, as netmap

    def close(self) -> None:
        """Unbind the port; the region goes when its last user in any process goes.

        NumPy views taken from the port (``buf()``, ``bufs``, ``slots``,
        batch arrays) stay valid: they keep this process's mapping alive.
        """
        if self.closed:
            return
        self.closed = True
        _open_ports.discard(self)
        from .register import close_port

        try:
            close_port(self)
        finally:
            self._waiter.close()
            for r in self.tx_rings + self.rx_rings:
                r.kring.drop_watchers()
                r.release_views()
            self.nifp = None
            self._if.release()
            R.drop(self.region)

    def __enter__(self) -> Port:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Port {self.name!r} mem_id={self.mem_id} tx={len(self.tx_rings)} "
                f"rx={len(self.rx_rings)}{' closed' if self.closed else ''}>")


def _wake(fut: object) -> None:
    if not fut.done():  # type: ignore[attr-defined]
        fut.set_result(None)  # type: ignore[attr-defined]
