"""The OS layer on Windows, written to Windows' documented semantics.

Shared memory is a named file mapping, locks are ``msvcrt.locking``,
liveness asks ``OpenProcess``/``WaitForSingleObject``/``GetProcessTimes``.
Never ``os.kill(pid, 0)`` here: on Windows ``kill`` with any signal but
CTRL_C_EVENT/CTRL_BREAK_EVENT terminates the process, and ``CTRL_C_EVENT``
is 0.

Every system call goes through one :class:`WinAPI` object, made on first
use; tests install a fake with :func:`set_api`, which is how this module's
logic runs (and is tested) on Linux.  Nothing here touches ``ctypes.windll``
or ``msvcrt`` at import time.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import os
import re
import threading
import time
from collections.abc import Iterator
from multiprocessing.shared_memory import SharedMemory

from ..errors import NetmapError
from . import _doorbell
from ._doorbell import ring
from ._shm import shm_close

__all__ = [
    "Doorbell", "RangeLock", "WinAPI", "check_private_dir", "locked", "process_alive",
    "process_token", "ring", "set_api", "shm_attach", "shm_close", "shm_create", "shm_unlink",
    "user_tag",
]

SYNCHRONIZE = 0x00100000
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
ERROR_INVALID_PARAMETER = 87
WAIT_OBJECT_0 = 0

#: Seconds between attempts on a held lock.
_LOCK_POLL = 0.01
_FIX = "close the process that holds it, or set PYNETMAP_RUNDIR to use other names"


class WinAPI:
    """The Windows calls this module makes, through ctypes and ``msvcrt``.

    A fake with the same methods stands in for it in tests (:func:`set_api`).
    """

    def __init__(self) -> None:
        import ctypes
        import msvcrt
        from ctypes import wintypes

        k = ctypes.WinDLL("kernel32", use_last_error=True)
        k.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        k.OpenProcess.restype = wintypes.HANDLE
        k.WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
        k.WaitForSingleObject.restype = wintypes.DWORD
        k.GetProcessTimes.argtypes = (wintypes.HANDLE,) + (ctypes.POINTER(wintypes.FILETIME),) * 4
        k.GetProcessTimes.restype = wintypes.BOOL
        k.CloseHandle.argtypes = (wintypes.HANDLE,)
        k.CloseHandle.restype = wintypes.BOOL
        self._k = k
        self._ctypes = ctypes
        self._filetime = wintypes.FILETIME
        self._msvcrt = msvcrt

    def open_process(self, access: int, pid: int) -> tuple[int, int]:
        """``(handle, 0)``, or ``(0, GetLastError())`` when OpenProcess fails."""
        handle = self._k.OpenProcess(access, False, pid)
        return (handle, 0) if handle else (0, self._ctypes.get_last_error())

    def wait(self, handle: int, milliseconds: int) -> int:
        """WaitForSingleObject: WAIT_OBJECT_0 once a process has exited."""
        return self._k.WaitForSingleObject(handle, milliseconds)

    def creation_time(self, handle: int) -> int:
        """The process's creation time (FILETIME, 100 ns units), 0 if unknown."""
        times = [self._filetime() for _ in range(4)]
        if not self._k.GetProcessTimes(handle, *(self._ctypes.byref(t) for t in times)):
            return 0
        return times[0].dwHighDateTime << 32 | times[0].dwLowDateTime

    def close_handle(self, handle: int) -> None:
        self._k.CloseHandle(handle)

    def try_lock(self, fd: int, at: int = 0) -> bool:
        """Lock byte ``at`` of ``fd`` without waiting; False if another holder has it."""
        os.lseek(fd, at, os.SEEK_SET)  # msvcrt locks bytes from the file position
        try:
            self._msvcrt.locking(fd, self._msvcrt.LK_NBLCK, 1)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EDEADLOCK):
                return False
            raise
        return True

    def unlock(self, fd: int, at: int = 0) -> None:
        os.lseek(fd, at, os.SEEK_SET)
        self._msvcrt.locking(fd, self._msvcrt.LK_UNLCK, 1)


_api: WinAPI | None = None


def set_api(api: WinAPI | None) -> None:
    """Route every Windows call through ``api`` (tests); None: the real one, made on next use."""
    global _api
    _api = api


def _win() -> WinAPI:
    global _api
    if _api is None:
        _api = WinAPI()
    return _api


def shm_create(name: str, size: int) -> SharedMemory:
    """Create the file mapping ``name`` (session-local) of ``size`` bytes.

    Its default security descriptor is our token's, so other ordinary
    users cannot open it.  A mapping exists only while some process holds
    a handle to it, so a name in use is never a leftover of a dead run.
    """
    try:
        return SharedMemory(name, create=True, size=size)
    except (FileExistsError, PermissionError) as e:
        code = errno.EEXIST if isinstance(e, FileExistsError) else errno.EACCES
        raise NetmapError(code, f"shared memory {name} is in use by another process: {_FIX}"
                          ) from None


def shm_attach(name: str) -> SharedMemory:
    """Open the existing file mapping ``name``.

    Its ``size`` is rounded up to a page on Windows: callers keep the true
    size in the segment's own header.  ``SharedMemory(name)`` opens only an
    existing mapping (a bare ``mmap`` with a tagname would silently create one).
    """
    try:
        return SharedMemory(name)
    except FileNotFoundError:
        raise NetmapError(errno.ENOENT,
                          f"shared memory {name} does not exist: its owner closed it "
                          "or never created it") from None
    except PermissionError:
        raise NetmapError(errno.EACCES,
                          f"shared memory {name} belongs to another user") from None


def shm_unlink(name: str) -> None:
    """Nothing to do: a Windows file mapping has no name to remove; it vanishes
    with the last handle to it, a crashed holder's included."""


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold an exclusive lock on byte 0 of file ``path`` (created) for the block.

    ``msvcrt.locking`` rather than a named mutex: the lock belongs to the
    file, so ``PYNETMAP_RUNDIR`` scopes it exactly as on POSIX, and Windows
    releases a dead holder's lock with its handles.  Its blocking mode
    (LK_LOCK) gives up after 10 attempts a second apart, so we poll the
    non-blocking mode ourselves: shorter waits, and no giving up.
    """
    api = _win()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while not api.try_lock(fd):
            time.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            # Explicitly: Windows frees the locks of a closed file only "eventually".
            api.unlock(fd)
    finally:
        os.close(fd)


class RangeLock:
    """Exclusive locks on single bytes of one file (see the POSIX one): byte-range
    ``msvcrt.locking``, polled because its blocking mode gives up after 10 s."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._threads = threading.Lock()

    def acquire(self, i: int) -> None:
        self._threads.acquire()
        api = _win()
        while not api.try_lock(self._fd, i):
            time.sleep(0)

    def release(self, i: int) -> None:
        _win().unlock(self._fd, i)
        self._threads.release()

    def close(self) -> None:
        os.close(self._fd)


def process_token(pid: int | None = None) -> int:
    """Creation time of process ``pid`` (default: us); 0 if it cannot be opened.

    A reused pid belongs to a process with another creation time.
    """
    api = _win()
    handle, _ = api.open_process(PROCESS_QUERY_LIMITED_INFORMATION,
                                 os.getpid() if pid is None else pid)
    if not handle:
        return 0
    try:
        return api.creation_time(handle)
    finally:
        api.close_handle(handle)


def process_alive(pid: int, token: int = 0) -> bool:
    """True while process ``pid`` runs (and, if ``token`` is non-zero, is still that process).

    A process object outlives its process while anyone holds a handle, so
    an open handle proves nothing: the zero-timeout wait tells whether it
    has exited.
    """
    if pid == os.getpid():
        return True
    api = _win()
    handle, error = api.open_process(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, pid)
    if not handle:
        # ERROR_INVALID_PARAMETER: no process has this pid.  Anything else
        # (ERROR_ACCESS_DENIED: a protected or another user's process) means
        # it exists; its token cannot be checked then.
        return error != ERROR_INVALID_PARAMETER
    try:
        if api.wait(handle, 0) == WAIT_OBJECT_0:
            return False
        return not token or api.creation_time(handle) == token
    finally:
        api.close_handle(handle)


def user_tag() -> str:
    """Our user name reduced to ``[A-Za-z0-9_]``: it names our directory and segments.

    Windows has no small numeric uid; the SID would make names too long.
    """
    try:
        name = getpass.getuser()
    except (ImportError, OSError):  # no USERNAME in the environment
        name = ""
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "user"


def check_private_dir(path: str) -> None:
    """Create ``path`` if missing.

    No permission check: Windows ignores POSIX modes, and the default place
    (under the per-user temp directory) is already private by its ACL.  A
    ``PYNETMAP_RUNDIR`` elsewhere is the user's choice; checking its ACL
    would need the security API for little gain.
    """
    os.makedirs(path, exist_ok=True)


class Doorbell(_doorbell.Doorbell):
    """The doorbell, where a WSAECONNRESET on receive means "nothing waiting".

    Windows reports on a UDP socket's next receive that an earlier send of
    it hit a closed port.  A doorbell never sends, so it should never see
    one; if it does, no datagram stands behind it.  (Switching the report
    off takes ``WSAIoctl(SIO_UDP_CONNRESET)``, which ``socket.ioctl`` does not
    accept.)
    """

    _EMPTY = (BlockingIOError, ConnectionResetError)
