"""The README's Python examples run, as written, in fresh processes.

Markers (an HTML comment on the line right before a fenced ``python`` block):

- ``<!-- no-test: REASON -->``: not run (a network interface, root...).
- ``<!-- test: process -->``: one process of a multi-process example; consecutive
  such blocks run concurrently, each started once the one before has opened its
  port (the receiver first).

Every other block runs on its own.  Pipe names ``netmap:demo...`` get a parent name
unique to the run; a block that names anything but a pipe must be marked
``no-test``, so the suite never opens a real interface.  A process passes when it
exits 0 with nothing on stderr (a traceback, or the shared-memory warning of a port
left open, fail it) and prints what the block's ``print(...)  # VALUE`` comments say.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(no-test|test):\s*(.*?)\s*-->")
PORT_NAME = re.compile(r"""["'](netmap:[^"']*)["']""")
EXPECTED = re.compile(r"print\(.*\)\s*#\s*(b?'[^']*')\s*$", re.M)
OPENED = "#readme-test: opened"
TIMEOUT = 60.0

# Run before a "process" block: say when the block has opened its port.
PRELUDE = f"""\
import pynetmap as _pn
_open = _pn.open
def _open_and_say(*a, **kw):
    port = _open(*a, **kw)
    print({OPENED!r}, flush=True)
    return port
_pn.open = _open_and_say
del _pn
"""


@dataclass
class Block:
    line: int
    code: str
    marker: tuple[str, str] | None  # (kind, argument)


def readme_blocks() -> list[Block]:
    text = README.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mk = MARKER.fullmatch(before.strip())
        out.append(Block(text.count("\n", 0, m.start()) + 1, m.group(1),
                         (mk.group(1), mk.group(2)) if mk else None))
    return out


def units() -> list[list[Block]]:
    """What to run: single blocks, and groups of consecutive "process" blocks."""
    out: list[list[Block]] = []
    prev_process = False
    for b in readme_blocks():
        if b.marker and b.marker[0] == "no-test":
            prev_process = False
            continue
        is_process = b.marker == ("test", "process")
        if is_process and prev_process:
            out[-1].append(b)
        else:
            out.append([b])
        prev_process = is_process
    return out


def not_a_demo_pipe(b: Block) -> list[str]:
    """Port names of a block that are not pipes of ``demo`` (which the tests rename)."""
    return [n for n in PORT_NAME.findall(b.code)
            if not (n.startswith("netmap:demo") and ("{" in n or "}" in n))]


def test_markers_are_known_and_interfaces_never_run() -> None:
    blocks = readme_blocks()
    assert blocks, "no python blocks found in the README"
    for b in blocks:
        assert b.marker in (None, ("test", "process")) or b.marker[0] == "no-test", (
            f"README.md:{b.line}: unknown marker {b.marker}")
        if b.marker and b.marker[0] == "no-test":
            assert b.marker[1], f"README.md:{b.line}: no-test needs a reason"
            continue
        assert not not_a_demo_pipe(b), (
            f"README.md:{b.line}: {not_a_demo_pipe(b)} are not pipes of 'demo': mark the block "
            "<!-- no-test: REASON --> (tests never open a real interface)")


def test_every_unmarked_block_is_run() -> None:
    run = [b.line for u in units() for b in u]
    expected = [b.line for b in readme_blocks()
                if not (b.marker and b.marker[0] == "no-test")]
    assert run == expected and run


def _start(code: str, parent: str, prelude: str = "") -> subprocess.Popen:
    code = prelude + code.replace("netmap:demo", f"netmap:{parent}")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _wait_opened(proc: subprocess.Popen, deadline: float) -> list[str]:
    """Lines the process printed until it said it opened its port."""
    assert proc.stdout is not None
    lines = []
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
        if not ready:
            pytest.fail("a README process did not open its port in time")
        line = proc.stdout.readline()
        if not line:
            return lines  # it ended early: its exit status and stderr tell why
        if line.rstrip("\n") == OPENED:
            return lines
        lines.append(line)


@pytest.mark.parametrize("unit", units(), ids=lambda u: "README.md:" + "+".join(
    str(b.line) for b in u))
def test_readme_example_runs(unit: list[Block]) -> None:
    for b in unit:  # checked again here: this test must never open a real interface
        if not_a_demo_pipe(b):
            pytest.fail(f"README.md:{b.line} opens {not_a_demo_pipe(b)}: not run")
    parent = "readme" + uuid.uuid4().hex[:8]
    deadline = time.monotonic() + TIMEOUT
    procs: list[tuple[Block, subprocess.Popen, list[str]]] = []
    try:
        for b in unit:
            if len(unit) == 1:
                procs.append((b, _start(b.code, parent), []))
            else:
                p = _start(b.code, parent, PRELUDE)
                procs.append((b, p, _wait_opened(p, deadline)))
        for b, p, early in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            lines = [x.rstrip("\n") for x in early] + out.splitlines()
            lines = [x for x in lines if x != OPENED]
            assert p.returncode == 0 and err == "", (
                f"README.md:{b.line} exited {p.returncode}:\n{err}")
            for want in EXPECTED.findall(b.code):
                assert want in lines, f"README.md:{b.line} should print {want}, printed {lines}"
    finally:
        for _, p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
