"""The OS layer on Linux, macOS and FreeBSD.

Shared memory is POSIX shm (``shm_open``), locks are ``flock``, liveness
reads ``/proc`` where there is one (Linux) and asks ``kill(pid, 0)``
elsewhere.  See :mod:`pynetmap.osl` for what each call is for.
"""

from __future__ import annotations

import _posixshmem  # the module multiprocessing.shared_memory itself uses
import contextlib
import errno
import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

from ..errors import NetmapError
from ._doorbell import Doorbell, ring
from ._shm import shm_close

__all__ = [
    "Doorbell", "RangeLock", "check_private_dir", "locked", "process_alive", "process_token",
    "ring", "shm_attach", "shm_close", "shm_create", "shm_unlink", "user_tag",
]

#: Linux has /proc/PID/stat: zombies and start times are visible there.
_PROC = sys.platform.startswith("linux")
_FIX = "remove it, or set PYNETMAP_RUNDIR to use other names"


def _shm_path(name: str) -> str:
    """Where the user finds the segment, for error messages."""
    return f"/dev/shm/{name}" if _PROC else f"POSIX shared memory /{name}"


def _open(name: str, create: bool, size: int = 0) -> SharedMemory:
    if sys.version_info >= (3, 13):
        return SharedMemory(name, create=create, size=size, track=False)
    shm = SharedMemory(name, create=create, size=size)
    # Before 3.13 every SharedMemory, attached ones too, is registered with the
    # resource tracker, which unlinks it when *this* process exits, under the
    # feet of the other users.  The registry unlinks segments instead.
    resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    return shm


def shm_create(name: str, size: int) -> SharedMemory:
    """Create segment ``name`` of ``size`` bytes, mode 0600 (other users cannot attach).

    A leftover of ours under that name (from a crashed run) is unlinked
    first: the registry only hands out names it owns.
    """
    try:
        try:
            _posixshmem.shm_unlink("/" + name)
        except FileNotFoundError:
            pass
        return _open(name, True, size)
    except (FileExistsError, PermissionError) as e:
        code = errno.EEXIST if isinstance(e, FileExistsError) else errno.EACCES
        raise NetmapError(code, f"shared memory {_shm_path(name)} exists and is not ours "
                                f"to replace: {_FIX}") from None


def shm_attach(name: str) -> SharedMemory:
    """Map the existing segment ``name``."""
    try:
        return _open(name, False)
    except FileNotFoundError:
        raise NetmapError(errno.ENOENT,
                          f"shared memory {_shm_path(name)} does not exist: its owner closed it "
                          "or never created it"
                          ) from None
    except PermissionError:
        raise NetmapError(errno.EACCES,
                          f"shared memory {_shm_path(name)} belongs to another user"
                          ) from None


def shm_unlink(name: str) -> None:
    """Remove segment ``name``; processes that mapped it keep their mapping."""
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on file ``path`` (created 0600) for the block.

    The kernel drops the lock when the holder dies, so a crash never leaves
    the registry locked.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class RangeLock:
    """Exclusive locks on single bytes of one file: many small cross-process locks
    (a VALE switch's rings) behind one descriptor.

    ``fcntl`` record locks: the kernel drops them when the holder dies, so a
    sender killed mid-batch never leaves a ring locked.  Record locks belong
    to the process, so a thread lock makes the threads of one process take
    turns as well.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._threads = threading.Lock()

    def acquire(self, i: int) -> None:
        self._threads.acquire()
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, i, os.SEEK_SET)

    def release(self, i: int) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, i, os.SEEK_SET)
        self._threads.release()

    def close(self) -> None:
        os.close(self._fd)


def _stat(pid: int) -> tuple[bytes, int] | None:
    """(state, start time) from /proc/PID/stat, None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ')': parse after the last ')'.
    # fields[0] is field 3, the state; fields[19] is field 22, the start time.
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0], int(fields[19])


def process_token(pid: int | None = None) -> int:
    """An identity of process ``pid`` (default: us) that changes when the pid is reused.

    Linux: its start time.  Elsewhere 0 ("no token"): macOS and FreeBSD give
    a start time only through ``sysctl(KERN_PROC)``, whose ``kinfo_proc``
    layout differs per OS and release.  Without a token a reused pid reads
    as alive until that process exits: a late cleanup, never a lost port.
    """
    if not _PROC:
        return 0
    st = _stat(os.getpid() if pid is None else pid)
    return st[1] if st else 0


def process_alive(pid: int, token: int = 0) -> bool:
    """True while process ``pid`` runs (and, if ``token`` is non-zero, is still that process).

    A zombie counts as dead: it will never touch a ring again, and its
    parent may not reap it for a long time.
    """
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False  # kill() would address a process group
    if _PROC:
        st = _stat(pid)
        if st is None or st[0] in (b"Z", b"X", b"x"):
            return False
        return not token or st[1] == token
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process, alive
    return True


def user_tag() -> str:
    """Our uid: it names our run-time directory and our segments."""
    return str(os.getuid())


def check_private_dir(path: str) -> None:
    """Create ``path`` mode 0700 if missing; refuse it unless it is ours and private.

    A directory another user can write would let them plant a registry that
    points us at their shared memory.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    mode = st.st_mode & 0o777
    if st.st_uid != os.getuid():
        raise NetmapError(errno.EACCES,
                          f"pynetmap run-time directory {path} is owned by uid {st.st_uid}, "
                          "not by you: remove it or set PYNETMAP_RUNDIR to a directory of yours")
    if mode & 0o077:
        raise NetmapError(errno.EACCES,
                          f"pynetmap run-time directory {path} (uid {st.st_uid}) has mode "
                          f"{mode:04o}, others may use it: chmod 700 it, or set "
                          "PYNETMAP_RUNDIR to a directory of yours")
