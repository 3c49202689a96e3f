"""What every ring shared with the kernel needs: wrap-around slices and memory ordering.

Slices.  A batch of n entries starting at position ``pos`` of a ring of ``size``
entries is one slice, or two when it wraps; :func:`spans` gives them, so a batch moves
with one or two NumPy slice assignments and no per-entry Python.

Ordering.  AF_XDP rings and TPACKET frames are single-producer/single-consumer queues shared
with the kernel.  The kernel publishes with a store-release (``smp_store_release`` of
the producer index, or ``tp_status`` after ``smp_wmb``) and reads with a load-acquire.
User space must do the mirror image:

* producer: write the entries (descriptors, frame bytes), *then* store the index or
  status that hands them over -- stores must not be reordered with stores;
* consumer: load the index or status, *then* read the entries it covers, and only after
  that store the index or status that gives them back -- loads must not pass loads, and
  stores must not pass earlier loads.

On **x86-64 (TSO)** the hardware guarantees all three (only a store followed by a load
may be reordered, which these protocols never rely on), and a compiler cannot move
accesses across the separate NumPy calls we make, so nothing is emitted.  Every index
or status word is naturally aligned and written by one NumPy element store, so the
kernel never sees a torn value.

On **aarch64** (and other weakly ordered CPUs) a barrier (``dmb ish``, or ``stlr``/
``ldar`` on the index) is needed between the two steps.  Python cannot emit one, so
:func:`make_fence` returns a callable that releases and re-takes a private POSIX spin
lock: POSIX lists both calls as memory-synchronising, and glibc implements them as a
store-release followed by a load-acquire, which together order every earlier access
before every later one.  It costs two foreign calls per *batch*, never per packet.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Callable

#: True where the CPU may reorder the accesses above (everything but x86).
NEEDED = platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686")


def spans(pos: int, n: int, size: int) -> tuple[tuple[int, int, int], ...]:
    """Slices ``(start, stop, k)`` of a ring covering n entries from position ``pos``.

    ``pos`` may be a free-running index (it is taken modulo ``size``); ``k`` is where the
    slice starts within the batch.  ``n`` must not exceed ``size``.
    """
    i = pos % size
    first = size - i
    if n <= first:
        return ((i, i + n, 0),)
    return ((i, size, 0), (0, n - first, first))


class _SpinFence:
    """Release then re-acquire a spin lock that this object alone holds: a full fence."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None)
        self._unlock = libc.pthread_spin_unlock
        self._trylock = libc.pthread_spin_trylock
        self._lock = ctypes.c_int(0)
        self._ref = ctypes.byref(self._lock)
        libc.pthread_spin_init(self._ref, 0)
        self._trylock(self._ref)

    def __call__(self) -> None:
        # trylock, not lock: two threads misusing one ring must not deadlock here.
        self._unlock(self._ref)
        self._trylock(self._ref)


def make_fence() -> Callable[[], None] | None:
    """A full memory fence for one ring, or None where the CPU needs none (x86-64)."""
    return _SpinFence() if NEEDED else None
