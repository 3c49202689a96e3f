"""The wake-up doorbell: how a process wakes a sleeper in another process
without a kernel driver.

A sleeper owns a UDP socket bound to 127.0.0.1 and publishes its port
number (``Doorbell.address``, a uint32 in shared memory); a peer that wants
it awake sends one datagram there with :func:`ring`.  A UDP socket is the
one waitable object that ``select``, ``selectors`` and ``asyncio`` accept on
Linux, macOS, FreeBSD *and* Windows (where ``select`` takes sockets only),
so it is also what a port's ``fileno()`` returns.  Datagrams never leave
the loopback interface.

The receiving socket never sends: on Windows a UDP socket that sent to a
closed port reports WSAECONNRESET on its next receive.  Rings go out through
one send-only socket per process instead.
"""

from __future__ import annotations

import select
import socket
import threading

#: Receive buffer shared by every doorbell: the content of a datagram is never
#: read, and a buffer the size of the largest datagram means a stray large one
#: is consumed whole (Windows raises WSAEMSGSIZE on a truncated receive).
_SCRATCH = bytearray(65536)

#: More datagrams than a receive buffer can hold, so :meth:`Doorbell.drain_all`
#: finishes even while somebody keeps sending.
_DRAIN_ALL_MAX = 1 << 16

_sender: socket.socket | None = None
_sender_lock = threading.Lock()


class Doorbell:
    """A sleeper's end: a non-blocking UDP socket on 127.0.0.1 and an ephemeral port."""

    #: Receive errors that mean "no datagram waiting".
    _EMPTY: tuple[type[OSError], ...] = (BlockingIOError,)

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        #: The port number a peer passes to :func:`ring`.
        self.address: int = sock.getsockname()[1]

    def fileno(self) -> int:
        """The descriptor to hand to ``select``/``selectors``/asyncio."""
        return self._sock.fileno()

    def drain(self, count: int) -> int:
        """Receive up to ``count`` waiting datagrams without blocking; return how many.

        Callers that count the rings sent to them drain exactly that many,
        which saves a receive call whenever nobody rang.
        """
        recv_into = self._sock.recv_into
        n = 0
        while n < count:
            try:
                recv_into(_SCRATCH)
            except self._EMPTY:
                break
            n += 1
        return n

    def drain_all(self) -> int:
        """Receive every waiting datagram (bounded while a sender keeps sending)."""
        return self.drain(_DRAIN_ALL_MAX)

    def sleep(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a ring; True if one came.

        Empties the socket when woken, so a datagram nobody accounts for (a
        late ring, a stray sender) cannot keep it readable forever.
        """
        readable, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if readable:
            self.drain_all()
        return bool(readable)

    def close(self) -> None:
        self._sock.close()


def _sending_socket() -> socket.socket:
    global _sender
    with _sender_lock:
        if _sender is None:
            _sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return _sender


def ring(address: int) -> bool:
    """Send one wake-up datagram to the doorbell at ``address``.

    Returns False if the send failed, which means the sleeper is gone; its
    peer finds out for sure through the liveness check.  Called once per
    wake-up, so it reuses one socket per process.
    """
    sock = _sender or _sending_socket()
    for _ in range(2):
        try:
            sock.sendto(b"!", ("127.0.0.1", address))
            return True
        except ConnectionResetError:
            # Windows: an earlier ring hit a closed port and the ICMP reply is
            # reported on this call; it says nothing about ``address``: retry once.
            continue
        except OSError:
            return False
    return False
