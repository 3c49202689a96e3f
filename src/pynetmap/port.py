"""A bound port: netmap's file descriptor after REGISTER, in one object.

The port owns the generic half of every sync: the prologue checks of what
the user wrote, the reinit of a corrupted ring, the finalize step that
publishes ``tail``, and ``poll``.  Between prologue and finalize it calls
its adapter (pipe, null, AF_XDP, ...) with the ring and the validated
``head``; the adapter plays netmap's kernel for that port type and moves
``hwcur``/``hwtail`` in the kring.
"""

from __future__ import annotations

import select
import time
from typing import Protocol

import numpy as np

from . import layout as L
from . import region as R
from .constants import NR_NO_TX_POLL, NR_TX
from .errors import NetmapError
from .kring import (
    K_HWCUR,
    K_HWTAIL,
    K_KICKS,
    K_RCUR,
    K_RHEAD,
    K_RTAIL,
    rx_prologue,
    sanitize_slots,
    tx_prologue,
)
from .names import PortSpec
from .objects import walk_list
from .ring import Ring
from .wake import MAX_SLEEP, Waiter

POLLIN = select.POLLIN if hasattr(select, "POLLIN") else 0x001
POLLOUT = select.POLLOUT if hasattr(select, "POLLOUT") else 0x004
POLLERR = select.POLLERR if hasattr(select, "POLLERR") else 0x008
POLLHUP = select.POLLHUP if hasattr(select, "POLLHUP") else 0x010
POLLRDNORM = getattr(select, "POLLRDNORM", 0x040)
POLLWRNORM = getattr(select, "POLLWRNORM", 0x100)


class RingError(NetmapError):
    """A sync found bad ``head``/``cur`` or bad slots; the ring was reset (§2.5)."""


class SlotError(Exception):
    """Raised by an adapter when slots it must pass on are invalid."""


class Adapter(Protocol):
    """What a port type implements: netmap's ``nm_txsync``/``nm_rxsync`` and teardown."""

    def txsync(self, ring: Ring, head: int) -> None: ...
    def rxsync(self, ring: Ring, head: int) -> None: ...
    def peer_gone(self) -> bool: ...
    def close(self) -> None: ...
    # Adapters backed by OS sockets also define ``fileno()`` (an fd readable
    # when a ring has something) and ``wait(timeout_s, want_tx)``; poll then
    # sleeps there instead of using the kick protocol.


class Port:
    """A netmap port opened by :func:`pynetmap.open`; a context manager."""

    def __init__(self, spec: PortSpec, region: R.Region, nifp_ofs: int, flags: int,
                 tx_rings: list[Ring], rx_rings: list[Ring], adapter: Adapter) -> None:
        self.spec = spec
        self.name = spec.spec
        self.region = region
        self.mem_id = region.mem_id
        self.flags = flags
        self.nifp_ofs = nifp_ofs
        #: ``struct netmap_if`` of this port (NumPy record view)
        self.nifp = np.ndarray((), L.IF_DTYPE, buffer=region.buf, offset=nifp_ofs)
        self._if = region.buf[nifp_ofs : nifp_ofs + L.IF_HDR_SIZE].cast("I")
        self.tx_rings = tx_rings
        self.rx_rings = rx_rings
        self.adapter = adapter
        #: NIC ports: the engine (``"xdp"``, ``"packet"``) and its mode
        #: (``"zerocopy"``, ``"copy"``); None for software ports (pipes, null)
        self.engine: str | None = None
        self.mode: str | None = None
        #: the longest frame one slot may carry out of this port
        self.max_frame: int = region.buf_size
        self._waiter = Waiter()
        #: ``adapter.wait(timeout_s, want_tx)`` for ports whose wake-ups come from OS sockets
        self._os_wait = getattr(adapter, "wait", None)
        self._next_hup_check = 0.0
        #: poll() re-syncs for this long before it sleeps: waking a sleeper
        #: costs a system call on each side, a short spin usually finds the
        #: next batch of a busy peer first.  0 sleeps at once.
        self.spin_us = 50
        self.closed = False

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

        None for software ports, whose peer kicks ``fileno()`` when it frees
        slots.  Kernel-backed ports (NIC) get no wake-up when frames complete,
        so a waiter for POLLOUT must come back after this many seconds.
        """
        return getattr(self.adapter, "tx_resync_s", None)

    def fileno(self) -> int:
        """An fd that becomes readable when a ring we wait on gets something.

        Pipes: a socket a peer kicks when it publishes.  NIC ports: an epoll
        fd over the kernel sockets of the bound queues.
        """
        own = getattr(self.adapter, "fileno", None)
        return own() if own is not None else self._waiter.fileno()

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

    def _txsync(self) -> list[str]:
        self._check_open()
        errors: list[str] = []
        for r in self.tx_rings:
            k, h, n = r._k, r._hdr, r.num_slots
            head, cur = h[L.RW_HEAD], h[L.RW_CUR]
            if not tx_prologue(n, k[K_HWCUR], k[K_HWTAIL], k[K_RHEAD], k[K_RTAIL], head, cur):
                errors.append(self._reinit(r, f"head {head} cur {cur}"))
                continue
            if h[L.RW_TAIL] != k[K_RTAIL]:
                h[L.RW_TAIL] = k[K_RTAIL]  # the user wrote tail: restore it
            k[K_RHEAD] = head
            k[K_RCUR] = cur
            try:
                self.adapter.txsync(r, head)
            except SlotError as e:
                errors.append(self._reinit(r, str(e)))
                continue
            h[L.RW_TAIL] = k[K_RTAIL] = k[K_HWTAIL]
        self._drain(self.tx_rings)
        return errors

    def _drain(self, rings: list[Ring]) -> None:
        """Consume the wake-ups peers sent for ``rings`` (no system call if none)."""
        pending = 0
        for r in rings:
            kicks = r._k[K_KICKS]
            if kicks != r.seen_kicks:
                pending += (kicks - r.seen_kicks) & 0xFFFFFFFF
                r.seen_kicks = kicks
        if pending:
            self._waiter.drain(pending)

    def _rxsync(self) -> list[str]:
        self._check_open()
        errors: list[str] = []
        now = time.time_ns()
        for r in self.rx_rings:
            k, h, n = r._k, r._hdr, r.num_slots
            head, cur = h[L.RW_HEAD], h[L.RW_CUR]
            k[K_RHEAD] = head
            k[K_RCUR] = cur
            if not rx_prologue(n, k[K_HWCUR], k[K_HWTAIL], head, cur):
                errors.append(self._reinit(r, f"head {head} cur {cur}"))
            else:
                try:
                    self.adapter.rxsync(r, head)
                except SlotError as e:
                    errors.append(self._reinit(r, str(e)))
            h[L.RW_TAIL] = k[K_RTAIL] = k[K_HWTAIL]
            r._hdr64[L.RQ_TS_SEC] = now // 1_000_000_000
            r._hdr64[L.RQ_TS_USEC] = now // 1000 % 1_000_000
        self._drain(self.rx_rings)
        return errors

    def _reinit(self, r: Ring, why: str) -> str:
        """``netmap_ring_reinit``: sanitize every slot, reset head/cur/tail (see kring)."""
        k = r._k
        fixed = sanitize_slots(r.slot_buf_idx, r.slot_len, self.region.nbufs, r.buf_size)
        r.head = r.cur = k[K_RHEAD] = k[K_RCUR] = k[K_HWCUR]
        r._hdr[L.RW_TAIL] = k[K_RTAIL] = k[K_HWTAIL]
        d = "tx" if r.dir == NR_TX else "rx"
        return f"{self.name} {d} ring {r.ringid}: {why}; ring reset ({fixed} slots sanitized)"

    # -- poll ----------------------------------------------------------------
    def poll(self, events: int = POLLIN, timeout_ms: float = -1) -> int:
        """netmap's ``poll()`` on this port: sync, then sleep until ready (spec §2.6).

        Returns the revents bitmask: POLLIN when an RX ring has ``cur != tail``,
        POLLOUT when a TX ring has ``cur != tail``, POLLERR when a ring had
        to be reset, POLLHUP when the peer of a pipe is gone.  TX rings are
        flushed on every call unless the port was opened with NR_NO_TX_POLL.
        """
        want_tx = bool(events & (POLLOUT | POLLWRNORM))
        want_rx = bool(events & (POLLIN | POLLRDNORM))
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        armed = False
        spin_until = None
        waiter = self._waiter
        try:
            while True:
                revents = 0
                if want_tx or not self.flags & NR_NO_TX_POLL:
                    if self._txsync():
                        revents |= POLLERR
                    if want_tx:
                        for r in self.tx_rings:
                            if r._hdr[L.RW_CUR] != r._hdr[L.RW_TAIL]:
                                revents |= POLLOUT
                                break
                if want_rx:
                    if self._rxsync():
                        revents |= POLLERR
                    for r in self.rx_rings:
                        if r._hdr[L.RW_CUR] != r._hdr[L.RW_TAIL]:
                            revents |= POLLIN
                            break
                now = time.monotonic()
                if now >= self._next_hup_check:
                    self._next_hup_check = now + MAX_SLEEP
                    if self.adapter.peer_gone():
                        revents |= POLLHUP
                if revents:
                    return revents
                if deadline is not None and now >= deadline:
                    return 0
                if spin_until is None:
                    spin_until = now + self.spin_us / 1e6
                if now < spin_until:
                    continue  # a busy peer publishes soon: cheaper than sleeping
                if self._os_wait is not None:
                    # a kernel-backed port: its sockets wake us, no kick protocol
                    self._os_wait(MAX_SLEEP if deadline is None else deadline - now, want_tx)
                    continue
                if not armed:
                    # Ask for a wake-up, then look once more (race avoidance).
                    for r in self.tx_rings if want_tx else ():
                        waiter.arm(r._k)
                    for r in self.rx_rings if want_rx else ():
                        waiter.arm(r._k)
                    armed = True
                    continue
                if waiter.sleep(MAX_SLEEP if deadline is None else deadline - now):
                    for r in self.tx_rings + self.rx_rings:
                        r.seen_kicks = r._k[K_KICKS]
        finally:
            if armed:
                for r in self.tx_rings + self.rx_rings:
                    waiter.disarm(r._k)

    def arm(self, events: int = POLLIN) -> int:
        """Prepare to wait on :meth:`fileno` from an event loop (selectors, asyncio).

        Syncs like ``poll(events, 0)``; if something is ready returns its
        revents (handle it, then call ``arm`` again).  Otherwise asks the
        peers for a wake-up and returns 0: now wait until ``fileno()`` is
        readable, then sync (which consumes the wake-up) and call ``arm`` again.
        """
        revents = self.poll(events, 0)
        if revents:
            return revents
        for r in self.tx_rings if events & (POLLOUT | POLLWRNORM) else ():
            self._waiter.arm(r._k)
        for r in self.rx_rings if events & (POLLIN | POLLRDNORM) else ():
            self._waiter.arm(r._k)
        revents = self.poll(events, 0)  # look again: a publish may have raced the arming
        return revents

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
            loop.add_reader(self.fileno(), _wake, fut)
            try:
                left = MAX_SLEEP if deadline is None else min(MAX_SLEEP, deadline - loop.time())
                if events & (POLLOUT | POLLWRNORM) and self.tx_resync_s is not None:
                    left = min(left, self.tx_resync_s)
                await asyncio.wait_for(fut, max(0.0, left))
            except asyncio.TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    return self.poll(events, 0)
            finally:
                loop.remove_reader(self.fileno())

    # -- life cycle ------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise NetmapError(6, f"port {self.name} is closed")  # ENXIO, as netmap

    def close(self) -> None:
        """Unbind the port; the region goes when its last user in any process goes."""
        if self.closed:
            return
        self.closed = True
        self._waiter.close()
        self.adapter.close()
        for r in self.tx_rings + self.rx_rings:
            r.release_views()
        self.nifp = None  # type: ignore[assignment]
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
