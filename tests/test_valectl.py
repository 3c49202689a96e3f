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

import contextlib
import errno
import hashlib
import json
import os
import signal
import subprocess
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
    assert V.peer_name("v0") == "v0_vp"
    long = [V.peer_name("a" * 15), V.peer_name("a" * 14 + "b")]
    assert all(len(p) < V.IFNAMSIZ for p in long) and long[0] != long[1]


# -- the agent over pipes (no privileges) ---------------------------------------------

@contextlib.contextmanager
def running_agent() -> Iterator[tuple[Agent, pynetmap.Port, pynetmap.Port, threading.Thread,
                                      list[str]]]:
    """An agent forwarding pipe ends x{0 <-> y{0 in a thread, the test's ends x}0, y}0,
    the thread, and what its run() returned (once it has)."""
    x, y = uniq(), uniq()
    ag = Agent(AgentSpec([Pair(f"netmap:{x}{{0", f"netmap:{y}{{0", share_region=False)]))
    a, b = pynetmap.open(f"netmap:{x}}}0"), pynetmap.open(f"netmap:{y}}}0")
    returned: list[str] = []
    t = threading.Thread(target=lambda: returned.append(ag.run()))
    t.start()
    try:
        yield ag, a, b, t, returned
    finally:
        ag.stop("test over")
        t.join(10)
        ag.close()
        a.close()
        b.close()
    assert not t.is_alive()


@pytest.fixture
def agent() -> Iterator[tuple[Agent, pynetmap.Port, pynetmap.Port]]:
    with running_agent() as (ag, a, b, _, _):
        yield ag, a, b


def test_agent_forwards_both_ways(agent):
    ag, a, b = agent
    frames = [os.urandom(60 + i) for i in range(300)]
    send(a, frames)
    got = receive(b, count=300, timeout_ms=5000)
    assert [got.frame(i) for i in range(len(got))] == frames
    send(b, frames[:7])
    got = receive(a, count=7, timeout_ms=5000)
    assert [got.frame(i) for i in range(len(got))] == frames[:7]


def test_agent_stop_gives_the_reason_and_closes_its_ports():
    """run() returns the first reason it was stopped for; close() closes its ports."""
    with running_agent() as (ag, a, b, t, returned):
        ports = list(ag.ports)
        ag.stop("asked")
        ag.stop("a second reason")  # the first one stands
        t.join(10)
        assert not t.is_alive() and returned == ["asked"]
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


# -- vale-ctl end to end (root) --------------------------------------------------------

def vale_ctl(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``vale-ctl ARGS`` run inside namespace ``ns``: its agents live there."""
    r = netns.run(ns, sys.executable, "-m", "pynetmap.apps.valectl", *args, timeout=90,
                  check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"vale-ctl {' '.join(args)} in {ns}: exit {r.returncode}: "
                             f"{r.stderr.strip()}")
    return r


def fails(ns: str, code: int, *args: str) -> str:
    """Run vale-ctl expecting exit 1 and one line naming errno ``code``; returns the line."""
    r = vale_ctl(ns, *args, check=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, (r.returncode, r.stderr)
    assert f": {os.strerror(code)} (" in lines[0], lines[0]
    return lines[0]


def agents() -> dict[str, dict]:
    with transaction() as state:
        return dict(V.records(state)["agents"])


def ports() -> list:
    from pynetmap.adapters.vale import list_ports

    return list_ports()


@pytest.fixture
def reap(_netns_session: None) -> Iterator[None]:
    """Kill, by pid, any switch agent of this test still running at its end."""
    before = set(agents())
    yield
    for key, rec in agents().items():
        if key not in before and osl.process_alive(rec["pid"], rec["token"]):
            os.kill(rec["pid"], signal.SIGKILL)


@pytest.fixture
def two_hosts(reap: None) -> Iterator[tuple[netns.VethPair, netns.VethPair]]:
    """Two veth pairs: the ``a`` ends are two hosts (192.0.2.1, .3), the ``b`` ends the
    interfaces to attach, without addresses, each in its own namespace."""
    with netns.veth_pair() as p, netns.veth_pair() as q:
        netns.run(q.ns_a, "ip", "addr", "flush", "dev", q.if_a)
        netns.run(q.ns_a, "ip", "addr", "add", "192.0.2.3/24", "dev", q.if_a)
        q.addr_a = "192.0.2.3"
        for pair in (p, q):
            netns.run(pair.ns_b, "ip", "addr", "flush", "dev", pair.if_b)
        # one switch spans namespaces: its port names must differ
        netns.run(q.ns_b, "ip", "link", "set", q.if_b, "down")
        netns.run(q.ns_b, "ip", "link", "set", q.if_b, "name", "pnm2")
        netns.run(q.ns_b, "ip", "link", "set", "pnm2", "up")
        q.if_b = "pnm2"
        yield p, q


def _tcp_transfer(server_ns: str, client_ns: str, addr: str, nbytes: int) -> None:
    """Send ``nbytes`` random bytes over TCP; the receiver's SHA-256 must match."""
    data = os.urandom(nbytes)
    server = ("import hashlib,socket,sys\n"
              "s=socket.socket(); s.bind(('0.0.0.0',5001)); s.listen(1); s.settimeout(30)\n"
              "c,_=s.accept(); c.settimeout(30); h=hashlib.sha256(); n=0\n"
              "while True:\n"
              "    b=c.recv(65536)\n"
              "    if not b: break\n"
              "    h.update(b); n+=len(b)\n"
              "print(n, h.hexdigest())\n")
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c", server],
                           stdout=subprocess.PIPE, text=True)
    try:
        client = ("import socket,sys,time\n"
                  "for i in range(100):\n"
                  "    try:\n"
                  f"        s=socket.create_connection(('{addr}',5001),timeout=30); break\n"
                  "    except ConnectionRefusedError: time.sleep(0.05)\n"
                  "s.sendall(sys.stdin.buffer.read()); s.close()\n")
        subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-c", client],
                       input=data, check=True, timeout=60)
        out, _ = srv.communicate(timeout=60)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    assert out.split() == [str(nbytes), hashlib.sha256(data).hexdigest()]


@linux_only
def test_two_namespaces_through_one_switch_ping_and_tcp(two_hosts):
    p, q = two_hosts
    vale_ctl(p.ns_b, "-a", f"vale0:{p.if_b}")
    vale_ctl(q.ns_b, "-a", f"vale0:{q.if_b}")
    listed = vale_ctl(p.ns_b, "-l").stdout.splitlines()  # the other namespace's port too
    pids = {rec["pid"] for rec in agents().values()}
    assert len(pids) == 2 and len(listed) == 2
    for i, (line, ifname) in enumerate(zip(listed, ("pnm1", "pnm2"), strict=True)):
        assert line.startswith(f"bridge:0 port:{i} vale0:{ifname}  mem_id ")
        assert line.endswith(f"(switch agent of {ifname})")
    assert vale_ctl(q.ns_b, "-l", "vale0:pnm2").stdout == "vale0:pnm2 at bridge:0 port:1\n"
    netns.run(p.ns_a, "ping", "-c", "3", "-i", "0.2", "-W", "5", q.addr_a, timeout=30)
    _tcp_transfer(q.ns_a, p.ns_a, q.addr_a, 4 << 20)
    vale_ctl(p.ns_b, "-d", f"vale0:{p.if_b}")
    vale_ctl(q.ns_b, "-d", f"vale0:{q.if_b}")
    assert agents() == {} and ports() == []
    assert not any(osl.process_alive(pid) for pid in pids)
    for pair in (p, q):
        assert not _xdp(pair.ns_b, pair.if_b)
    assert vale_ctl(p.ns_b, "-l").stdout == ""
    r = netns.run(p.ns_a, "ping", "-c", "1", "-W", "1", q.addr_a, check=False)
    assert r.returncode != 0  # detached: nothing forwards any more


@linux_only
def test_host_stack_attached_with_h(veth, reap):
    """-h: the interface and its host stack are two ports; the stack answers through the
    switch, and -d gives it its address back."""
    vale_ctl(veth.ns_b, "-h", f"vale0:{veth.if_b}")
    names = sorted(p.name for p in ports())
    assert names == ["vale0:pnm1", "vale0:pnm1^"]
    netns.run(veth.ns_a, "ping", "-c", "3", "-i", "0.2", "-W", "5", veth.addr_b, timeout=30)
    vale_ctl(veth.ns_b, "-d", f"vale0:{veth.if_b}")
    assert ports() == [] and agents() == {}
    addrs = netns.run(veth.ns_b, "ip", "-j", "addr", "show", veth.if_b).stdout
    assert veth.addr_b in addrs
    netns.run(veth.ns_a, "ping", "-c", "1", "-W", "5", veth.addr_b)  # the OS's own path again


@linux_only
def test_persistent_ports_carry_ping(veth, reap):
    """-n makes interfaces OS programs use; attached to a switch they reach each other,
    here across two namespaces (v1 moved like a container's interface)."""
    s, other = veth.ns_a, veth.ns_b
    for name in ("v0", "v1"):
        vale_ctl(s, "-n", name, "-C", "512")
    vale_ctl(s, "-a", "vale1:v0")
    vale_ctl(s, "-a", "vale1:v1")
    netns.run(s, "ip", "link", "set", "v1", "netns", other)
    netns.run(s, "ip", "addr", "add", "198.51.100.1/24", "dev", "v0")
    netns.run(other, "ip", "addr", "add", "198.51.100.2/24", "dev", "v1")
    netns.run(other, "ip", "link", "set", "v1", "up")
    netns.run(s, "ping", "-c", "3", "-i", "0.2", "-W", "5", "198.51.100.2", timeout=30)
    assert {(p.name, p.tx_rings) for p in ports()} == {("vale1:v0", 1), ("vale1:v1", 1)}
    fails(s, errno.EBUSY, "-r", "v0")  # attached
    for name in ("v0", "v1"):
        vale_ctl(s, "-d", f"vale1:{name}")
        vale_ctl(s, "-r", name)
    links = netns.run(s, "ip", "-j", "link", "show").stdout + \
        netns.run(other, "ip", "-j", "link", "show").stdout
    assert '"v0' not in links and '"v1' not in links  # the pairs are gone, both ends
    with transaction() as state:
        assert V.records(state)["persistent"] == {}


@linux_only
def test_netmap_errors(veth, reap):
    ns, ifname = veth.ns_b, veth.if_b
    fails(ns, errno.ENXIO, "-a", "vale0:nosuch0")
    vale_ctl(ns, "-a", f"vale0:{ifname}")
    line = fails(ns, errno.EBUSY, "-a", f"vale0:{ifname}")  # attached twice
    assert line.startswith(f"vale0:{ifname}: ")
    fails(ns, errno.EBUSY, "-a", f"vale2:{ifname}")  # a NIC goes to one switch
    fails(ns, errno.EBUSY, "-h", f"vale2:{ifname}")
    fails(ns, errno.ENXIO, "-d", f"vale2:{ifname}")  # not on that switch
    netns.run(veth.ns_a, "ip", "link", "add", ifname, "type", "veth", "peer", "name", "x0")
    fails(veth.ns_a, errno.EBUSY, "-a", f"vale0:{ifname}")  # the name is taken on vale0
    fails(ns, errno.EINVAL, "-d", f"vale0:{ifname}^")

    def open_it(name: str) -> int:
        try:
            pynetmap.open(name).close()
        except pynetmap.NetmapError as e:
            return e.errno or 0
        return 0

    assert netns.call(ns, open_it, f"netmap:{ifname}", timeout=30) == errno.EBUSY  # agent's
    # only agents open a switch port named like an interface (netmap's REGISTER: EINVAL)
    r = netns.run(ns, sys.executable, "-c", f"import pynetmap; pynetmap.open('vale0:{ifname}')",
                  check=False, timeout=30)
    assert r.returncode == 1 and "NetmapError: [Errno 22]" in r.stderr
    fails(ns, errno.EEXIST, "-n", ifname)  # an interface of that name exists
    fails(ns, errno.EINVAL, "-r", ifname)  # not a persistent port
    fails(ns, errno.ENXIO, "-r", "nosuch0")
    vale_ctl(ns, "-n", "p0")
    fails(ns, errno.EEXIST, "-n", "p0")
    fails(ns, errno.EINVAL, "-h", "vale0:p0")  # a persistent port has no host stack
    vale_ctl(ns, "-a", "vale0:p0")
    fails(ns, errno.EBUSY, "-a", "vale3:p0")
    fails(ns, errno.EBUSY, "-r", "p0")
    fails(ns, errno.EEXIST, "-n", "p0")
    vale_ctl(ns, "-d", "vale0:p0")
    vale_ctl(ns, "-r", "p0")
    fails(ns, errno.ENXIO, "-r", "p0")
    vale_ctl(ns, "-d", f"vale0:{ifname}")
    fails(ns, errno.ENXIO, "-d", f"vale0:{ifname}")
    fails(ns, errno.ENOENT, "-l", "vale0:pnm1")  # no switch any more
    assert agents() == {}


@linux_only
def test_dead_agent_is_cleaned_and_the_interface_can_attach_again(veth, reap):
    ns, ifname = veth.ns_b, veth.if_b
    vale_ctl(ns, "-a", f"vale0:{ifname}")
    (rec,) = agents().values()
    had_xdp = _xdp(ns, ifname)
    os.kill(rec["pid"], signal.SIGKILL)
    assert _wait_gone(rec["pid"], rec["token"])
    assert vale_ctl(ns, "-l").stdout == ""  # swept: its ports, its record
    assert agents() == {}
    if had_xdp:
        assert not _xdp(ns, ifname)
    vale_ctl(ns, "-a", f"vale0:{ifname}")
    vale_ctl(ns, "-d", f"vale0:{ifname}")


@linux_only
def test_agent_leaves_when_the_interface_goes(veth, reap):
    ns, ifname = veth.ns_b, veth.if_b
    vale_ctl(ns, "-a", f"vale0:{ifname}")
    (rec,) = agents().values()
    netns.run(ns, "ip", "link", "del", ifname)
    assert _wait_gone(rec["pid"], rec["token"])
    assert ports() == [] and agents() == {}
