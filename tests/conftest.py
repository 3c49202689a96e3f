"""Shared fixtures.  Networking: a fresh veth pair between two namespaces per test."""

from __future__ import annotations

from collections.abc import Iterator

import netns
import pytest


@pytest.fixture(scope="session")
def _netns_session() -> None:
    """Once per session: skip without privileges, else sweep namespaces of dead runs."""
    netns.require_privileges()
    netns.sweep_stale()


@pytest.fixture
def veth(_netns_session: None) -> Iterator[netns.VethPair]:
    """Two namespaces joined by a veth pair (see tests/netns.py); always deleted after."""
    with netns.veth_pair() as pair:
        yield pair
