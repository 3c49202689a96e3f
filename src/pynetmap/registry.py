"""The per-user registry of regions and ports: how unrelated processes find
each other's shared memory by port name.

netmap keeps this table in the kernel.  We keep it in a small JSON file in a
private run-time directory (mode 0700), changed only under an exclusive
file lock, and only on the control path (open, close, sweep) -- never per
packet.  Every transaction first *sweeps*: open records of processes that
died without closing (SIGKILL, crash) are released as if they had closed,
and a region with no open port left is unlinked.  That is how stale regions
of dead processes are reclaimed: by the next pynetmap open or close of any
process of the same user, or explicitly by ``pynetmap clean``.

The directory is ``$PYNETMAP_RUNDIR`` if set, else
``<tempdir>/pynetmap-<uid>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

from . import liveness

State = dict[str, Any]

_thread_lock = threading.RLock()
_releasers: dict[str, Callable[[State, dict, dict], None]] = {}


def rundir() -> str:
    """The private directory holding the registry; created 0700 on first use."""
    path = os.environ.get("PYNETMAP_RUNDIR")
    if not path:
        uid = os.getuid() if hasattr(os, "getuid") else os.getlogin()
        path = os.path.join(tempfile.gettempdir(), f"pynetmap-{uid}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    if hasattr(os, "getuid"):
        st = os.stat(path)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise PermissionError(
                f"pynetmap run-time directory {path} must be owned by you with mode 0700"
            )
    return path


def shm_prefix() -> str:
    """Prefix of this registry's shared-memory names (short: macOS allows 31 chars)."""
    digest = hashlib.sha1(os.path.abspath(rundir()).encode()).hexdigest()[:8]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return f"pynm{uid}_{digest}_"


def on_release(kind: str) -> Callable:
    """Register the function that frees a port record of ``kind`` when its last open goes."""

    def deco(fn: Callable[[State, dict, dict], None]) -> Callable:
        _releasers[kind] = fn
        return fn

    return deco


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform == "win32":
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _load(path: str) -> State:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {"next_mem_id": 2, "regions": {}, "ports": {}, "parents": {}}


def _save(path: str, state: State) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, separators=(",", ":"))
    os.replace(tmp, path)


@contextlib.contextmanager
def transaction() -> Iterator[State]:
    """Lock the registry, sweep dead processes, yield the state, save it."""
    d = rundir()
    with _thread_lock, _locked(os.path.join(d, "lock")):
        path = os.path.join(d, "registry.json")
        state = _load(path)
        sweep(state)
        yield state
        collect(state)
        _save(path, state)


def opens_of(record: dict) -> Iterator[tuple[str, dict]]:
    """All open records of a port record, with the endpoint they belong to."""
    for ep, eprec in record["endpoints"].items():
        for o in eprec["opens"]:
            yield ep, o


def sweep(state: State) -> int:
    """Release the opens of dead processes; return how many were released."""
    released = 0
    for record in list(state["ports"].values()):
        for _ep, o in list(opens_of(record)):
            if not liveness.alive(o["pid"], o["token"]):
                release_open(state, record, o)
                released += 1
    return released


def release_open(state: State, record: dict, o: dict) -> None:
    """Drop one open record; free the port when it was the last one."""
    for eprec in record["endpoints"].values():
        if o in eprec["opens"]:
            eprec["opens"].remove(o)
    kind = record["kind"]
    if kind not in _releasers:
        # a sweep may meet a kind this process never opened: its adapter registers it
        import importlib

        importlib.import_module(f"pynetmap.adapters.{kind}")
    _releasers[kind](state, record, o)


def collect(state: State) -> None:
    """Forget ports with no opens and unlink regions with no ports."""
    for name, record in list(state["ports"].items()):
        if not any(True for _ in opens_of(record)):
            del state["ports"][name]
    parents = {r.get("parent") for r in state["ports"].values()}
    for name in list(state["parents"]):
        if name not in parents:
            del state["parents"][name]
    used = {str(r["mem_id"]) for r in state["ports"].values()}
    for mid in list(state["regions"]):
        if mid not in used:
            from .region import unlink

            unlink(state["regions"].pop(mid)["shm"])


def new_mem_id(state: State) -> int:
    mid = state["next_mem_id"]
    state["next_mem_id"] = mid + 1
    return mid
