"""Crashes, restarts and refusals: what a SIGKILL, a Ctrl-C, a closed port or a
refused open must not leave behind.

Each test below reproduces one reported bug (the letter is the issue's):

(a) reopening a pipe whose last holder died must give a fresh pipe, never the
    dead pair's rings (stale ``head``, stale packets, ring memory shared with
    the next new pipe);
(b) a NumPy view obtained from a port and used after ``close()`` must work or
    raise, never crash the interpreter;
(c) Ctrl-C during pkt-gen's ``-w`` wait: no traceback, the port is released;
(d) a stray datagram on ``fileno()`` must not make ``arm``/``wait`` spin;
(e) ``pynetmap clean`` reports what it released;
(f) a run-time directory or shared-memory name that another user created
    first: one line naming it, no traceback;
(g) options that are not implemented (``@extmem``) are refused (EOPNOTSUPP);
(h) a refused open leaves no segment and no registry entry behind;

and a crash-restart torture test: rounds of a sender and a receiver process on
one pipe name, one of them (or both) SIGKILLed at a random moment, then a fresh
pair on the same name must move a sequence-numbered stream intact, and nothing
may outlive the last holder.

Only the public API is used; the registry is only *inspected* (through
``transaction()``, whose sweep is part of the contract) and ``/dev/shm`` only
listed.  No assertion depends on timing: every wait is bounded, and bounds
only decide when to give up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

import pynetmap
from pynetmap import POLLIN
from pynetmap.registry import rundir, shm_prefix, transaction

SHM = "/dev/shm"
needs_shm = pytest.mark.skipif(not os.path.isdir(SHM) or not sys.platform.startswith("linux"),
                               reason="needs Linux /dev/shm to list shared-memory segments")


@pytest.fixture(autouse=True)
def private_registry(tmp_path_factory, monkeypatch):
    """A registry of its own for every test here (children inherit it through the
    environment), removed afterwards with any segment a failing core leaked: a bug
    reproduced by one test must not change what the next one sees."""
    d = tmp_path_factory.mktemp("rundir")
    os.chmod(d, 0o700)
    monkeypatch.setenv("PYNETMAP_RUNDIR", str(d))
    prefix = shm_prefix()
    yield d
    with contextlib.suppress(Exception):  # a corrupted registry must not hide the result
        sweep()
    if os.path.isdir(SHM):
        for name in os.listdir(SHM):
            if name.startswith(prefix):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(SHM, name))
    shutil.rmtree(d, ignore_errors=True)


def uniq() -> str:
    return "c" + uuid.uuid4().hex[:10]


def our_segments() -> set[str]:
    """Names of this registry's shared-memory segments in /dev/shm."""
    prefix = shm_prefix()
    return {n for n in os.listdir(SHM) if n.startswith(prefix)}


def segment_ids() -> set[tuple[str, int]]:
    """(name, inode) of this registry's segments: a name created anew counts as new."""
    out = set()
    for name in our_segments():
        try:
            out.add((name, os.stat(os.path.join(SHM, name)).st_ino))
        except FileNotFoundError:
            pass
    return out


def sweep() -> None:
    """Let the registry release what dead processes left (any transaction sweeps)."""
    with transaction():
        pass


def registered(parent: str) -> tuple[list[str], set[str]]:
    """(port names mentioning ``parent``, shm names of all registered regions)."""
    with transaction() as st:
        ports = sorted(k for k in st["ports"] if parent in k)
        regions = {r["shm"].lstrip("/") for r in st["regions"].values()}
    return ports, regions


def opens_by(pid: int) -> list[str]:
    """Registered ports holding any record that names process ``pid``."""

    def has(obj: object) -> bool:
        if isinstance(obj, dict):
            return obj.get("pid") == pid or any(has(v) for v in obj.values())
        if isinstance(obj, list):
            return any(has(v) for v in obj)
        return False

    with transaction() as st:
        return sorted(k for k, rec in st["ports"].items() if has(rec))


def spawn(code: str, *args: object, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def read_until(proc: subprocess.Popen, stream, marker: bytes, timeout: float) -> bytes:
    """Read ``stream`` until ``marker`` appears, EOF, or ``timeout`` seconds (a bound)."""
    fd = stream.fileno()
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        got += chunk
    return got


@contextlib.contextmanager
def held_elsewhere(name: str) -> Iterator[subprocess.Popen]:
    """A child process that holds port ``name`` open for the block, then is SIGKILLed."""
    child = spawn("import pynetmap, time\n"
                  f"port = pynetmap.open({name!r})\n"
                  "print('open', flush=True)\n"
                  "time.sleep(60)\n")
    try:
        assert b"open" in read_until(child, child.stdout, b"open", 20)
        yield child
    finally:
        stop(child)


def stop(proc: subprocess.Popen) -> None:
    """Kill a child we started (if still running) and reap it."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.communicate(timeout=10)
    except (subprocess.TimeoutExpired, ValueError):
        pass


# ---------------------------------------------------------------------------------------
# (a) a dead pair is never reused

HOLD_BOTH = textwrap.dedent("""
    import sys, time, pynetmap
    parent, n = sys.argv[1], int(sys.argv[2])
    a = pynetmap.open(f"netmap:{parent}{{0@conf:slots={n}")
    b = pynetmap.open(f"netmap:{parent}}}0@conf:slots={n}")
    t, r = a.tx_rings[0], b.rx_rings[0]
    t.send([b"STALE%03d" % i + bytes(52) for i in range(7)])
    a.txsync()
    b.rxsync()
    r.release(3)  # 3 consumed, 4 delivered and not released
    b.rxsync()
    print("up", t.head, t.cur, t.tail, r.head, r.cur, r.tail, flush=True)
    time.sleep(60)
""")


@needs_shm
def test_reopen_after_holders_died_gives_fresh_unshared_pipe():
    p, n = uniq(), 64
    sweep()
    child = spawn(HOLD_BOTH, p, n)
    try:
        line = read_until(child, child.stdout, b"\n", 30).decode().split()
        assert line == ["up", "7", "7", str(n - 1), "3", "3", "7"], line
    finally:
        stop(child)  # SIGKILL: both ends die with head/cur advanced and packets in flight
    ports = []
    problems = []
    try:
        # No registry use in between: the open's own transaction sweeps the dead pair.
        a = pynetmap.open(f"netmap:{p}{{0@conf:slots={n}")
        ports.append(a)
        b = pynetmap.open(f"netmap:{p}}}0@conf:slots={n}")
        ports.append(b)
        t, r = a.tx_rings[0], b.rx_rings[0]
        if (t.head, t.cur, t.tail) != (0, 0, n - 1):
            problems.append(f"new TX ring has head/cur/tail {t.head}/{t.cur}/{t.tail}, "
                            f"want 0/0/{n - 1}")
        if (r.head, r.cur, r.tail) != (0, 0, 0):
            problems.append(f"new RX ring has head/cur/tail {r.head}/{r.cur}/{r.tail}, want 0/0/0")
        b.rxsync()
        stale = r.receive().frames()
        if stale:
            problems.append(f"{len(stale)} stale packets received: {stale[0][:8]!r}...")
            r.release(len(stale))
            b.rxsync()
        # A second, different pipe of the same parent: its own rings and buffers.
        c = pynetmap.open(f"netmap:{p}{{1@conf:slots={n}")
        ports.append(c)
        d = pynetmap.open(f"netmap:{p}}}1@conf:slots={n}")
        ports.append(d)
        first = [a.tx_rings[0], a.rx_rings[0], b.tx_rings[0], b.rx_rings[0]]
        second = [c.tx_rings[0], c.rx_rings[0], d.tx_rings[0], d.rx_rings[0]]
        if any(np.shares_memory(x.slots, y.slots) for x in first for y in second):
            problems.append(f"pipe {p}{{1 has its rings on the ring memory of pipe {p}{{0")
        bufs0 = set().union(*(x.slots["buf_idx"].tolist() for x in first))
        bufs1 = set().union(*(y.slots["buf_idx"].tolist() for y in second))
        if bufs0 & bufs1:
            problems.append(f"pipes {p}{{0 and {p}{{1 share {len(bufs0 & bufs1)} buffers")
        if not problems:  # data: what one pipe carries never shows up on the other
            c.tx_rings[0].send([b"PIPE-ONE" + bytes(52)])
            c.txsync()
            a.tx_rings[0].send([b"PIPE-ZERO" + bytes(51)])
            a.txsync()
            b.rxsync()
            d.rxsync()
            got0 = b.rx_rings[0].receive().frames()
            got1 = d.rx_rings[0].receive().frames()
            if got0 != [b"PIPE-ZERO" + bytes(51)] or got1 != [b"PIPE-ONE" + bytes(52)]:
                problems.append(f"pipe 0 received {got0!r}, pipe 1 received {got1!r}")
    finally:
        for port in reversed(ports):
            try:
                port.close()
            except Exception:  # a broken pipe must not hide the report
                pass
    assert not problems, "; ".join(problems)


# ---------------------------------------------------------------------------------------
# (b) views outlive close() without crashing

VIEWS_AFTER_CLOSE = textwrap.dedent("""
    import gc, sys
    import numpy as np
    import pynetmap
    parent, which = sys.argv[1], sys.argv[2]
    a = pynetmap.open(f"netmap:{parent}{{0")
    b = pynetmap.open(f"netmap:{parent}}}0")
    t, r = a.tx_rings[0], b.rx_rings[0]
    t.send([b"hello" + bytes(55)] * 3)
    a.txsync()
    b.rxsync()
    got = r.receive()
    tb = t.reserve(4)
    views = {
        "tx.buf(head)": t.buf(t.head), "tx.bufs": t.bufs, "tx.slots": t.slots,
        "tx.slots['len']": t.slots["len"], "reserve.buf_idx": tb.buf_idx,
        "reserve.len": tb.len, "rx.buf(head)": r.buf(r.head), "rx.bufs": r.bufs,
        "rx.slots": r.slots, "receive.buf_idx": got.buf_idx, "receive.len": got.len,
    }
    if which == "both":
        a.close()
        b.close()  # the last port of the region: it is unlinked
    else:
        a.close()  # b still uses the region
    del t, r
    gc.collect()
    for k, v in views.items():
        try:
            flat = v.reshape(-1)[:1]
            old = flat.copy()  # read
            flat[...] = old  # write
            print(k, "ok", flush=True)
        except Exception as e:
            print(k, "raised", type(e).__name__, flush=True)
    for k, call in (("receive.frames()", lambda: got.frames()),
                    ("reserve.fill()", lambda: tb.fill(b"x" * 60))):
        try:
            call()
            print(k, "ok", flush=True)
        except Exception as e:
            print(k, "raised", type(e).__name__, flush=True)
    if which != "both":
        b.close()
    print("survived", flush=True)
""")


@pytest.mark.parametrize("which", ["both", "one"])
def test_views_used_after_close_never_crash(which):
    proc = spawn(VIEWS_AFTER_CLOSE, uniq(), which)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    out, err = out.decode(), err.decode()
    assert proc.returncode == 0, (
        f"interpreter died with {proc.returncode} "
        f"({'SIGSEGV' if proc.returncode == -signal.SIGSEGV else 'error'}) after: "
        f"{out.splitlines()[-1:] or ['(nothing: at the first view)']}; stderr: {err[-500:]}")
    assert out.splitlines()[-1] == "survived", out


# ---------------------------------------------------------------------------------------
# (c) Ctrl-C during pkt-gen -w


@needs_shm
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child")
def test_ctrl_c_during_pktgen_wait_is_clean():
    p = uniq()
    sweep()
    before = our_segments()
    proc = subprocess.Popen([sys.executable, "-m", "pynetmap.apps.pktgen", "-f", "rx",
                             "-i", f"netmap:{p}{{0", "-w", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        err = read_until(proc, proc.stderr, b"secs for phy reset", 30)
        assert b"Wait 5 secs for phy reset" in err, err.decode()
        mine = our_segments() - before  # the region of its port
        assert mine, "pkt-gen holds its port but no segment of ours appeared"
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=30)
        err += rest
    finally:
        stop(proc)
    text = err.decode()
    problems = []
    # Checked before any registry use of ours could sweep: released by pkt-gen itself.
    if mine & our_segments():
        problems.append(f"pkt-gen (exit {proc.returncode}) left its region {sorted(mine)} "
                        "behind (its port was never closed)")
    if "Traceback" in text:
        problems.append("Ctrl-C printed a traceback:\n" + text)
    assert not problems, "; ".join(problems)
    assert opens_by(proc.pid) == []
    assert registered(p)[0] == []


# ---------------------------------------------------------------------------------------
# (d) stray datagrams on fileno()


def _stray_datagram(port: pynetmap.Port) -> None:
    """One datagram nobody announced, to the socket behind ``port.fileno()``."""
    with socket.socket(fileno=os.dup(port.fileno())) as s:
        family, addr = s.family, s.getsockname()
    with socket.socket(family, socket.SOCK_DGRAM) as out:
        out.sendto(b"stray", addr)
    ready, _, _ = select.select([port.fileno()], [], [], 5)  # a bound, not a threshold
    assert ready, "the datagram did not arrive"


@pytest.mark.skipif(sys.platform == "win32", reason="socket(fileno=) of a dup'd fd")
def test_arm_consumes_stray_wakeup():
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0") as a, pynetmap.open(f"netmap:{p}}}0") as b:
        assert b.arm(POLLIN) == 0
        _stray_datagram(b)
        assert b.arm(POLLIN) == 0  # nothing to receive
        ready, _, _ = select.select([b.fileno()], [], [], 0)
        assert not ready, ("arm() returned 0 (wait for fileno) but fileno() is already "
                           "readable: an event loop would spin")
        # it still wakes on a real publish
        a.tx_rings[0].send([b"r" * 60])
        a.txsync()
        ready, _, _ = select.select([b.fileno()], [], [], 5)
        assert ready
        assert b.arm(POLLIN) & POLLIN


@pytest.mark.skipif(sys.platform == "win32", reason="socket(fileno=) of a dup'd fd")
def test_wait_does_not_spin_on_stray_datagram():
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0"), pynetmap.open(f"netmap:{p}}}0") as b:
        calls = 0
        arm = b.arm

        def counting_arm(events: int = POLLIN) -> int:
            nonlocal calls
            calls += 1
            return arm(events)

        b.arm = counting_arm  # type: ignore[method-assign]
        _stray_datagram(b)
        rev = asyncio.run(b.wait(POLLIN, timeout_ms=300))
        assert rev == 0
        assert calls < 50, f"wait() re-armed {calls} times for one stray datagram (spinning)"


# ---------------------------------------------------------------------------------------
# (e) pynetmap clean counts what it released

HOLD_ONE = textwrap.dedent("""
    import sys, time, pynetmap
    p = pynetmap.open(sys.argv[1])
    print("up", flush=True)
    time.sleep(60)
""")


@needs_shm
def test_clean_reports_what_it_released(capsys):
    from pynetmap.__main__ import main as cli

    p = uniq()
    sweep()
    before = our_segments()
    child = spawn(HOLD_ONE, f"netmap:{p}{{0")
    try:
        assert read_until(child, child.stdout, b"up\n", 30) == b"up\n"
        mine = our_segments() - before
        assert mine, "the child holds a pipe end but no segment of ours appeared"
    finally:
        stop(child)  # SIGKILL
    capsys.readouterr()
    assert cli(["clean"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"released (\d+)", out)
    assert m, out
    assert int(m.group(1)) == 1, f"one open of a dead process was released; clean said: {out!r}"
    assert not mine & our_segments()
    assert cli(["clean"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"released 0\b", out), out


# ---------------------------------------------------------------------------------------
# (f) a run-time directory or shm name taken by another user


def run_pktgen_rx(env: dict, name: str) -> tuple[int, str, bool]:
    """pkt-gen rx on ``name``; returns (exit status, stderr, whether it got its port).

    If it opened the port it waits for a packet: it is then stopped with SIGINT
    once it printed ``Ready...``.
    """
    proc = subprocess.Popen([sys.executable, "-m", "pynetmap.apps.pktgen", "-f", "rx", "-i",
                             name, "-n", "1", "-w", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        err = read_until(proc, proc.stderr, b"Ready...", 30)
        opened = b"Ready..." in err
        if opened:
            proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=30)
        return proc.returncode, (err + rest).decode(), opened
    finally:
        stop(proc)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX ownership")
@pytest.mark.parametrize("case", ["owned-by-another-user", "mode-0755"])
def test_foreign_rundir_gives_one_line_not_traceback(case, tmp_path):
    d = tmp_path / "rundir"
    d.mkdir()
    if case == "owned-by-another-user":
        if os.geteuid() != 0:
            pytest.skip("only root can make a directory owned by another user")
        os.chmod(d, 0o700)
        os.chown(d, 65534, 65534)
    else:
        os.chmod(d, 0o755)
    env = dict(os.environ, PYNETMAP_RUNDIR=str(d))
    rc, err, opened = run_pktgen_rx(env, f"netmap:{uniq()}{{0")
    assert "Traceback" not in err, err
    if case == "owned-by-another-user":
        assert not opened and rc != 0, f"pkt-gen used a directory owned by uid 65534: {err}"
    if not opened:
        assert rc != 0
        assert str(d) in err, f"the message does not name {d}: {err}"


@needs_shm
def test_foreign_shm_name_gives_one_line_not_traceback(tmp_path, monkeypatch):
    """Segment names another user created first (simulated: root makes them immutable,
    so that not even the owner of the registry can remove them)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("needs root and chattr to make /dev/shm names we cannot remove")
    d = tmp_path / "rundir"
    d.mkdir()
    os.chmod(d, 0o700)
    with monkeypatch.context() as m:
        m.setenv("PYNETMAP_RUNDIR", str(d))
        prefix = shm_prefix()
    # Every name the next regions of this fresh registry can get (mem ids are small).
    blocked = [f"{prefix}{i}" for i in range(0, 65)]
    made: list[str] = []
    try:
        for name in blocked:
            path = os.path.join(SHM, name)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            os.close(fd)
            made.append(path)
            os.chown(path, 65534, 65534)
        res = subprocess.run(["chattr", "+i", *made], capture_output=True, timeout=30)
        try:
            os.unlink(made[0])
        except PermissionError:
            pass
        else:
            made.pop(0)
            pytest.skip(f"cannot make /dev/shm names non-removable here: {res.stderr!r}")
        env = dict(os.environ, PYNETMAP_RUNDIR=str(d))
        rc, err, opened = run_pktgen_rx(env, f"netmap:{uniq()}{{0")
        assert "Traceback" not in err, err
        if not opened:
            assert rc != 0
            assert any(name in err for name in blocked), f"the message names no segment: {err}"
    finally:
        if made:
            subprocess.run(["chattr", "-i", *made], capture_output=True, timeout=30)
            for path in made:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


# ---------------------------------------------------------------------------------------
# (g) unimplemented options are refused


def test_extmem_is_refused_not_ignored():
    try:
        port = pynetmap.open(f"netmap:{uniq()}{{0@extmem:file=/tmp/pynetmap-extmem-none")
    except pynetmap.NetmapError as e:
        assert e.errno == errno.EOPNOTSUPP, e
    else:
        port.close()
        pytest.fail("@extmem was silently ignored: the open succeeded without it")


# ---------------------------------------------------------------------------------------
# (h) a refused open leaves nothing behind


@needs_shm
@pytest.mark.parametrize("suffix,conf", [("-3", {}), ("", {"extra_bufs": 10**9})],
                         ids=["ring-3-of-1", "extra_bufs-1e9"])
def test_refused_open_leaves_nothing(suffix, conf):
    p = uniq()
    sweep()
    before, regions = segment_ids(), registered(p)[1]
    try:
        with pytest.raises(pynetmap.NetmapError):
            port = pynetmap.open(f"netmap:{p}{{0{suffix}", **conf)
            port.close()
        left = segment_ids() - before
        assert not left, f"the refused open left segments behind: {sorted(n for n, _ in left)}"
        ports, regions_after = registered(p)
        assert ports == [] and regions_after == regions, (ports, regions_after - regions)
    finally:
        # remove what a failing core leaked (ours, unregistered), so later tests start clean
        known = registered(p)[1]
        for name, _ in segment_ids() - before:
            if name not in known:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(SHM, name))
    # and the name works afterwards
    with pynetmap.open(f"netmap:{p}{{0") as a, pynetmap.open(f"netmap:{p}}}0") as b:
        a.tx_rings[0].send([b"ok" * 30])
        a.txsync()
        b.rxsync()
        assert b.rx_rings[0].receive().frames() == [b"ok" * 30]


def test_refused_open_after_a_crash_does_not_wedge_the_registry():
    """The transaction of a refused open first sweeps a killed holder's pipe (and
    unlinks its region): the registry must say so even though the open is rolled
    back, or every later sweep trips over the missing region."""
    p = uniq()
    with held_elsewhere(f"netmap:{p}{{1") as child:
        pass  # SIGKILLed here: the pipe stays registered until a sweep
    with pytest.raises(pynetmap.NetmapError) as e:
        pynetmap.open(f"netmap:{p}x{{0-3")  # no ring 3: refused after the sweep
    assert e.value.errno == errno.EINVAL
    with pynetmap.open(f"netmap:{p}y{{0") as a, pynetmap.open(f"netmap:{p}y}}0") as b:
        a.tx_rings[0].send([b"ok" * 30])
        a.txsync()
        b.rxsync()
        assert b.rx_rings[0].receive().frames() == [b"ok" * 30]
    assert opens_by(child.pid) == []


@needs_shm
def test_a_dead_holders_region_removed_by_hand_is_forgotten():
    """A registry that lists a dead process's open in a region whose segment is gone
    (removed by hand, or left so by an older version) heals at the next sweep."""
    p = uniq()
    sweep()
    before = our_segments()
    with held_elsewhere(f"netmap:{p}{{1") as child:
        pass
    for name in our_segments() - before:
        os.unlink(os.path.join(SHM, name))
    with pynetmap.open(f"netmap:{p}y{{0"):
        pass
    assert opens_by(child.pid) == [] and registered(p)[0] == []


def test_threads_opening_and_closing_on_one_region_never_find_it_unmapped():
    """One thread's close unmaps the process's mapping of a region after its last
    port; another thread's open in the same region must not pick that mapping from
    the cache just before (it failed with TypeError, and the open leaked)."""
    p = uniq()
    errors: list[str] = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race is short

    def work(n: int) -> None:
        deadline = time.monotonic() + 20
        for _ in range(600):
            if time.monotonic() > deadline:
                break
            try:
                pynetmap.open(f"netmap:{p}{{{n}").close()
            except Exception as e:  # noqa: BLE001 (every failure is the finding)
                errors.append(f"{type(e).__name__}: {e}")

    # another process keeps the region registered, so this process maps and unmaps it
    try:
        with held_elsewhere(f"netmap:{p}{{0"):
            threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    sweep()
    assert registered(p)[0] == []


# ---------------------------------------------------------------------------------------
# crash-restart torture

#: Run in fresh processes (forked from a server that imported numpy and pynetmap
#: and never opened anything), as ``exec(CHILD + entry, {"conn": ..., "params": ...})``.
CHILD = textwrap.dedent('''
    import os, sys, time, traceback
    import numpy as np
    import pynetmap
    from pynetmap import POLLHUP, POLLIN, POLLOUT

    def not_fresh(rings, tx):
        bad = []
        for r in rings:
            if r.head or r.cur or (tx and r.tail != r.num_slots - 1):
                bad.append(f"{'tx' if tx else 'rx'} ring {r.ringid}: head {r.head} "
                           f"cur {r.cur} tail {r.tail} of {r.num_slots}")
        return bad

    def send(p, count, batch, deadline):
        rings = p.tx_rings
        seq = [0] * len(rings)
        while time.monotonic() < deadline:
            if count is not None and min(seq) >= count:
                break
            moved = 0
            for i, r in enumerate(rings):
                want = batch if count is None else min(batch, count - seq[i])
                b = r.reserve(want)
                if not b.count:
                    continue
                idx = b.buf_idx
                s = seq[i] + np.arange(b.count, dtype="<u8")
                r.bufs[idx, :8] = s.view(np.uint8).reshape(-1, 8)
                r.bufs[idx, 8] = r.ringid
                b.len = 60
                r.advance(b.count)
                seq[i] += b.count
                moved += b.count
            if moved:
                p.txsync()
            elif p.poll(POLLOUT, 100) & POLLHUP:
                return ("hup", seq)
        while any(r.tx_pending() for r in rings) and time.monotonic() < deadline:
            if p.poll(POLLOUT, 100) & POLLHUP:
                try:
                    p.txsync()  # what the receiver released before it closed
                except pynetmap.NetmapError:
                    pass
                break
        return ("done", seq, any(r.tx_pending() for r in rings))

    def receive(p, count, deadline):
        rings = p.rx_rings
        exp = [0] * len(rings)
        while time.monotonic() < deadline:
            if count is not None and min(exp) >= count:
                break
            rev = p.poll(POLLIN, 100)
            for i, r in enumerate(rings):
                b = r.receive()
                if not b.count:
                    continue
                head = r.bufs[b.buf_idx, :9]
                seqs = head[:, :8].copy().view("<u8").ravel()
                lens = np.asarray(b.len)
                ok = (np.array_equal(seqs, exp[i] + np.arange(b.count, dtype="<u8"))
                      and (head[:, 8] == r.ringid).all() and (lens == 60).all())
                if not ok or (count is not None and exp[i] + b.count > count):
                    return ("bad", f"rx ring {r.ringid}: expected seq {exp[i]}.. got "
                            f"{seqs[:6].tolist()} ring bytes {head[:6, 8].tolist()} "
                            f"lens {lens[:6].tolist()}")
                exp[i] += b.count
                r.release(b.count)
            if rev & POLLHUP:
                return ("hup", exp)
        p.rxsync()  # hand the last slots back
        return ("done", exp, [r.receive().count for r in rings])

    def run(role, name, count, batch, fresh, rundir, seconds):
        os.environ["PYNETMAP_RUNDIR"] = rundir
        deadline = time.monotonic() + seconds
        tx = role == "send"
        with pynetmap.open(name) as p:
            bad = not_fresh(p.tx_rings if tx else p.rx_rings, tx) if fresh else []
            if bad:
                conn.send(("bad", "not a fresh pipe at open: " + "; ".join(bad)))
                return 2
            conn.send(("up",))
            res = send(p, count, batch, deadline) if tx else receive(p, count, deadline)
        conn.send(res)  # after close
        return 3 if res[0] == "bad" else 0

    try:
        rc = run(**params)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        rc = 1
    conn.close()
    sys.exit(rc)
''')

#: rounds per variant; the seed makes the choices (victim, moment, direction, batch)
#: reproducible, not the exact interleaving
ROUNDS = int(os.environ.get("PYNETMAP_CRASH_ROUNDS", "20"))
SEED = int(os.environ.get("PYNETMAP_CRASH_SEED", "1234567"))
FRESH_COUNT = 2000
_ctx = None


def _mp():
    """A start method that gives fresh processes quickly: a fork server that has
    imported numpy and pynetmap (never opened a port) forks them."""
    global _ctx
    if _ctx is None:
        if "forkserver" in mp.get_all_start_methods():
            _ctx = mp.get_context("forkserver")
            _ctx.set_forkserver_preload(["numpy", "pynetmap"])
        else:
            _ctx = mp.get_context("spawn")
    return _ctx


class Child:
    """A sender or receiver process and its message pipe."""

    def __init__(self, role: str, name: str, count: int | None, batch: int, fresh: bool,
                 seconds: float = 10.0) -> None:
        ctx = _mp()
        self.role, self.name = role, name
        self.conn, theirs = ctx.Pipe(duplex=False)
        params = {"role": role, "name": name, "count": count, "batch": batch, "fresh": fresh,
                  "rundir": rundir(), "seconds": seconds}
        self.proc = ctx.Process(target=exec, daemon=True,
                                args=(CHILD, {"conn": theirs, "params": params,
                                              "__name__": "pynetmap_crash_child"}))
        self.proc.start()
        theirs.close()

    def message(self, timeout: float) -> tuple:
        """The child's next message; ("exited", code) or ("timeout",) instead if none comes."""
        ready = mpc.wait([self.conn, self.proc.sentinel], timeout)
        if self.conn in ready or self.conn.poll(0):
            try:
                return self.conn.recv()
            except EOFError:
                pass
        if ready:
            self.proc.join(5)
            return ("exited", self.proc.exitcode)
        return ("timeout",)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)

    def finish(self, timeout: float = 15) -> int | None:
        self.proc.join(timeout)
        return self.proc.exitcode

    def close(self) -> None:
        self.kill()
        self.conn.close()


def _both_up(children: list[Child], what: str) -> None:
    for c in children:
        msg = c.message(30)
        assert msg == ("up",), f"{what}: {c.role} on {c.name}: {msg}"


VARIANTS = {"plain": "", "exclusive": "/x", "rings2": "@conf:rings=2",
            "slots256": "@conf:slots=256"}


@needs_shm
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_crash_restart_torture(variant):
    suffix = VARIANTS[variant]
    rng = random.Random(f"{SEED}-{variant}")
    parent = uniq()
    nrings = 2 if "rings=2" in suffix else 1
    sweep()
    base_segs = our_segments()
    base_regions = registered(parent)[1]
    children: list[Child] = []
    history: list[str] = []

    def where() -> str:
        return (f"[seed {SEED}, variant {variant}, parent {parent}; rounds: "
                f"{' | '.join(history[-3:])}]")

    def nothing_left(after: str) -> None:
        leaked = our_segments() - base_segs  # before any sweep of ours
        assert not leaked, f"after {after}, segments outlive their last holder: {leaked} {where()}"
        ports, regions = registered(parent)
        assert ports == [], f"after {after}, still registered: {ports} {where()}"
        assert regions == base_regions, (
            f"after {after}, regions left: {regions - base_regions} {where()}")

    try:
        for rnd in range(ROUNDS):
            flip = rng.random() < 0.5  # which end sends
            ends = ("}", "{") if flip else ("{", "}")
            snd_name, rcv_name = (f"netmap:{parent}{e}0{suffix}" for e in ends)
            victim = rng.choice(["sender", "receiver", "both"])
            delay = rng.uniform(0, 0.05)
            batch = rng.choice([1, 7, 64, 512])
            history.append(f"#{rnd} sender {ends[0]} victim {victim} after {delay * 1e3:.0f} ms "
                           f"batch {batch}")
            # -- crash: an endless stream, one of them (or both) SIGKILLed mid-way
            snd = Child("send", snd_name, None, batch, fresh=False)
            rcv = Child("recv", rcv_name, None, batch, fresh=False)
            children += [snd, rcv]
            _both_up([snd, rcv], f"crash phase {where()}")
            time.sleep(delay)  # the random moment (what happens then is not timed)
            dead = {"sender": [snd], "receiver": [rcv], "both": [snd, rcv]}[victim]
            for c in dead:
                c.kill()
            for c in (snd, rcv):
                if c in dead:
                    continue
                msg = c.message(30)
                assert msg[0] == "hup", f"survivor {c.role}: {msg} (want POLLHUP) {where()}"
                assert c.finish() == 0, f"survivor {c.role} exit {c.proc.exitcode} {where()}"
                nothing_left(f"the survivor of round {rnd} exited")
            # -- restart: a fresh pair on the same name moves a stream intact
            snd = Child("send", snd_name, FRESH_COUNT, batch, fresh=True)
            rcv = Child("recv", rcv_name, FRESH_COUNT, batch, fresh=True)
            children += [snd, rcv]
            _both_up([snd, rcv], f"restart after round {rnd} {where()}")
            got = rcv.message(30)
            sent = snd.message(30)
            assert got == ("done", [FRESH_COUNT] * nrings, [0] * nrings), (
                f"receiver after restart: {got}; sender: {sent} {where()}")
            assert sent == ("done", [FRESH_COUNT] * nrings, False), (
                f"sender after restart: {sent} {where()}")
            assert rcv.finish() == 0 and snd.finish() == 0, where()
            nothing_left(f"the restarted pair of round {rnd} exited")
            for c in children:
                c.close()
            children.clear()
    finally:
        for c in children:
            c.close()
