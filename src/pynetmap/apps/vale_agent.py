"""The switch agent behind ``vale-ctl -a``: netmap's in-kernel NIC attachment, as a process.

netmap attaches an interface to a VALE switch inside the kernel: the NIC's
rings become a switch port and the kernel forwards between them.  pynetmap
has no kernel, so ``vale-ctl -a valeX:eth0`` starts this agent, a detached
process (its own session, no terminal) that

- opens ``netmap:eth0`` (the Linux NIC adapter: AF_XDP or AF_PACKET) and the
  switch port ``valeX:eth0`` (``vale_attach=True``) in the interface's memory
  region, and with ``-h`` also ``netmap:eth0^`` and ``valeX:eth0^``;
- forwards each pair both ways with :class:`pynetmap.apps.bridge.Bridge`
  (zero copy by buffer swap when the pair shares a region, one thread per
  pair: each thread sleeps in ``wait_any`` on its two ports);
- reports success or the one-line error of the failed open on a status pipe
  to vale-ctl, which returns then;
- exits on SIGTERM (``vale-ctl -d``) or SIGINT, or when the interface
  disappears, closing its ports: the XDP program and the host-stack pair go
  with them.  An agent killed outright leaves opens that the registry's
  sweep releases (and with them the XDP program), as for any dead process.

The agent is driven by a JSON document on its command line (see
:func:`spawn`), so it can forward any pair of port names; vale-ctl is its
only user.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from .. import open as nm_open
from ..errors import NetmapError
from ..port import Port
from .bridge import DEFAULT_BURST, Bridge

#: how often the agent looks whether its interface is still there, in seconds
WATCH_PERIOD = 0.25
#: how long vale-ctl waits for an agent to open its ports (AF_XDP set-up takes a while)
START_TIMEOUT = 30.0


@dataclass
class Pair:
    """Two ports to forward between: ``a`` (the interface side) and ``b`` (the switch side).

    ``share_region`` opens ``b`` in ``a``'s memory region (``mem_id``), so
    the two exchange buffers instead of copying bytes.
    """

    a: str
    b: str
    a_kw: dict[str, Any] = field(default_factory=dict)
    b_kw: dict[str, Any] = field(default_factory=dict)
    share_region: bool = True


@dataclass
class AgentSpec:
    """What one agent does: its pairs, and the interface whose removal ends it."""

    pairs: list[Pair]
    watch: str = ""

    def to_json(self) -> str:
        return json.dumps({"pairs": [vars(p) for p in self.pairs], "watch": self.watch})

    @classmethod
    def from_json(cls, text: str) -> AgentSpec:
        d = json.loads(text)
        return cls([Pair(**p) for p in d["pairs"]], d["watch"])


class Agent:
    """Open ports forwarded pair by pair until :meth:`stop` or the interface goes."""

    def __init__(self, spec: AgentSpec, burst: int = DEFAULT_BURST) -> None:
        self.spec = spec
        self.ports: list[Port] = []
        self.bridges: list[Bridge] = []
        self._stop = threading.Event()
        self.reason = ""
        self._ifindex = ifindex(spec.watch) if spec.watch else 0
        try:
            for p in spec.pairs:
                pa = nm_open(p.a, **p.a_kw)
                self.ports.append(pa)
                b_kw = dict(p.b_kw)
                if p.share_region:
                    b_kw["mem_id"] = pa.mem_id
                pb = nm_open(p.b, **b_kw)
                self.ports.append(pb)
                self.bridges.append(Bridge(pa, pb, burst, zerocopy=pa.mem_id == pb.mem_id))
        except BaseException:
            self.close()
            raise

    def stop(self, reason: str) -> None:
        """Make :meth:`run` return; safe from a signal handler."""
        if not self._stop.is_set():
            self.reason = reason
        self._stop.set()

    def interface_gone(self) -> bool:
        return bool(self.spec.watch) and ifindex(self.spec.watch) != self._ifindex

    def run(self) -> str:
        """Forward until stopped; returns why it stopped."""
        threads = [threading.Thread(target=self._forward, args=(b,), daemon=True)
                   for b in self.bridges]
        for t in threads:
            t.start()
        while not self._stop.wait(WATCH_PERIOD):
            if self.interface_gone():
                self.stop(f"interface {self.spec.watch} is gone")
        for b in self.bridges:
            b.stop()
        for t in threads:
            t.join()
        return self.reason

    def _forward(self, bridge: Bridge) -> None:
        try:
            bridge.run()
        except Exception as e:  # noqa: BLE001 - a dead pair ends the agent, with the cause
            self.stop(f"forwarding {bridge.msg_a2b} failed: {e}")

    def close(self) -> None:
        """Close every port (switch side first), whatever fails on the way."""
        for b in self.bridges:
            b.close()
        for p in reversed(self.ports):
            try:
                p.close()
            except Exception:  # noqa: BLE001,S110 - an interface already gone; close the rest
                pass
        self.ports.clear()
        self.bridges.clear()


def ifindex(ifname: str) -> int:
    """The interface's index, 0 once it is gone (or renamed)."""
    from ..linux.ifinfo import if_index

    try:
        return if_index(ifname)
    except NetmapError:
        return 0


# -- the process ------------------------------------------------------------------------

def spawn(spec: AgentSpec) -> tuple[subprocess.Popen[bytes], int]:
    """Start an agent process detached from the caller; returns it and its status pipe.

    The agent runs in its own session with stdin/stdout/stderr on
    ``/dev/null``, so it outlives vale-ctl and its terminal.  It writes one
    JSON line on the status pipe (read it with :func:`wait_started`).
    """
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pynetmap.apps.vale_agent", str(w), spec.to_json()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(w,), start_new_session=True, close_fds=True)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return proc, r


def wait_started(status_fd: int, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """The agent's status line: ``{"ok": True, ...}`` or ``{"ok": False, "errno", "error"}``."""
    import select

    chunks: list[bytes] = []
    try:
        while True:
            if not select.select([status_fd], [], [], timeout)[0]:
                return {"ok": False, "errno": errno.ETIMEDOUT,
                        "error": f"the switch agent did not start within {timeout:.0f} s"}
            chunk = os.read(status_fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(status_fd)
    try:
        out: dict[str, Any] = json.loads(b"".join(chunks))
    except ValueError:
        return {"ok": False, "errno": errno.EIO, "error": "the switch agent died at start"}
    return out


def _report(fd: int, status: dict[str, Any]) -> None:
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(status))


def main(argv: list[str] | None = None) -> int:
    """``python -m pynetmap.apps.vale_agent STATUS_FD SPEC_JSON`` (started by :func:`spawn`)."""
    args = sys.argv[1:] if argv is None else argv
    fd, spec = int(args[0]), AgentSpec.from_json(args[1])
    agent: Agent | None = None
    early: list[str] = []  # a signal that came while the ports were being opened

    def on_signal(signum: int, frame: Any) -> None:
        why = f"signal {signal.Signals(signum).name}"
        if agent is None:
            early.append(why)
        else:
            agent.stop(why)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent = Agent(spec)
    except (NetmapError, ValueError, TypeError) as e:
        code = e.errno if isinstance(e, OSError) and e.errno else errno.EINVAL
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        _report(fd, {"ok": False, "errno": code, "error": msg})
        return 1
    _report(fd, {"ok": True, "pid": os.getpid(),
                 "ports": [[p.name, p.info().kind, p.info().engine, p.mem_id]
                           for p in agent.ports],
                 "zerocopy": [b.zerocopy for b in agent.bridges]})
    if early:
        agent.stop(early[0])
    try:
        agent.run()
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
