"""Sleeping and waking across processes without a kernel.

A port that has nothing to do sets ``need_kick`` in the kring block of each
ring it waits on, together with the address of its wake-up socket, and then
sleeps in ``select()`` on that socket.  The peer, after publishing slots,
looks at ``need_kick``: only if it is set does it clear it and send one
datagram.  A busy peer therefore makes no system call at all; a sleeping
one is woken within a loopback round trip (tens of microseconds).

The socket is a UDP socket bound to 127.0.0.1, because that is the one
waitable object that ``select``, ``selectors`` and ``asyncio`` accept on
Linux, macOS, FreeBSD *and* Windows (where ``select`` takes only sockets;
use asyncio's ``SelectorEventLoop`` there, the Proactor loop has no
``add_reader``).  Datagrams stay on the loopback interface.

Ordering: the waiter stores ``need_kick`` and then re-reads the ring; the
peer stores the ring indices and then reads ``need_kick``.  Each side puts a
full memory barrier between its store and its load (``fence``), otherwise a
store buffer could let both miss each other.  As a second line of defence
every sleep is cut into slices of at most ``MAX_SLEEP`` seconds, after which
the waiter re-checks the ring and the peer's liveness anyway.
"""

from __future__ import annotations

import select
import socket
import threading

from .kring import K_KICKS, K_NEED_KICK, K_WAITER

MAX_SLEEP = 0.2

_fence_lock = threading.Lock()
_kick_sock: socket.socket | None = None


def fence() -> None:
    """A full memory barrier: a lock round trip is an atomic read-modify-write."""
    _fence_lock.acquire()
    _fence_lock.release()


def kick(k: memoryview) -> None:
    """Wake the waiter of the kring ``k`` if it asked for it (call after publishing)."""
    fence()
    if k[K_NEED_KICK]:
        k[K_NEED_KICK] = 0
        global _kick_sock
        if _kick_sock is None:
            _kick_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _kick_sock.sendto(b"k", ("127.0.0.1", k[K_WAITER]))
        except OSError:
            return  # the waiter is gone; its peer-liveness check will tell
        k[K_KICKS] = (k[K_KICKS] + 1) & 0xFFFFFFFF


class Waiter:
    """One per port: the socket its users sleep on and ``fileno()`` returns."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def fileno(self) -> int:
        return self.sock.fileno()

    def arm(self, k: memoryview) -> None:
        """Ask the peer to wake us on its next publish on kring ``k``."""
        k[K_WAITER] = self.port
        k[K_NEED_KICK] = 1
        fence()

    def disarm(self, k: memoryview) -> None:
        k[K_NEED_KICK] = 0

    def drain(self, count: int) -> None:
        """Consume ``count`` wake-up datagrams (counted by the syncs through ``K_KICKS``).

        Counting lets a busy port skip the ``recv`` system call whenever
        nobody sent anything.
        """
        for _ in range(count):
            try:
                self.sock.recv(16)
            except BlockingIOError:
                break

    def sleep(self, timeout: float) -> bool:
        """Wait up to ``timeout`` (at most ``MAX_SLEEP``) seconds; True if woken.

        Empties the socket, so a datagram for a ring nobody syncs cannot
        keep it readable forever.
        """
        r, _, _ = select.select([self.sock], [], [], max(0.0, min(timeout, MAX_SLEEP)))
        if r:
            self.drain(1 << 30)
        return bool(r)

    def close(self) -> None:
        self.sock.close()
