"""Ctrl-C for netmap's long-running tools (bridge, lb): the first one stops the
loop cleanly (the tool then prints its summary and closes its ports), a
second one ends the tool at once, as in netmap's C tools -- here with exit
status 130 and no traceback, after the ``finally`` blocks have closed the
ports (a NIC port must not leave its XDP program behind)."""

from __future__ import annotations

import contextlib
import select
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def stop_on_sigint(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop()`` on the first SIGINT inside the block; restore the handler after."""
    old = signal.getsignal(signal.SIGINT)
    if old is None:  # set outside Python; Python's own is the best we can restore
        old = signal.default_int_handler

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, old)  # a second Ctrl-C acts as usual
        stop()

    try:
        signal.signal(signal.SIGINT, handler)
        installed = True
    except ValueError:  # not the main thread: the caller stops the loop another way
        installed = False
    try:
        yield
    except KeyboardInterrupt:  # the second Ctrl-C: out, without Python's traceback
        raise SystemExit(130) from None
    finally:
        if installed:
            signal.signal(signal.SIGINT, old)


class Stopper:
    """A long-running tool's stop flag that also wakes a sleeping loop: ``stop()``
    (from a signal handler or another thread) sets the flag and makes
    :meth:`fileno` readable, so a ``select`` or ``wait_any`` on it returns at once."""

    def __init__(self) -> None:
        self.stopped = False
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def stop(self) -> None:
        self.stopped = True
        try:
            self._w.send(b"s")
        except OSError:
            pass  # already woken (buffer full) or closed

    def fileno(self) -> int:
        return self._r.fileno()

    def sleep(self, seconds: float) -> None:
        """Sleep, but return as soon as :meth:`stop` is called (the -w wait)."""
        if seconds > 0 and not self.stopped:
            select.select([self._r], [], [], seconds)

    def close(self) -> None:
        self._r.close()
        self._w.close()
