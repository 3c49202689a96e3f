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
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

from . import osl

State = dict[str, Any]

#: serializes this process's threads over the registry and its cache of mapped
#: regions (a port closing in one thread while another opens on the same region)
thread_lock = threading.RLock()
#: per open transaction (innermost last): what to undo if it fails
_journals: list[list[Callable[[], None]]] = []
#: per open transaction: what to run when the outermost one ends, whatever its outcome
_tidies: list[list[Callable[[], None]]] = []


def rundir() -> str:
    """The private directory holding the registry; created 0700 on first use."""
    path = os.environ.get("PYNETMAP_RUNDIR")
    if not path:
        path = os.path.join(tempfile.gettempdir(), f"pynetmap-{osl.user_tag()}")
    osl.check_private_dir(path)
    return path


def shm_prefix() -> str:
    """Prefix of this registry's shared-memory names (short: macOS allows 31 chars)."""
    digest = hashlib.sha1(os.path.abspath(rundir()).encode()).hexdigest()[:8]
    return f"pynm{osl.user_tag()[:8]}_{digest}_"


def tidy(fn: Callable[[], None]) -> None:
    """Have ``fn`` run when the outermost transaction ends, committed or not: for
    what a transaction took only to look (a region mapped for its bookkeeping,
    which no port of this process holds afterwards).  Outside one: at once."""
    if _tidies:
        _tidies[-1].append(fn)
    else:
        fn()


def undo(fn: Callable[[], None]) -> None:
    """Have ``fn`` run if the current transaction fails (rollback of what is not JSON).

    The registry file is only written when a transaction succeeds; shared
    memory created and buffers taken from a region's bitmap are undone here.
    Outside a transaction this does nothing.
    """
    if _journals:
        _journals[-1].append(fn)


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
    """Lock the registry, sweep dead processes, yield the state, save it.

    One transaction is one rollback: if the body raises, the registry file
    is left as it was and every :func:`undo` action of the body runs.
    ``state["swept"]`` tells how many opens of dead processes the sweep
    released.
    """
    d = rundir()
    with thread_lock, osl.locked(os.path.join(d, "lock")):
        _tidies.append([])
        try:
            path = os.path.join(d, "registry.json")
            state = _load(path)
            swept = sweep(state)
            # A pair freed by the sweep must not be found by this transaction.  Its
            # segments are unlinked now, so the file must say so now: a body that
            # then fails leaves the registry as it was after the sweep, not before.
            if collect(state) or swept:
                _save(path, state)
            state["swept"] = swept
            _journals.append([])
            try:
                yield state
            except BaseException:
                for fn in reversed(_journals.pop()):
                    with contextlib.suppress(Exception):
                        fn()
                raise
            _journals.pop()
            del state["swept"]
            collect(state)
            _save(path, state)
        finally:
            fns = _tidies.pop()
            if _tidies:
                _tidies[-1].extend(fns)  # the enclosing transaction may still use them
            else:
                for fn in fns:
                    with contextlib.suppress(Exception):
                        fn()


def opens_of(record: dict) -> Iterator[tuple[str, dict]]:
    """All open records of a port record, with the endpoint they belong to."""
    for ep, eprec in record["endpoints"].items():
        for o in eprec["opens"]:
            yield ep, o


def sweep(state: State) -> int:
    """Release the opens of dead processes; return how many were released."""
    from .register import release_open

    released = 0
    for record in list(state["ports"].values()):
        for _ep, o in list(opens_of(record)):
            if not osl.process_alive(o["pid"], o["token"]):
                release_open(state, record, o)
                released += 1
    return released


def collect(state: State) -> bool:
    """Forget ports with no opens and unlink regions with no ports; True if it did."""
    before = (len(state["ports"]), len(state["parents"]), len(state.get("switches", {})),
              len(state["regions"]))
    for name, record in list(state["ports"].items()):
        if not any(True for _ in opens_of(record)):
            del state["ports"][name]
    parents = {r.get("parent") for r in state["ports"].values()}
    for name in list(state["parents"]):
        if name not in parents:
            del state["parents"][name]
    switches = {r.get("switch") for r in state["ports"].values() if r["kind"] == "vale"}
    for name in list(state.get("switches", {})):
        if name not in switches:  # its ports went without their release (a wiped registry)
            osl.shm_unlink(state["switches"].pop(name)["shm"])
    used = {str(r["mem_id"]) for r in state["ports"].values()}
    for mid in list(state["regions"]):
        if mid not in used:
            osl.shm_unlink(state["regions"].pop(mid)["shm"])
    return before != (len(state["ports"]), len(state["parents"]),
                      len(state.get("switches", {})), len(state["regions"]))


def new_mem_id(state: State) -> int:
    mid = state["next_mem_id"]
    state["next_mem_id"] = mid + 1
    return mid
