"""binarycomp (spec §7.1) and the other struct offsets of spec §1."""

import pytest

from pynetmap.layout import IF_DTYPE, RING_DTYPE, SLOT_DTYPE


@pytest.mark.parametrize("field,offset", [
    ("buf_ofs", 0), ("num_slots", 8), ("nr_buf_size", 12), ("ringid", 16), ("dir", 18),
    ("head", 20), ("cur", 24), ("tail", 28), ("flags", 32), ("ts_sec", 40), ("ts_usec", 48),
    ("offset_mask", 56), ("buf_align", 64), ("sem", 128),
])
def test_ring_offsets(field, offset):
    assert RING_DTYPE.fields[field][1] == offset


def test_ring_sizes():
    assert RING_DTYPE.itemsize == 256  # slots start at 256
    assert RING_DTYPE.fields["sem"][0].itemsize == 128
    assert RING_DTYPE.fields["ts_sec"][0].itemsize + RING_DTYPE.fields["ts_usec"][0].itemsize == 16


@pytest.mark.parametrize("field,offset,size", [
    ("buf_idx", 0, 4), ("len", 4, 2), ("flags", 6, 2), ("ptr", 8, 8),
])
def test_slot_layout(field, offset, size):
    assert SLOT_DTYPE.fields[field][1] == offset
    assert SLOT_DTYPE.fields[field][0].itemsize == size
    assert SLOT_DTYPE.itemsize == 16


@pytest.mark.parametrize("field,offset", [
    ("ni_name", 0), ("ni_version", 16), ("ni_flags", 20), ("ni_tx_rings", 24),
    ("ni_rx_rings", 28), ("ni_bufs_head", 32), ("ni_host_tx_rings", 36),
    ("ni_host_rx_rings", 40), ("ni_spare1", 44),
])
def test_if_offsets(field, offset):
    assert IF_DTYPE.fields[field][1] == offset
    assert IF_DTYPE.itemsize == 56  # ring_ofs[] follows at 56
    assert IF_DTYPE.fields["ni_name"][0].itemsize == 16
