"""Waiting: sleeping until a ring has something, across processes and without a kernel.

A port that has nothing to do arms each ring it waits on (``need_kick`` and
its doorbell's address, in the kring) and sleeps on its doorbell
(:class:`pynetmap.osl.Doorbell`, a socket).  The other side, after
publishing slots, calls the kring's ``notify``, which rings the doorbell
only if ``need_kick`` is set.  A busy peer therefore makes no system call
at all; a sleeping one is woken within a loopback round trip.  Each kring
counts the wake-ups sent, so a sync drains exactly those datagrams and a
busy port skips the ``recv`` system call when nobody sent anything.

Every sleep is cut into slices of at most ``MAX_SLEEP`` seconds, after which
the waiter re-checks the rings and the peer's liveness anyway.

:func:`wait_any` is the one waiting loop for tools that serve several ports
(bridge): arm them all, sleep on all their file descriptors at once.
"""

from __future__ import annotations

import select
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import osl

if TYPE_CHECKING:
    from .kring import KRing
    from .port import Port

MAX_SLEEP = 0.2


class Waiter:
    """One per port: the doorbell its users sleep on and ``fileno()`` returns."""

    def __init__(self) -> None:
        self.bell = osl.Doorbell()
        #: wake-ups consumed so far: one consumed after arming means the peer
        #: that rang has cleared our request, so the rings must be armed again
        self.consumed = 0

    def fileno(self) -> int:
        return self.bell.fileno()

    def arm(self, krings: Sequence[KRing]) -> None:
        """Ask the other side of each ring to ring our doorbell on its next publish."""
        for k in krings:
            k.arm(self.bell.address)

    @staticmethod
    def disarm(krings: Sequence[KRing]) -> None:
        for k in krings:
            k.disarm()

    def watch(self, krings: Sequence[KRing]) -> None:
        """Have the syncs of ``krings`` report the wake-ups they find, to drain exactly those.

        A busy port thereby skips the ``recv`` system call when nobody rang.
        """
        for k in krings:
            k.on_kicks = self.drain

    def drain(self, count: int) -> None:
        """Consume ``count`` wake-ups that syncs found sent (see :meth:`watch`)."""
        self.consumed += count
        self.bell.drain(count)

    def forget(self, krings: Sequence[KRing]) -> None:
        """Empty the doorbell: what it held is stale once the rings are looked at again.

        Also what stops a stray datagram from keeping ``fileno()`` readable.
        """
        for k in krings:
            k.forget_kicks()
        self.consumed += 1 + self.bell.drain_all()

    def sleep(self, timeout: float, krings: Sequence[KRing]) -> bool:
        """Wait up to ``timeout`` (at most ``MAX_SLEEP``) seconds; True if woken.

        Woken, the doorbell is empty (the bell drains itself) and the
        wake-ups sent for ``krings`` so far count as consumed.
        """
        if not self.bell.sleep(max(0.0, min(timeout, MAX_SLEEP))):
            return False
        for k in krings:
            k.forget_kicks()
        self.consumed += 1
        return True

    def close(self) -> None:
        self.bell.close()


def wait_any(ports: Sequence[Port], events: Sequence[int], timeout_ms: float = -1,
             extra_fds: Sequence[int] = ()) -> list[int]:
    """Wait until one of ``ports`` is ready for its ``events``; returns every port's revents.

    Each port is synced and armed (``Port.arm``); if none is ready, one
    ``select`` sleeps on all their file descriptors and ``extra_fds`` (a
    stop socket, say) for at most ``timeout_ms`` (-1: ``MAX_SLEEP``, then
    look again), and the ports are synced again.  A port with no events is
    only flushed (netmap's poll txsyncs an fd polled for nothing).
    """
    revents = [p.arm(ev) for p, ev in zip(ports, events, strict=True)]
    if any(revents) or timeout_ms == 0:
        return revents
    timeout = MAX_SLEEP if timeout_ms < 0 else min(MAX_SLEEP, timeout_ms / 1000)
    fds = [p.fileno() for p, ev in zip(ports, events, strict=True) if ev]
    for p, ev in zip(ports, events, strict=True):
        if ev & select.POLLOUT and p.tx_resync_s is not None:
            timeout = min(timeout, p.tx_resync_s)  # no wake-up comes for TX room there
    select.select(fds + list(extra_fds), [], [], max(0.0, timeout))
    return [p.poll(ev, 0) for p, ev in zip(ports, events, strict=True)]
