"""Shared fixtures.  Networking: a fresh veth pair between two namespaces per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import netns
import pytest

# Every test run gets its own pynetmap registry, inherited by the processes
# the tests spawn, so runs never see each other's (or a user's) ports.
_RUNDIR = tempfile.mkdtemp(prefix="pynetmap-test-")
os.environ["PYNETMAP_RUNDIR"] = _RUNDIR


@pytest.fixture(scope="session", autouse=True)
def _private_registry() -> Iterator[None]:
    """Release what the run left and remove its registry at the end."""
    yield
    from pynetmap.registry import transaction

    with transaction() as state:
        state["ports"].clear()  # collect() then unlinks every region of this run
    shutil.rmtree(_RUNDIR, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the registry also after a run that ran no test (``-k`` matched
    nothing): the fixture above never started then, and the directory stayed."""
    shutil.rmtree(_RUNDIR, ignore_errors=True)


@pytest.fixture(scope="session")
def _netns_session() -> Iterator[None]:
    """Once per session: skip without privileges, else sweep namespaces of dead runs.

    Afterwards, a safety net: no XDP program of ours may be left on an interface of
    the host's own namespace (tests only ever attach inside their namespaces).
    """
    netns.require_privileges()
    netns.sweep_stale()
    before = netns.root_xdp_programs()
    yield
    leaked = {k: v for k, v in netns.root_xdp_programs().items()
              if v == "pynetmap_xsk" and k not in before}
    if leaked:
        for ifname in leaked:
            subprocess.run(["ip", "link", "set", "dev", ifname, "xdp", "off"], timeout=10)
        pytest.fail(f"tests left pynetmap XDP programs on host interfaces {sorted(leaked)} "
                    "(removed)")


@pytest.fixture
def veth(_netns_session: None) -> Iterator[netns.VethPair]:
    """Two namespaces joined by a veth pair (see tests/netns.py); always deleted after."""
    with netns.veth_pair() as pair:
        yield pair


def _engine(name: str) -> str:
    """``name`` if this machine can run it: AF_XDP needs CAP_BPF, pcap needs libpcap."""
    if name == "xdp":
        netns.require_privileges(bpf=True)
    if name == "pcap":
        from pynetmap import libpcap
        from pynetmap.errors import NetmapError

        try:
            libpcap.load()
        except NetmapError as e:
            pytest.skip(f"libpcap is not installed here ({e})")
    return name


@pytest.fixture(params=["xdp", "packet", "pcap"])
def engine(request: pytest.FixtureRequest, _netns_session: None) -> str:
    """Each NIC engine in turn: AF_XDP (skipped without CAP_BPF), AF_PACKET, libpcap
    (skipped where the library is not installed)."""
    return _engine(request.param)


@pytest.fixture(params=["xdp", "packet"])
def host_engine(request: pytest.FixtureRequest, _netns_session: None) -> str:
    """Each NIC engine with host rings (libpcap has none): AF_XDP, AF_PACKET."""
    return _engine(request.param)
