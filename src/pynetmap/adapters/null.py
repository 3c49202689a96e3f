"""The null port (spec §4.4): rings in an existing memory region, no data path.

netmap's ``NR_REG_NULL``: it needs an explicit memory id, gets the ring and
slot counts asked for, and its syncs do nothing.  Useful to pre-allocate
rings and buffers in a region or to look at a region's layout.  It is
reached with ``pynetmap.open_null(mem_id, ...)``; like netmap's it cannot be
re-opened by name (``takes`` refuses every name).
"""

from __future__ import annotations

import errno
import itertools
import os

import numpy as np

from .. import objects
from .. import region as R
from ..adapter import Adapter, Found
from ..constants import NR_RX, NR_TX
from ..errors import NetmapError
from ..kring import KRing
from ..names import PortSpec
from ..registry import State

DEFAULTS = {"tx_rings": 1, "rx_rings": 1, "tx_slots": 1024, "rx_slots": 1024}
_serial = itertools.count()


class NullAdapter(Adapter):
    """Syncs that do nothing: the kring never moves."""

    kind = "null"
    options = frozenset()

    @classmethod
    def get(cls, state: State, spec: PortSpec, conf: dict, pre: dict) -> Found:
        mem_id = conf.get("mem_id", 0)
        if not mem_id:
            raise NetmapError(errno.EINVAL, "a null port needs an existing memory region id")
        g = {k: conf.get(k) or v for k, v in DEFAULTS.items()}
        region = R.attach(state, mem_id)
        tx = [objects.create_ring(state, region, g["tx_slots"], NR_TX, i,
                                  region.alloc_bufs(g["tx_slots"])) for i in range(g["tx_rings"])]
        rx = [objects.create_ring(state, region, g["rx_slots"], NR_RX, i,
                                  region.alloc_bufs(g["rx_slots"])) for i in range(g["rx_rings"])]
        key = f"null:{spec.port}#{os.getpid()}#{next(_serial)}"
        record = state["ports"][key] = {
            "kind": "null", "mem_id": mem_id, "rings": {"null": {"tx": tx, "rx": rx}},
            "counts": {"null": [len(tx), len(rx), 0, 0]}, "endpoints": {"null": {"opens": []}},
        }
        return Found(key, record, "null", region)

    @classmethod
    def release(cls, state: State, record: dict, o: dict, region: R.Region) -> None:
        rings = record["rings"]["null"]
        for ofs in rings["tx"] + rings["rx"]:
            region.free_bufs(objects.ring_slots(region, ofs)["buf_idx"].astype(np.int64))
            objects.free_ring(state, region, ofs)
        rings["tx"], rings["rx"] = [], []

    def txsync(self, kring: KRing, head: int) -> None:
        return None

    def rxsync(self, kring: KRing, head: int) -> None:
        return None
