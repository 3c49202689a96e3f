"""netmap's ``vale-ctl`` (spec §4.2): attach interfaces to switches, persistent ports, list.

::

    vale-ctl                      list every switch port (same as -l)
    vale-ctl -l [valeX:P]         list, or say where one port is
    vale-ctl -a valeX:eth0        attach interface eth0 to switch valeX
    vale-ctl -h valeX:eth0        the same, and eth0's host stack as port valeX:eth0^
    vale-ctl -d valeX:eth0        detach it (and its host stack)
    vale-ctl -n v0 [-C tx_slots[,rx_slots[,tx_rings[,rx_rings]]]]
                                  create persistent port v0, an interface the OS sees
    vale-ctl -r v0                remove it

netmap's kernel forwards between an attached NIC and the switch itself; here
a *switch agent* does (:mod:`pynetmap.apps.vale_agent`): ``-a`` starts one,
waits until it has opened the interface and the switch port, and returns,
while the agent forwards until ``-d`` or until the interface disappears.

A persistent port ``-n v0`` is a veth pair: ``v0`` is the interface the OS
(or a container, after ``ip link set v0 netns ...``) uses; its peer, named by
:func:`peer_name`, is the end the agent drives through the NIC adapter once
the port is attached with ``-a valeX:v0``.  So ``-n`` alone forwards nothing,
as in netmap, where a new persistent port is attached in a second step.

Records of agents and persistent ports live in the registry state under the
key ``"vale_ctl"`` (changed inside :func:`pynetmap.registry.transaction`, so
one lock covers ports and agents); an agent that died is dropped from them
by the next vale-ctl, after the registry's sweep released its ports.

Exit status as netmap's: 0 done, 1 the request failed (one line on stderr,
``NAME: errno text (why)``, as netmap's ``perror(name)``), 255 bad usage.
"""

from __future__ import annotations

import errno
import getopt
import hashlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .. import osl
from ..constants import IFNAMSIZ
from ..errors import NetmapError
from ..names import PortNameError, parse
from ..registry import State, transaction
from .vale_agent import AgentSpec, Pair, ifindex, spawn, wait_started

GETOPT = "d:a:h:ln:r:C:"
USAGE = """\
Usage:
vale-ctl arguments
\t-d interface\tinterface name to be detached
\t-a interface\tinterface name to be attached
\t-h interface\tinterface name to be attached with the host stack
\t-n interface\tinterface name to be created
\t-r interface\tinterface name to be deleted
\t-l [port]\tlist all or specified bridge's interfaces (default)
\t-C string\tring/slot setting of an interface created by -n or attached by -a/-h:
\t\t\ttx_slots[,rx_slots[,tx_rings[,rx_rings]]]
"""
#: netmap's options this vale-ctl does not have, and why (refused in one line)
NOT_HERE = {
    "-g": "interface info is not implemented (use pynetmap.open(...).info())",
    "-p": "polling kernel threads do not exist here: the switch agent always polls",
    "-P": "polling kernel threads do not exist here: the switch agent always polls",
    "-m": "a persistent port's memory region is chosen by its agent (the interface's)",
}
#: how long -d waits for an agent to close its ports before killing it
DETACH_TIMEOUT = 10.0
STATE_KEY = "vale_ctl"


class UsageError(Exception):
    """A bad command line: the usage text follows, exit status 255."""


@dataclass
class Command:
    """The command line after parsing: one action (the last one given, as netmap)."""

    action: str = "list"  # list, attach, detach, create, remove
    name: str = ""
    host: bool = False
    conf: dict[str, int] = field(default_factory=dict)


def parse_conf(text: str) -> dict[str, int]:
    """``-C tx_slots[,rx_slots[,tx_rings[,rx_rings]]]`` (netmap's order) as open() keywords.

    A missing ``rx_slots`` is ``tx_slots`` and a missing ``rx_rings`` is
    ``tx_rings``, as netmap's parser; 0 keeps the default.
    """
    keys = ("tx_slots", "rx_slots", "tx_rings", "rx_rings")
    parts = text.split(",")
    if len(parts) > len(keys):
        raise UsageError(f"-C takes at most 4 numbers, got {text!r}")
    conf: dict[str, int] = {}
    for i, p in enumerate(parts):
        if not p.strip().isdigit():
            raise UsageError(f"-C needs non-negative numbers, got {p!r} in {text!r}")
        v = int(p)
        conf[keys[i]] = v
        if i in (0, 2):
            conf[keys[i + 1]] = v
    return {k: v for k, v in conf.items() if v}


def parse_args(argv: list[str]) -> Command:
    cmd = Command()
    try:
        opts, rest = getopt.getopt(argv, GETOPT)
    except getopt.GetoptError as e:
        opt = f"-{e.opt}"
        if opt in NOT_HERE:
            raise NetmapError(errno.EOPNOTSUPP, f"option {opt}: {NOT_HERE[opt]}") from None
        raise UsageError(f"bad option: {e.msg}") from None
    actions = {"-a": "attach", "-h": "attach", "-d": "detach", "-n": "create",
               "-r": "remove", "-l": "list"}
    for o, v in opts:
        if o == "-C":
            cmd.conf = parse_conf(v)
            continue
        cmd.action, cmd.name, cmd.host = actions[o], v, o == "-h"
    if rest:
        if cmd.action != "list" or cmd.name or len(rest) > 1:
            raise UsageError(f"unexpected arguments: {' '.join(rest)}")
        cmd.name = rest[0]
    if cmd.conf and cmd.action not in ("create", "attach"):
        raise UsageError("-C goes with -n, -a or -h")
    return cmd


# -- records --------------------------------------------------------------------------

def _netns() -> int:
    """This thread's network namespace (interface names are per namespace); 0 off Linux."""
    if not sys.platform.startswith("linux"):
        return 0
    from ..linux.nic import _netns as netns

    return netns()


def records(state: State) -> dict[str, dict[str, Any]]:
    """vale-ctl's part of the registry state, with dead agents and vanished ports dropped.

    ``agents``: ``"<netns>:<ifname>"`` -> switch, interface, agent pid and
    token.  ``persistent``: ``"<netns>:<name>"`` -> the veth pair and its -C
    geometry; one whose agent end is gone from this namespace is forgotten.
    """
    recs: dict[str, dict[str, Any]] = state.setdefault(STATE_KEY,
                                                       {"agents": {}, "persistent": {}})
    for key, rec in list(recs["agents"].items()):
        if not osl.process_alive(rec["pid"], rec["token"]):
            del recs["agents"][key]
    here = _netns()
    for key, rec in list(recs["persistent"].items()):
        if rec["netns"] == here and not _exists(rec["peer"]):
            del recs["persistent"][key]
    return recs


def _exists(ifname: str) -> bool:
    return ifindex(ifname) != 0


def peer_name(name: str) -> str:
    """The agent's end of persistent port ``name``: ``name_vp``, shortened to fit IFNAMSIZ.

    No ``-``: the agent opens it by its netmap name, where ``-`` selects a ring.
    """
    if len(name) + 3 < IFNAMSIZ:
        return f"{name}_vp"
    return f"{name[:8]}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def _switch_port(name: str) -> tuple[str, str]:
    """``valeX:IF`` -> (``valeX``, ``IF``); anything else is EINVAL, as netmap's attach."""
    try:
        spec = parse(name)
    except PortNameError as e:
        raise NetmapError(errno.EINVAL, str(e)) from None
    if not spec.prefix.startswith("vale") or spec != parse(spec.port):
        raise NetmapError(errno.EINVAL, "attach and detach take valeX:IF, with no ring, "
                                        "pipe, flag or option suffix")
    return spec.prefix, spec.port[len(spec.prefix) + 1:]  # a VALE name keeps its prefix


def _need_linux(what: str) -> None:
    if not sys.platform.startswith("linux"):
        raise NetmapError(errno.EOPNOTSUPP, f"{what} needs Linux (the NIC adapter)")


# -- actions ---------------------------------------------------------------------------

def attach(name: str, host: bool = False, conf: dict[str, int] | None = None) -> dict[str, Any]:
    """``-a`` / ``-h``: start the switch agent for ``valeX:IF``; returns its status.

    EINVAL for a bad name (or ``-h`` on a persistent port: it has no host
    stack), ENXIO for a missing interface, EBUSY when the interface is
    attached already (to any switch) or opened by another netmap program.
    """
    _need_linux("attaching an interface")
    switch, ifname = _switch_port(name)
    netns = _netns()
    key = f"{netns}:{ifname}"
    with transaction() as state:
        recs = records(state)
        rec = recs["agents"].get(key)
        if rec is not None:
            raise NetmapError(errno.EBUSY, f"{ifname} is attached to {rec['switch']} already "
                                           f"(switch agent pid {rec['pid']})")
        for name_ in (f"{switch}:{ifname}", f"{switch}:{ifname}^"):
            if state["ports"].get(name_, {}).get("kind") == "vale":  # switches span namespaces
                raise NetmapError(errno.EBUSY, f"{switch} has a port {name_} already")
        pers = recs["persistent"].get(key)
        port_conf = dict(pers["conf"]) if pers else {}
        port_conf.update(conf or {})
        if pers is not None:
            if host:
                raise NetmapError(errno.EINVAL, f"{ifname} is a persistent VALE port: it has "
                                                "no host stack to attach")
            nic = pers["peer"]
        elif not _exists(ifname):
            raise NetmapError(errno.ENXIO, f"no such interface {ifname!r}")
        else:
            nic = ifname
        pairs = [Pair(f"netmap:{nic}", f"{switch}:{ifname}", {},
                      {"vale_attach": True, **port_conf})]
        if host:
            pairs.append(Pair(f"netmap:{nic}^", f"{switch}:{ifname}^", {},
                              {"vale_attach": True, **port_conf}))
        proc, status = spawn(AgentSpec(pairs, watch=nic))
        recs["agents"][key] = {"switch": switch, "ifname": ifname, "nic": nic, "host": host,
                               "netns": netns, "pid": proc.pid,
                               "token": osl.process_token(proc.pid)}
    st = wait_started(status)
    if not st["ok"]:
        _forget_agent(key, proc.pid)
        try:
            proc.wait(DETACH_TIMEOUT)
        except Exception:  # noqa: BLE001 - it said it failed: make sure it is gone
            proc.kill()
            proc.wait()
        raise NetmapError(st["errno"], st["error"])
    return st


def _forget_agent(key: str, pid: int) -> None:
    with transaction() as state:
        recs = records(state)
        if recs["agents"].get(key, {}).get("pid") == pid:
            del recs["agents"][key]


def detach(name: str) -> None:
    """``-d``: stop the agent of ``valeX:IF`` and wait until it closed its ports.

    ENXIO when ``IF`` is not attached to ``valeX`` (from this namespace).
    """
    switch, ifname = _switch_port(name)
    key = f"{_netns()}:{ifname}"
    with transaction() as state:
        rec = records(state)["agents"].get(key)
        if rec is None or rec["switch"] != switch:
            raise NetmapError(errno.ENXIO, f"{ifname} is not attached to {switch}")
    pid, token = rec["pid"], rec["token"]
    for sig, wait in ((signal.SIGTERM, DETACH_TIMEOUT), (signal.SIGKILL, 2.0)):
        if not _signal_wait(pid, token, sig, wait):
            break
    _forget_agent(key, pid)


def _signal_wait(pid: int, token: int, sig: int, timeout: float) -> bool:
    """Send ``sig`` to the agent and wait for its end; True if it still runs after."""
    if not osl.process_alive(pid, token):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # our own child (vale-ctl called in-process): reap it, or it stays a zombie
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not osl.process_alive(pid, token):
            return False
        time.sleep(0.02)
    return True


def create(name: str, conf: dict[str, int] | None = None) -> str:
    """``-n``: make persistent port ``name`` (a veth pair); returns the agent's end.

    EINVAL for a name netmap refuses (empty, 16 characters or more, starting
    with "vale", or holding a separator), EEXIST when an interface of that
    name (or of its peer's) exists.
    """
    _need_linux("a persistent port")
    if not 0 < len(name) < IFNAMSIZ or name.startswith("vale") or any(
            c in name for c in ":/ \t\n") or "{" in name or "}" in name:
        raise NetmapError(errno.EINVAL, "a persistent port name has 1..15 characters, does "
                                        "not start with 'vale' and has no ':', '/', '{', '}' "
                                        "or blank")
    peer = peer_name(name)
    netns = _netns()
    with transaction() as state:
        recs = records(state)
        for ifname in (name, peer):
            if _exists(ifname):
                raise NetmapError(errno.EEXIST, f"interface {ifname} exists")
        _make_pair(name, peer)
        recs["persistent"][f"{netns}:{name}"] = {"name": name, "peer": peer, "netns": netns,
                                                 "conf": dict(conf or {})}
    return peer


def _make_pair(name: str, peer: str) -> None:
    """The veth pair, both ends up, TX checksums done in software.

    Frames leave a veth with their checksum unfinished when offload is on;
    through the switch they would reach other ports that way.
    """
    from ..linux.hoststack import add_veth, link_index, netlink, tx_checksum_off

    with netlink() as ipr:
        add_veth(ipr, name, peer, "the veth pair")
        try:
            for ifname in (name, peer):
                tx_checksum_off(ifname)
                ipr.link("set", index=link_index(ipr, ifname), state="up")
        except BaseException:
            ipr.link("del", index=link_index(ipr, peer))
            raise


def remove(name: str) -> None:
    """``-r``: delete persistent port ``name`` and its veth pair.

    ENXIO if there is no such interface, EINVAL if it is not a persistent
    port, EBUSY while it is attached.
    """
    _need_linux("a persistent port")
    key = f"{_netns()}:{name}"
    with transaction() as state:
        recs = records(state)
        rec = recs["persistent"].get(key)
        if rec is None:
            if _exists(name):
                raise NetmapError(errno.EINVAL, f"{name} is not a persistent VALE port")
            raise NetmapError(errno.ENXIO, f"no such interface {name!r}")
        agent = recs["agents"].get(key)
        if agent is not None:
            raise NetmapError(errno.EBUSY, f"{name} is attached to {agent['switch']}; "
                                           f"detach it first (vale-ctl -d {agent['switch']}:"
                                           f"{name})")
        from ..linux.hoststack import link_index, netlink

        with netlink() as ipr:
            idx = link_index(ipr, rec["peer"])
            if idx is not None:
                ipr.link("del", index=idx)  # takes the OS's end with it, wherever it is
        del recs["persistent"][key]


def listing(name: str = "") -> list[str]:
    """``-l``: netmap's lines ``bridge:B port:P valeX:NAME``, then pynetmap's extras.

    The extras: the port's memory region and the pids that hold it, and for
    an attached interface its agent.  With ``name``, one line
    ``valeX:P at bridge:B port:P``: ENOENT if the switch does not exist,
    ENXIO if it has no such port.
    """
    from ..adapters.vale import list_ports

    with transaction() as state:
        agents = {(a["switch"], a["ifname"]): a for a in records(state)["agents"].values()}
    ports = list_ports()
    bridges: dict[str, int] = {}
    for p in ports:
        bridges.setdefault(p.switch, len(bridges))
    if name:
        sw = name.partition(":")[0]
        if sw not in bridges:
            raise NetmapError(errno.ENOENT, f"no switch {sw}")
        for p in ports:
            if p.name == name:
                return [f"{name} at bridge:{bridges[p.switch]} port:{p.index}"]
        raise NetmapError(errno.ENXIO, f"{sw} has no port {name[len(sw) + 1:]}")
    out = []
    for p in ports:
        line = (f"bridge:{bridges[p.switch]} port:{p.index} {p.name}  mem_id {p.mem_id} "
                f"pids {','.join(map(str, p.pids)) or '-'}")
        agent = agents.get((p.switch, p.name[len(p.switch) + 1:].rstrip("^")))
        if agent is not None and agent["pid"] in p.pids:
            line += f" (switch agent of {agent['nic']})"
        out.append(line)
    return out


# -- the command -----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run vale-ctl with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args in (["--help"], ["-?"]):
        sys.stdout.write(USAGE)
        return 0
    try:
        cmd = parse_args(args)
    except UsageError as e:
        sys.stderr.write(f"vale-ctl: {e}\n{USAGE}")
        return 255  # netmap's usage(-1)
    except NetmapError as e:
        sys.stderr.write(f"vale-ctl: {e.strerror}\n")
        return 1
    try:
        if cmd.action == "list":
            for line in listing(cmd.name):
                print(line)
        elif cmd.action == "attach":
            attach(cmd.name, cmd.host, cmd.conf)
        elif cmd.action == "detach":
            detach(cmd.name)
        elif cmd.action == "create":
            create(cmd.name, cmd.conf)
        else:
            remove(cmd.name)
    except NetmapError as e:
        code = e.errno or errno.EIO
        sys.stderr.write(f"{cmd.name or 'vale-ctl'}: {os.strerror(code)} ({e.strerror})\n")
        return 1
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
