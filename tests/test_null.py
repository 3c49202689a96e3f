"""The null port (ctrl-api-test null_port, null_port_all_zero, null_port_sync)."""

import errno
import uuid

import pytest

import pynetmap
from pynetmap import NetmapError


@pytest.fixture
def region_id():
    with pynetmap.open(f"netmap:n{uuid.uuid4().hex[:8]}{{0") as p:
        yield p.mem_id


def test_null_port_echoes_geometry(region_id):
    with pynetmap.open_null(region_id, tx_rings=10, rx_rings=5, tx_slots=256,
                            rx_slots=100) as n:
        assert len(n.tx_rings) == 10 and len(n.rx_rings) == 5
        assert n.tx_rings[0].num_slots == 256 and n.rx_rings[4].num_slots == 100
        assert n.mem_id == region_id
        assert bytes(n.nifp["ni_name"]).startswith(b"null:")


def test_null_port_all_zero(region_id):
    with pynetmap.open_null(region_id) as n:
        assert len(n.tx_rings) == 1 and n.tx_rings[0].num_slots > 0


def test_null_port_sync_does_nothing(region_id):
    with pynetmap.open_null(region_id, tx_slots=16) as n:
        r = n.tx_rings[0]
        r.advance(3)
        n.txsync()
        assert r.tail == 15 and r.head == 3
        n.rxsync()
        assert n.rx_rings[0].tail == 0


def test_null_port_needs_a_region():
    with pytest.raises(NetmapError) as e:
        pynetmap.open_null(0)
    assert e.value.errno == errno.EINVAL
