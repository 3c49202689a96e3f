"""Closing a shared-memory mapping that NumPy arrays may still point into.

``SharedMemory.close()`` is not safe for us: an array built with
``np.ndarray(buffer=shm.buf)`` references the ``mmap`` object without
holding a buffer export, so ``close()`` unmaps the memory under it and the
next access crashes the interpreter; other views make ``close()`` raise
``BufferError`` halfway, and ``__del__`` raises it again later.  So we never
unmap explicitly: we drop this object's references and let the ``mmap``
unmap itself when its last user (ours, or the last view) goes away.
"""

from __future__ import annotations

import weakref
from multiprocessing.shared_memory import SharedMemory


def shm_close(shm: SharedMemory) -> bool:
    """Close this process's mapping of ``shm``; True if it is unmapped now.

    False means arrays or memoryviews still use it: it stays mapped, and
    valid, until the last of them is garbage-collected.
    """
    mm = shm._mmap  # type: ignore[attr-defined]
    if mm is None:
        return True  # closed before
    unmapped = weakref.ref(mm)
    del mm
    shm._buf = None  # type: ignore[attr-defined]
    shm._mmap = None  # type: ignore[attr-defined]
    shm.close()  # what is left: the POSIX descriptor (the mapping does not need it)
    return unmapped() is None
