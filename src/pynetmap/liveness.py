"""Is a process still alive?  Needed because a peer killed with SIGKILL
never closes its ports: the survivor and the registry sweep ask this.

A zombie (dead but not yet reaped by its parent) counts as dead: it will
never touch a ring again.  On Linux a (pid, start time) token also guards
against pid reuse; elsewhere the check is ``kill(pid, 0)`` (POSIX) or the
process exit code (Windows), which cannot see zombies or reuse.
"""

from __future__ import annotations

import os
import sys


def _linux_stat(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2 :].split()
    # rest[0] is the state, rest[19] the start time (field 22 of stat(5)).
    return rest[0].decode(), int(rest[19])


def token(pid: int | None = None) -> int:
    """An identity token of ``pid`` (default: this process) that changes on pid reuse."""
    pid = os.getpid() if pid is None else pid
    if sys.platform.startswith("linux"):
        st = _linux_stat(pid)
        return st[1] if st else 0
    return 0


def alive(pid: int, tok: int = 0) -> bool:
    """True while process ``pid`` (with identity ``tok`` if non-zero) runs."""
    if pid == os.getpid():
        return True
    if sys.platform.startswith("linux"):
        st = _linux_stat(pid)
        if st is None or st[0] in ("Z", "X", "x"):
            return False
        return not tok or st[1] == tok
    if sys.platform == "win32":
        return _win_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _win_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    code = ctypes.c_ulong()
    try:
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
    finally:
        kernel32.CloseHandle(handle)
    return code.value == 259  # STILL_ACTIVE
