"""vale-ctl (spec §4.2) and its switch agents.

Without privileges: the command line, its errors and exit codes, and the
agent's forwarding over pipes (in-process).  With root: end to end in
namespaces the tests create -- interfaces of two namespaces attached to one
switch carry ping and a TCP transfer whose bytes are checked, the host
stack (``-h``), persistent ports, netmap's EBUSY/ENXIO/EINVAL/EEXIST cases,
and that detaching, a killed agent or a vanished interface leave nothing
behind (agent, veth, XDP program).  Agents run inside the test's namespaces
(vale-ctl is run with ``ip netns exec``) and any still alive at teardown is
killed by its pid.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import netns
import pytest

import pynetmap
from pynetmap import osl
from pynetmap.apps import valectl as V
from pynetmap.apps.vale_agent import Agent, AgentSpec, Pair
from pynetmap.registry import transaction
from pynetmap.traffic import receive, send

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="interfaces and persistent ports are Linux only")


def uniq() -> str:
    return "vc" + uuid.uuid4().hex[:8]


# -- the command line -------------------------------------------------------------------

def test_no_arguments_lists():
    assert V.parse_args([]) == V.Command("list", "")


@pytest.mark.parametrize("argv, want", [
    (["-a", "vale0:eth0"], V.Command("attach", "vale0:eth0")),
    (["-h", "vale0:eth0"], V.Command("attach", "vale0:eth0", host=True)),
    (["-d", "vale0:eth0"], V.Command("detach", "vale0:eth0")),
    (["-n", "v0", "-C", "512,256,2"],
     V.Command("create", "v0", conf={"tx_slots": 512, "rx_slots": 256, "tx_rings": 2,
                                     "rx_rings": 2})),
    (["-r", "v0"], V.Command("remove", "v0")),
    (["-l"], V.Command("list", "")),
    (["-l", "vale0:a"], V.Command("list", "vale0:a")),
    (["-n", "v0", "-a", "vale1:v0"], V.Command("attach", "vale1:v0")),  # the last one wins
])
def test_parse(argv, want):
    assert V.parse_args(argv) == want


@pytest.mark.parametrize("text, want", [
    ("1024", {"tx_slots": 1024, "rx_slots": 1024}),
    ("1024,0,4", {"tx_slots": 1024, "tx_rings": 4, "rx_rings": 4}),
    ("0,0,2,1", {"tx_rings": 2, "rx_rings": 1}),
])
def test_conf(text, want):
    assert V.parse_conf(text) == want


@pytest.mark.parametrize("argv", [
    ["-x"], ["-a"], ["-C", "1,2,3,4,5", "-n", "v0"], ["-C", "-1", "-n", "v0"],
    ["-C", "a", "-n", "v0"], ["-C", "512", "-d", "vale0:v0"], ["-a", "vale0:x", "extra"],
    ["-l", "vale0:a", "vale0:b"],
])
def test_usage_errors_exit_255(argv, capsys):
    assert V.main(argv) == 255
    err = capsys.readouterr().err
    assert err.startswith("vale-ctl: ") and "Usage:" in err


@pytest.mark.parametrize("opt", ["-g", "-p", "-P", "-m"])
def test_netmap_options_not_here_say_why(opt, capsys):
    assert V.main([opt, "x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vale-ctl: option {opt}: ")


@linux_only
@pytest.mark.parametrize("name", ["eth0", "netmap:eth0", "vale0:eth0-1", "vale0:eth0^",
                                  "vale0:eth0/x", "vale0:eth0@conf:rings=2", "vale0:p{1",
                                  "vale-x:eth0"])
def test_attach_and_detach_take_valeX_IF_only(name, capsys):
    for opt in ("-a", "-d"):
        assert V.main([opt, name]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"{name}: {os.strerror(errno.EINVAL)} ({err[0].split('(', 1)[1]}"]


@linux_only
def test_detach_what_is_not_attached_is_enxio(capsys):
    assert V.main(["-d", f"vale0:{uniq()[:10]}"]) == 1
    assert os.strerror(errno.ENXIO) in capsys.readouterr().err


@linux_only
def test_remove_unknown_is_enxio_and_an_interface_einval(capsys):
    assert V.main(["-r", uniq()[:10]]) == 1
    assert os.strerror(errno.ENXIO) in capsys.readouterr().err
    assert V.main(["-r", "lo"]) == 1  # exists, but is no persistent port: nothing is touched
    assert f"lo: {os.strerror(errno.EINVAL)} (lo is not a persistent VALE port)" in \
        capsys.readouterr().err


@linux_only
@pytest.mark.parametrize("name", ["vale1", "a" * 16, "a:b", "a/b", "x{1", ""])
def test_create_refuses_names_netmap_refuses(name, capsys):
    with pytest.raises(pynetmap.NetmapError) as e:
        V.create(name)
    assert e.value.errno == errno.EINVAL


def test_peer_names_fit_ifnamsiz():
    assert V.peer_name("v0") == "v0-vp"
    long = [V.peer_name("a" * 15), V.peer_name("a" * 14 + "b")]
    assert all(len(p) < V.IFNAMSIZ for p in long) and long[0] != long[1]


# -- the agent over pipes (no privileges) ---------------------------------------------

@pytest.fixture
def agent() -> Iterator[tuple[Agent, pynetmap.Port, pynetmap.Port]]:
    """An agent forwarding pipe ends x{0 <-> y{0, and the test's ends x}0, y}0."""
    x, y = uniq(), uniq()
    ag = Agent(AgentSpec([Pair(f"netmap:{x}{{0", f"netmap:{y}{{0", share_region=False)]))
    a, b = pynetmap.open(f"netmap:{x}}}0"), pynetmap.open(f"netmap:{y}}}0")
    t = threading.Thread(target=ag.run)
    t.start()
    try:
        yield ag, a, b
    finally:
        ag.stop("test over")
        t.join(10)
        ag.close()
        a.close()
        b.close()
    assert not t.is_alive()


def test_agent_forwards_both_ways(agent):
    ag, a, b = agent
    frames = [os.urandom(60 + i) for i in range(300)]
    send(a, frames)
    got = receive(b, count=300, timeout_ms=5000)
    assert [got.frame(i) for i in range(len(got))] == frames
    send(b, frames[:7])
    got = receive(a, count=7, timeout_ms=5000)
    assert [got.frame(i) for i in range(len(got))] == frames[:7]


def test_agent_stop_gives_the_reason_and_closes_its_ports(agent):
    ag, a, b = agent
    ports = list(ag.ports)
    ag.stop("asked")
    time.sleep(0.3)
    assert ag.reason == "asked"
    ag.close()
    assert all(p.closed for p in ports)
    assert a.poll(pynetmap.POLLIN, 2000) & pynetmap.POLLHUP  # the peer end went with it


def test_agent_open_failure_closes_what_it_opened():
    x = uniq()
    with pytest.raises(pynetmap.NetmapError):
        Agent(AgentSpec([Pair(f"netmap:{x}{{0", "netmap:nosuchif9",
                              share_region=False)]))
    with transaction() as state:  # the first port was closed: no open of it left
        assert not any(k.startswith(x) for k in state["ports"])


# -- agent processes on a veth (root) --------------------------------------------------

def _spawn_in(ns: str, spec: AgentSpec) -> tuple[int, int, dict]:
    """Start an agent inside ``ns`` as vale-ctl does; (pid, token, its status)."""
    from pynetmap.apps.vale_agent import spawn, wait_started

    def start() -> tuple[int, int, dict]:
        proc, status = spawn(spec)
        return proc.pid, osl.process_token(proc.pid), wait_started(status)

    return netns.call(ns, start, timeout=60)


def _wait_gone(pid: int, token: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while osl.process_alive(pid, token):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _xdp(ns: str, ifname: str) -> bool:
    out = netns.run(ns, "ip", "-j", "link", "show", ifname).stdout
    return "xdp" in json.loads(out)[0]


def _opens() -> int:
    with transaction() as state:
        return sum(len(e["opens"]) for r in state["ports"].values()
                   for e in r["endpoints"].values())


@pytest.fixture
def pipe_agent(veth: netns.VethPair) -> Iterator[tuple[netns.VethPair, int, int, str]]:
    """An agent in ``ns_b`` forwarding ``pnm1`` <-> a pipe end; killed by pid at teardown."""
    x = uniq()
    spec = AgentSpec([Pair(f"netmap:{veth.if_b}", f"netmap:{x}{{0", share_region=False)],
                     watch=veth.if_b)
    pid, token, st = _spawn_in(veth.ns_b, spec)
    try:
        assert st["ok"], st
        yield veth, pid, token, x
    finally:
        if osl.process_alive(pid, token):
            os.kill(pid, signal.SIGKILL)


def test_agent_process_forwards_an_interface(pipe_agent):
    veth, pid, token, x = pipe_agent
    frames = netns.make_frames(200, b"\xff" * 6, veth.mac_a)

    def through() -> list[bytes]:
        with pynetmap.open(f"netmap:{x}}}0") as p:
            netns.send_frames(netns.raw_socket(veth.ns_a, veth.if_a), frames)
            got = receive(p, count=len(frames), timeout_ms=5000)
            return [got.frame(i) for i in range(len(got))]

    assert netns.call(veth.ns_b, through, timeout=30) == frames


def test_sigterm_ends_the_agent_and_its_xdp_program(pipe_agent):
    veth, pid, token, x = pipe_agent
    if _xdp(veth.ns_b, veth.if_b) is False:
        pytest.skip("the AF_PACKET engine was chosen: no XDP program to look for")
    os.kill(pid, signal.SIGTERM)
    assert _wait_gone(pid, token)
    assert not _xdp(veth.ns_b, veth.if_b)
    assert _opens() == 0


def test_agent_ends_when_its_interface_goes(pipe_agent):
    veth, pid, token, x = pipe_agent
    netns.run(veth.ns_b, "ip", "link", "del", veth.if_b)
    assert _wait_gone(pid, token)
    assert _opens() == 0


def test_killed_agent_is_swept_with_its_xdp_program(pipe_agent):
    veth, pid, token, x = pipe_agent
    had_xdp = _xdp(veth.ns_b, veth.if_b)
    os.kill(pid, signal.SIGKILL)
    assert _wait_gone(pid, token)
    assert _xdp(veth.ns_b, veth.if_b) == had_xdp  # nobody cleaned yet
    netns.call(veth.ns_b, _opens)  # any registry transaction in its namespace sweeps
    assert _opens() == 0
    assert not _xdp(veth.ns_b, veth.if_b)
