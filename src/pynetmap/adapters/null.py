"""The null port (spec §4.4): rings in an existing memory region, no data path.

netmap's ``NR_REG_NULL``: it needs an explicit memory id, gets the ring and
slot counts asked for, and its syncs do nothing.  Useful to pre-allocate
rings and buffers in a region or to look at a region's layout.  It is
reached with ``pynetmap.open_null(mem_id, ...)``; like netmap's it cannot be
re-opened by name.
"""

from __future__ import annotations

import errno
import os

import numpy as np

from .. import liveness, objects
from .. import region as R
from ..constants import NR_REG_ALL_NIC, NR_RX, NR_TX
from ..errors import NetmapError
from ..names import parse
from ..port import Port
from ..registry import State, on_release, release_open, transaction
from ..ring import Ring

DEFAULTS = {"tx_rings": 1, "rx_rings": 1, "tx_slots": 1024, "rx_slots": 1024}


def open_null(mem_id: int, name: str = "null", **conf: int) -> Port:
    """Register a null port with the given geometry in region ``mem_id``."""
    if not mem_id:
        raise NetmapError(errno.EINVAL, "a null port needs an existing memory region id")
    g = {k: conf.get(k) or v for k, v in DEFAULTS.items()}
    key = f"null:{name}#{os.getpid()}#{id(g)}"
    with transaction() as state:
        region = R.attach(state, mem_id)
        tx = [objects.create_ring(state, region, g["tx_slots"], NR_TX, i,
                                  region.alloc_bufs(g["tx_slots"])) for i in range(g["tx_rings"])]
        rx = [objects.create_ring(state, region, g["rx_slots"], NR_RX, i,
                                  region.alloc_bufs(g["rx_slots"])) for i in range(g["rx_rings"])]
        nifp = objects.create_if(state, region, f"null:{name}", len(tx), len(rx), 0, 0,
                                 dict(enumerate(tx)), dict(enumerate(rx)))
        state["ports"][key] = {
            "kind": "null", "mem_id": mem_id, "rings": tx + rx,
            "endpoints": {"null": {"opens": [{"pid": os.getpid(), "token": liveness.token(),
                                             "if": nifp, "extra": 0}], "ever": True}},
        }
        R.hold(region)
    spec = parse(f"netmap:null:{name}")
    assert spec.mode == NR_REG_ALL_NIC
    return Port(spec, region, nifp, 0,
                [Ring(region, o, NR_TX, i) for i, o in enumerate(tx)],
                [Ring(region, o, NR_RX, i) for i, o in enumerate(rx)], NullAdapter(key, nifp))


class NullAdapter:
    """Syncs that do nothing: the kring never moves."""

    def __init__(self, key: str, nifp: int) -> None:
        self.key = key
        self.nifp = nifp

    def txsync(self, ring: Ring, head: int) -> None:
        return None

    def rxsync(self, ring: Ring, head: int) -> None:
        return None

    def peer_gone(self) -> bool:
        return False

    def close(self) -> None:
        with transaction() as state:
            record = state["ports"].get(self.key)
            if record is not None:
                release_open(state, record, record["endpoints"]["null"]["opens"][0])


@on_release("null")
def _release(state: State, record: dict, o: dict) -> None:
    region = R.attach(state, record["mem_id"])
    try:
        objects.free_if(state, region, o["if"], 0)
        for ofs in record["rings"]:
            region.free_bufs(objects.ring_slots(region, ofs)["buf_idx"].astype(np.int64))
            objects.free_ring(state, region, ofs)
    finally:
        R.drop_unused(region)
