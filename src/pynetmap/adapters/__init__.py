"""Port types, in the order ``open()`` asks them whether they take a name.

Each entry is ``module:Class`` of an :class:`pynetmap.adapter.Adapter`,
imported on first use so that ``import pynetmap`` loads no OS glue.  Adding
a port type is one module plus one line here; releases and sweeps find a
record's adapter through this list by its ``kind``.
"""

from __future__ import annotations

import errno
import importlib
from typing import TYPE_CHECKING

from ..errors import NetmapError

if TYPE_CHECKING:
    from ..adapter import Adapter
    from ..names import PortSpec

ADAPTERS: list[str] = [
    "pynetmap.adapters.monitor:MonitorAdapter",  # PORT/r, /t, /rt, /z (before the others)
    "pynetmap.adapters.pipe:PipeAdapter",  # netmap:X{N, netmap:X}N
    "pynetmap.adapters.null:NullAdapter",  # open_null() only: takes no name
    "pynetmap.adapters.vale:ValeAdapter",  # valeX:Y
    "pynetmap.native.adapter:NativeAdapter",  # netmap:IFNAME where /dev/netmap exists
    "pynetmap.linux.nic:NicAdapter",  # netmap:IFNAME (Linux; libpcap elsewhere)
]

_loaded: dict[str, type[Adapter]] = {}


def _load(entry: str) -> type[Adapter]:
    cls = _loaded.get(entry)
    if cls is None:
        module, name = entry.split(":")
        cls = _loaded[entry] = getattr(importlib.import_module(module), name)
    return cls


def adapter_for(spec: PortSpec) -> type[Adapter]:
    """The first port type that takes ``spec``."""
    for entry in ADAPTERS:
        cls = _load(entry)
        if cls.takes(spec):
            return cls
    raise NetmapError(errno.EOPNOTSUPP, f"{spec.spec}: ports like this are not implemented yet")


def adapter_of_kind(kind: str) -> type[Adapter]:
    """The port type whose records have ``kind`` (releases, sweeps)."""
    for entry in ADAPTERS:
        cls = _load(entry)
        if cls.kind == kind:
            return cls
    raise NetmapError(errno.EINVAL, f"no port type {kind!r} in this pynetmap")
