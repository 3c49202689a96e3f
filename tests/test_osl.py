"""The OS layer: the POSIX module for real on Linux, the Windows module's logic
with its system calls faked, and no ``kill(pid, 0)`` anywhere on a Windows path.

Waits are bounded and nothing is decided by timing: processes hand over
with lines on pipes, and datagrams on loopback are awaited with ``select``.
"""

from __future__ import annotations

import ast
import asyncio
import errno
import gc
import getpass
import inspect
import os
import select
import selectors
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import pynetmap.osl
from pynetmap.errors import NetmapError
from pynetmap.osl import windows

if sys.platform != "win32":
    import fcntl

    from pynetmap.osl import posix

linux = pytest.mark.skipif(not sys.platform.startswith("linux"),
                           reason="uses /proc, /dev/shm and waitid(WNOWAIT)")

API = pynetmap.osl.__all__
TIMEOUT = 30  # seconds: the bound on every wait for another process


def _one_line(e: BaseException) -> str:
    s = str(e)
    assert "\n" not in s
    return s


def _child(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _readline(p: subprocess.Popen) -> str:
    r, _, _ = select.select([p.stdout], [], [], TIMEOUT)
    assert r, "child did not answer"
    return p.stdout.readline().strip()


# -- the package --------------------------------------------------------------------------


def test_package_picks_one_module_with_the_same_api() -> None:
    impl = windows if sys.platform == "win32" else posix
    for name in API:
        assert getattr(pynetmap.osl, name) is getattr(impl, name)
        if sys.platform != "win32":
            p, w = getattr(posix, name), getattr(windows, name)
            assert inspect.signature(p) == inspect.signature(w), name
    for meth in ("__init__", "fileno", "drain", "drain_all", "sleep", "close"):
        assert inspect.signature(getattr(windows.Doorbell, meth)) == inspect.signature(
            getattr(pynetmap.osl.Doorbell, meth))


def test_windows_module_imports_without_touching_windows() -> None:
    out = subprocess.run([sys.executable, "-c",
                          "import pynetmap.osl.windows as w; print(w._api is None)"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


# -- POSIX shared memory ------------------------------------------------------------------


@pytest.fixture
def shm_name() -> Iterator[str]:
    name = f"pynmt{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield name
    posix.shm_unlink(name)


def _mapped(name: str) -> bool:
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
        return f"/dev/shm/{name}" in f.read()


ATTACHER = """
    import sys
    from pynetmap.osl import posix
    shm = posix.shm_attach(sys.argv[1])
    assert bytes(shm.buf[:5]) == b"hello"
    shm.buf[5:10] = b"world"
    assert posix.shm_close(shm)
"""


@linux
def test_shm_create_attach_in_unrelated_process_unlink(shm_name: str) -> None:
    shm = posix.shm_create(shm_name, 8192)
    path = f"/dev/shm/{shm_name}"
    assert os.stat(path).st_mode & 0o777 == 0o600
    shm.buf[:5] = b"hello"
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(ATTACHER), shm_name],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    # The attacher's exit did not unlink it (no resource tracker doing so).
    assert os.path.exists(path)
    assert bytes(shm.buf[:10]) == b"helloworld"
    posix.shm_unlink(shm_name)
    assert not os.path.exists(path)
    posix.shm_unlink(shm_name)  # already gone: fine
    assert bytes(shm.buf[:5]) == b"hello"  # our mapping outlives the name
    assert posix.shm_close(shm)
    assert not _mapped(shm_name)
    assert posix.shm_close(shm)  # twice: fine
    with pytest.raises(NetmapError) as e:
        posix.shm_attach(shm_name)
    assert e.value.errno == errno.ENOENT and path in _one_line(e.value)


@linux
def test_shm_create_replaces_a_leftover_of_ours(shm_name: str) -> None:
    old = posix.shm_create(shm_name, 4096)
    assert posix.shm_close(old)  # closed, not unlinked: a crashed run's leftover
    new = posix.shm_create(shm_name, 3 * 4096)
    assert new.size == 3 * 4096
    assert posix.shm_close(new)


@linux
@pytest.mark.parametrize("kind", ["ndarray", "frombuffer", "array slice", "memoryview"])
def test_shm_close_leaves_live_views_working(shm_name: str, kind: str) -> None:
    shm = posix.shm_create(shm_name, 4096)
    if kind == "ndarray":
        view = np.ndarray((16,), np.uint8, buffer=shm.buf)  # holds the mmap, no export
    elif kind == "frombuffer":
        view = np.frombuffer(shm.buf, np.uint8)
    elif kind == "array slice":
        view = np.frombuffer(shm.buf, np.uint8)[100:116]
    else:
        view = shm.buf[0:16]
    assert posix.shm_close(shm) is False
    assert shm.buf is None
    view[:4] = np.full(4, 7, np.uint8)
    assert bytes(view[:4]) == b"\x07\x07\x07\x07"  # still mapped, no crash
    assert _mapped(shm_name)
    del view
    gc.collect()
    assert not _mapped(shm_name)  # released with the last view
    assert posix.shm_close(shm)


@linux
@pytest.mark.parametrize("where, exc, code", [
    ("unlink", PermissionError, errno.EACCES),
    ("create", FileExistsError, errno.EEXIST),
    ("create", PermissionError, errno.EACCES),
])
def test_shm_create_name_taken_by_another_user(monkeypatch: pytest.MonkeyPatch, where: str,
                                               exc: type, code: int) -> None:
    shm_name = f"pynmt{os.getpid()}_{uuid.uuid4().hex[:8]}"  # never created

    def refuse(*args: object, **kw: object) -> None:
        raise exc(errno.EPERM if exc is PermissionError else errno.EEXIST, "simulated")

    if where == "unlink":
        monkeypatch.setattr(posix._posixshmem, "shm_unlink", refuse)
    else:
        monkeypatch.setattr(posix, "SharedMemory", refuse)
    with pytest.raises(NetmapError) as e:
        posix.shm_create(shm_name, 4096)
    msg = _one_line(e.value)
    assert e.value.errno == code
    assert f"/dev/shm/{shm_name}" in msg and "PYNETMAP_RUNDIR" in msg


@linux
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0
                    or not shutil.which("setpriv"),
                    reason="needs root (and setpriv) to plant another user's segment")
def test_shm_create_over_a_real_foreign_segment(shm_name: str) -> None:
    """Root plants a segment; an unprivileged child cannot replace it (sticky /dev/shm)."""
    path = f"/dev/shm/{shm_name}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    script = """
        import errno, sys
        from pynetmap.errors import NetmapError
        from pynetmap.osl import posix
        try:
            posix.shm_create(sys.argv[1], 4096)
        except NetmapError as e:
            print(e.errno == errno.EACCES, "\\n" not in str(e), sys.argv[2] in str(e))
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    probe = subprocess.run([*as_nobody, "-c", "import pynetmap.osl.posix"], capture_output=True,
                           text=True, timeout=TIMEOUT, env=env, cwd="/")
    if probe.returncode:
        pytest.skip(f"uid 65534 cannot run this interpreter: {probe.stderr.strip()[-200:]}")
    out = subprocess.run([*as_nobody, "-c", textwrap.dedent(script), shm_name, path],
                         capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]
    assert os.stat(path).st_uid == 0  # untouched


@linux
def test_shm_attach_missing_is_one_line(shm_name: str) -> None:
    with pytest.raises(NetmapError) as e:
        posix.shm_attach(shm_name)
    assert e.value.errno == errno.ENOENT
    assert f"/dev/shm/{shm_name}" in _one_line(e.value)


# -- POSIX lock ---------------------------------------------------------------------------

HOLDER = """
    import sys
    from pynetmap.osl import posix
    with posix.locked(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
"""

PROBER = """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free", flush=True)
    except BlockingIOError:
        print("busy", flush=True)
"""


@linux
def test_locked_excludes_another_process_holding_it(tmp_path: Path) -> None:
    path = str(tmp_path / "lock")
    p = _child(HOLDER, path)
    try:
        assert _readline(p) == "held"
        assert os.stat(path).st_mode & 0o077 == 0
        fd = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        p.stdin.write("go\n")
        p.stdin.flush()
        assert _readline(p) == "released"
    finally:
        p.kill()
        p.wait(TIMEOUT)
    with posix.locked(path):
        pass


@linux
def test_locked_is_seen_by_another_process(tmp_path: Path) -> None:
    path = str(tmp_path / "lock")
    with posix.locked(path):
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(PROBER), path],
                             capture_output=True, text=True, timeout=TIMEOUT)
        assert out.stdout.strip() == "busy", out.stderr
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(PROBER), path],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.stdout.strip() == "free", out.stderr


# -- POSIX liveness -----------------------------------------------------------------------

WAITER = "import sys; sys.stdin.read()"


def _exited_unreaped(p: subprocess.Popen) -> None:
    """Wait until ``p`` has exited, leaving it a zombie (WNOWAIT does not reap)."""
    deadline = time.monotonic() + TIMEOUT
    while os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        assert time.monotonic() < deadline, "child did not exit"
        time.sleep(0.01)


@linux
def test_liveness_self() -> None:
    me = os.getpid()
    assert posix.process_alive(me)
    assert posix.process_token() == posix.process_token(me) != 0
    assert posix.process_alive(me, posix.process_token())


@linux
def test_liveness_child_lifecycle_and_pid_reuse() -> None:
    p = subprocess.Popen([sys.executable, "-c", WAITER], stdin=subprocess.PIPE)
    try:
        token = posix.process_token(p.pid)
        assert token != 0
        assert posix.process_alive(p.pid)
        assert posix.process_alive(p.pid, token)
        assert not posix.process_alive(p.pid, token + 1)  # same pid, another process
    finally:
        p.stdin.close()
        p.wait(TIMEOUT)
    assert not posix.process_alive(p.pid)
    assert not posix.process_alive(p.pid, token)
    assert posix.process_token(p.pid) == 0


@linux
def test_liveness_zombie_is_dead() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        _exited_unreaped(p)
        with open(f"/proc/{p.pid}/stat", "rb") as f:
            assert f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        assert not posix.process_alive(p.pid)
    finally:
        p.wait(TIMEOUT)


@linux
def test_liveness_without_proc_uses_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    """The macOS/FreeBSD path, run on Linux by hiding /proc from the module."""
    monkeypatch.setattr(posix, "_PROC", False)
    assert posix.process_token() == 0
    assert posix.process_alive(os.getpid())
    assert posix.process_alive(1)  # exists; PermissionError when unprivileged: still alive
    assert not posix.process_alive(0)
    assert not posix.process_alive(-1)
    p = subprocess.Popen([sys.executable, "-c", WAITER], stdin=subprocess.PIPE)
    try:
        assert posix.process_alive(p.pid)
    finally:
        p.stdin.close()
        p.wait(TIMEOUT)
    assert not posix.process_alive(p.pid)


# -- POSIX user and run-time directory -----------------------------------------------------


@linux
def test_user_tag_is_uid() -> None:
    assert posix.user_tag() == str(os.getuid())


@linux
def test_check_private_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "a" / "run"
    posix.check_private_dir(str(d))
    assert d.is_dir() and d.stat().st_mode & 0o077 == 0
    posix.check_private_dir(str(d))  # exists and is private: fine

    d.chmod(0o755)
    with pytest.raises(NetmapError) as e:
        posix.check_private_dir(str(d))
    msg = _one_line(e.value)
    assert e.value.errno == errno.EACCES and str(d) in msg and "0755" in msg

    d.chmod(0o700)
    me = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: me + 1)  # as if another user owned it
    with pytest.raises(NetmapError) as e:
        posix.check_private_dir(str(d))
    msg = _one_line(e.value)
    assert str(d) in msg and f"uid {me}" in msg and "PYNETMAP_RUNDIR" in msg


# -- the doorbell (shared by both modules; run on the OS we are on) -------------------------


def _collect(bell: pynetmap.osl.Doorbell, want: int) -> int:
    """Drain until ``want`` datagrams arrived, waiting with select (bounded)."""
    got = 0
    while got < want:
        r, _, _ = select.select([bell], [], [], TIMEOUT)
        assert r, f"only {got} of {want} datagrams arrived"
        got += bell.drain(want - got)
    return got


def test_doorbell_ring_wakes_sleep() -> None:
    bell = pynetmap.osl.Doorbell()
    try:
        assert 0 < bell.address < 65536
        assert pynetmap.osl.ring(bell.address)
        assert bell.sleep(TIMEOUT)
        assert not bell.sleep(0)  # drained
    finally:
        bell.close()


def test_doorbell_drain_counts() -> None:
    bell = pynetmap.osl.Doorbell()
    try:
        assert bell.drain(5) == 0 and bell.drain_all() == 0
        for _ in range(3):
            assert pynetmap.osl.ring(bell.address)
        r, _, _ = select.select([bell], [], [], TIMEOUT)
        assert r
        assert bell.drain(1) == 1
        assert _collect(bell, 2) == 2
        assert bell.drain(5) == 0
    finally:
        bell.close()


def test_doorbell_stray_datagram_does_not_keep_it_readable() -> None:
    bell = pynetmap.osl.Doorbell()
    foreign = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        foreign.sendto(b"x" * 60000, ("127.0.0.1", bell.address))  # large: consumed whole
        assert bell.sleep(TIMEOUT)
        assert not bell.sleep(0)
    finally:
        foreign.close()
        bell.close()


def test_ring_to_a_closed_doorbell_never_raises() -> None:
    gone = pynetmap.osl.Doorbell()
    address = gone.address
    gone.close()
    for _ in range(3):
        assert pynetmap.osl.ring(address) in (True, False)
    bell = pynetmap.osl.Doorbell()  # ringing a live one afterwards still works
    try:
        assert pynetmap.osl.ring(bell.address)
        assert bell.sleep(TIMEOUT)
    finally:
        bell.close()


def test_doorbell_with_selectors_and_asyncio() -> None:
    bell = pynetmap.osl.Doorbell()
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(bell, selectors.EVENT_READ)
            assert pynetmap.osl.ring(bell.address)
            assert sel.select(TIMEOUT)
        assert bell.drain_all() == 1

        async def woken() -> bool:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            loop.add_reader(bell.fileno(), lambda: fut.done() or fut.set_result(True))
            try:
                assert pynetmap.osl.ring(bell.address)
                return await asyncio.wait_for(fut, TIMEOUT)
            finally:
                loop.remove_reader(bell.fileno())

        assert asyncio.run(woken())
    finally:
        bell.close()


def test_windows_doorbell_takes_connection_reset_as_empty() -> None:
    class ResetSocket:
        def recv_into(self, buf: bytearray) -> int:
            raise ConnectionResetError(errno.ECONNRESET, "WSAECONNRESET")

    bell = windows.Doorbell()
    bell.close()
    bell._sock = ResetSocket()  # type: ignore[assignment]
    assert bell.drain(5) == 0
    assert bell.drain_all() == 0


# -- the Windows module's logic, its system calls faked ------------------------------------

WAIT_TIMEOUT = 0x102


class FakeProcess:
    def __init__(self, created: int, exited: bool = False) -> None:
        self.created = created
        self.exited = exited


class FakeWin(windows.WinAPI):
    """Processes by pid: a FakeProcess, or the error OpenProcess fails with."""

    def __init__(self, procs: dict[int, FakeProcess | int]) -> None:
        self.procs = procs
        self.open: dict[int, FakeProcess] = {}
        self.opens = self.closes = 0
        self.access: list[int] = []
        self.lock_refusals = 0
        self.locks: list[tuple[str, int]] = []

    def open_process(self, access: int, pid: int) -> tuple[int, int]:
        self.access.append(access)
        proc = self.procs.get(pid, windows.ERROR_INVALID_PARAMETER)
        if isinstance(proc, int):
            return 0, proc
        self.opens += 1
        handle = 0x100 + 4 * self.opens
        self.open[handle] = proc
        return handle, 0

    def wait(self, handle: int, milliseconds: int) -> int:
        assert milliseconds == 0
        return windows.WAIT_OBJECT_0 if self.open[handle].exited else WAIT_TIMEOUT

    def creation_time(self, handle: int) -> int:
        return self.open[handle].created

    def close_handle(self, handle: int) -> None:
        del self.open[handle]
        self.closes += 1

    def try_lock(self, fd: int) -> bool:
        os.fstat(fd)  # a real, open descriptor
        if self.lock_refusals:
            self.lock_refusals -= 1
            self.locks.append(("refused", fd))
            return False
        self.locks.append(("locked", fd))
        return True

    def unlock(self, fd: int) -> None:
        self.locks.append(("unlocked", fd))


LIVE, EXITED, DENIED, REUSED = 4242, 4243, 4244, 4245


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWin]:
    """The fake API installed; ``os.kill`` booby-trapped for the whole test."""

    def no_kill(*args: object) -> None:
        raise AssertionError(f"os.kill{args} on a Windows path")

    monkeypatch.setattr(os, "kill", no_kill)
    api = FakeWin({
        LIVE: FakeProcess(created=132_000_000_000_000_001),
        EXITED: FakeProcess(created=132_000_000_000_000_002, exited=True),
        DENIED: 5,  # ERROR_ACCESS_DENIED
        REUSED: FakeProcess(created=132_000_000_000_000_099),
        os.getpid(): FakeProcess(created=132_000_000_000_000_000),
    })
    windows.set_api(api)
    try:
        yield api
    finally:
        windows.set_api(None)
    assert not api.open and api.opens == api.closes, "a process handle was left open"


def test_windows_alive(fake: FakeWin) -> None:
    assert windows.process_alive(LIVE)
    assert windows.process_alive(LIVE, 132_000_000_000_000_001)
    assert all(a == windows.SYNCHRONIZE | windows.PROCESS_QUERY_LIMITED_INFORMATION
               for a in fake.access)


def test_windows_exited_is_dead(fake: FakeWin) -> None:
    assert not windows.process_alive(EXITED)
    assert not windows.process_alive(EXITED, 132_000_000_000_000_002)


def test_windows_no_such_pid_is_dead(fake: FakeWin) -> None:
    assert not windows.process_alive(31337)
    assert not windows.process_alive(31337, 5)


def test_windows_access_denied_is_alive(fake: FakeWin) -> None:
    assert windows.process_alive(DENIED)
    assert windows.process_alive(DENIED, 123)  # exists; its token cannot be read


def test_windows_reused_pid_is_dead(fake: FakeWin) -> None:
    token_of_the_old_process = 132_000_000_000_000_003
    assert windows.process_alive(REUSED)
    assert not windows.process_alive(REUSED, token_of_the_old_process)


def test_windows_self_is_alive_without_asking(fake: FakeWin) -> None:
    assert windows.process_alive(os.getpid(), 1)
    assert fake.opens == 0


def test_windows_token_is_creation_time(fake: FakeWin) -> None:
    assert windows.process_token(LIVE) == 132_000_000_000_000_001
    assert windows.process_token() == 132_000_000_000_000_000
    assert windows.process_token(31337) == 0
    assert windows.process_token(DENIED) == 0
    assert set(fake.access) == {windows.PROCESS_QUERY_LIMITED_INFORMATION}


def test_windows_locked_retries_until_acquired(fake: FakeWin, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "_LOCK_POLL", 0)
    fake.lock_refusals = 2
    path = str(tmp_path / "lock")
    with windows.locked(path):
        assert [what for what, _ in fake.locks] == ["refused", "refused", "locked"]
    fd = fake.locks[-1][1]
    assert fake.locks[-1] == ("unlocked", fd)
    with pytest.raises(RuntimeError), windows.locked(path):
        raise RuntimeError
    assert fake.locks[-1][0] == "unlocked"  # unlocked on errors too


def test_windows_shm_unlink_is_a_no_op(fake: FakeWin) -> None:
    assert windows.shm_unlink("pynm_anything") is None


@linux
def test_windows_shm_unlink_leaves_a_real_segment(shm_name: str) -> None:
    shm = posix.shm_create(shm_name, 4096)
    windows.shm_unlink(shm_name)
    assert os.path.exists(f"/dev/shm/{shm_name}")
    assert posix.shm_close(shm)


@pytest.mark.parametrize("call, exc, code", [
    ("create", FileExistsError, errno.EEXIST),
    ("create", PermissionError, errno.EACCES),
    ("attach", FileNotFoundError, errno.ENOENT),
    ("attach", PermissionError, errno.EACCES),
])
def test_windows_shm_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, call: str,
                                         exc: type, code: int) -> None:
    def refuse(*args: object, **kw: object) -> None:
        raise exc(code, "simulated")

    monkeypatch.setattr(windows, "SharedMemory", refuse)
    with pytest.raises(NetmapError) as e:
        if call == "create":
            windows.shm_create("pynm_x", 4096)
        else:
            windows.shm_attach("pynm_x")
    assert e.value.errno == code and "pynm_x" in _one_line(e.value)


def test_windows_user_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "Jöhn Doe-1")
    assert windows.user_tag() == "J_hn_Doe_1"

    def no_user() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert windows.user_tag() == "user"


def test_windows_check_private_dir_creates(tmp_path: Path) -> None:
    d = tmp_path / "a" / "run"
    windows.check_private_dir(str(d))
    assert d.is_dir()
    windows.check_private_dir(str(d))


# -- no kill(pid, 0) on a Windows path -----------------------------------------------------

PKG_ROOT = Path(windows.__file__).resolve().parents[1]  # src/pynetmap


def _module_file(dotted: str) -> Path | None:
    rel = Path(*dotted.split(".")[1:])
    for cand in (PKG_ROOT / rel).with_suffix(".py"), PKG_ROOT / rel / "__init__.py":
        if cand.is_file():
            return cand
    return None


def _pynetmap_imports(dotted: str, tree: ast.Module) -> set[str]:
    """The pynetmap modules that module ``dotted`` imports (relative or absolute)."""
    is_pkg = _module_file(dotted).name == "__init__.py"
    package = dotted.split(".") if is_pkg else dotted.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "pynetmap"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "pynetmap":
                continue
            if node.module:  # ``from . import x`` imports x, not the package's __init__
                found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names
                      if _module_file(f"{target}.{a.name}")}
    return {m for m in found if _module_file(m)}


def test_no_kill_on_windows_paths_static() -> None:
    seen: set[str] = set()
    todo = ["pynetmap.osl.windows"]
    while todo:
        dotted = todo.pop()
        if dotted in seen:
            continue
        seen.add(dotted)
        path = _module_file(dotted)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                assert name != "kill", f"{path}:{node.lineno} calls kill()"
        todo += _pynetmap_imports(dotted, tree)
    assert {"pynetmap.osl._doorbell", "pynetmap.osl._shm", "pynetmap.errors"} <= seen


def test_no_kill_on_windows_paths_dynamic(fake: FakeWin) -> None:
    """The ``fake`` fixture makes ``os.kill`` raise; exercise every liveness path."""
    for pid in (LIVE, EXITED, DENIED, REUSED, 31337, 0, -1):
        windows.process_alive(pid)
        windows.process_alive(pid, 7)
        windows.process_token(pid)
