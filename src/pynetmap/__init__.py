"""pynetmap: netmap for Python.

Open a port by its netmap name, get its rings, move packets in batches::

    import pynetmap
    with pynetmap.open("netmap:demo{0") as port:      # the peer opens "netmap:demo}0"
        ring = port.tx_rings[0]
        batch = ring.reserve(64)
        batch.fill(frame)
        ring.advance(batch.count)
        port.txsync()

See the README for the model (rings, head/cur/tail, syncs, poll) and the
batch API.
"""

from __future__ import annotations

import errno
from typing import Any

from .adapter import PortInfo
from .batch import SlotBatch, swap
from .constants import *  # noqa: F403 - netmap's names, as in C
from .constants import NR_MONITOR_RX, NR_MONITOR_TX, NR_ZCOPY_MON
from .errors import NetmapError, PeerGoneError
from .names import PortNameError, PortSpec, parse
from .port import POLLERR, POLLHUP, POLLIN, POLLOUT, Port, RingError
from .ring import Buffer, Ring
from .wake import wait_any

__version__ = "0.1.0"

_CONF_KEYS = ("tx_rings", "rx_rings", "host_tx_rings", "host_rx_rings", "tx_slots", "rx_slots")
#: every keyword open() takes itself; the port types' own ones are checked by the type
_OPEN_KEYS = ("rings", "slots", "host_rings", *_CONF_KEYS, "extra_bufs", "flags", "mem_id")
#: the network interface type's own keywords (linux/nic.py), named in the error for typos
_NIC_KEYS = ("engine", "xdp_mode")
#: VALE: open a port named like an OS interface (what a switch agent attached)
_VALE_KEYS = ("vale_attach",)


def _conf(spec: PortSpec, kw: dict) -> dict:
    """Ring/slot counts: the name's ``@conf:`` first, keyword arguments override."""
    c = spec.conf()
    conf = {k: getattr(c, k) for k in _CONF_KEYS}
    for generic, specific in (("rings", ("tx_rings", "rx_rings")),
                              ("slots", ("tx_slots", "rx_slots")),
                              ("host_rings", ("host_tx_rings", "host_rx_rings"))):
        if generic in kw:
            value = kw.pop(generic)
            for s in specific:
                conf[s] = value
    for k in _CONF_KEYS:
        if k in kw:
            conf[k] = kw.pop(k)
    for k, v in conf.items():
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{k} must be an int, not {type(v).__name__}")
        if v < 0:
            raise ValueError(f"{k} must be >= 0, got {v}")
    return conf


def open(name: str, **conf: Any) -> Port:  # noqa: A001 - netmap's verb
    """Open and register a netmap port by name (``nmport_open``).

    ``name`` follows netmap's grammar (``netmap:eth0-1/T``, ``netmap:x{3``,
    ``vale0:p``...).  Keyword arguments: ``rings``, ``tx_rings``,
    ``rx_rings``, ``slots``, ``tx_slots``, ``rx_slots`` (as ``@conf:``; only
    effective when the open creates the port), ``extra_bufs`` (spec §2.7),
    ``flags`` (extra ``NR_*`` flags such as ``NR_NO_TX_POLL``) and
    ``mem_id``.  Network interfaces also take ``engine`` (``"auto"``;
    ``"xdp"``, ``"packet"`` on Linux; ``"pcap"`` (libpcap) except on Windows;
    ``"npcap"`` on Windows only; default ``$PYNETMAP_ENGINE`` or auto: AF_XDP
    else AF_PACKET on Linux, Npcap on Windows, libpcap elsewhere) and
    ``xdp_mode`` (``"auto"``, ``"zerocopy"``, ``"copy"``); ``port.info()``
    says what was obtained.  VALE ports take ``vale_attach=True`` to open a
    port named like an OS interface (``vale0:eth0``, ``vale0:eth0^`` for its
    host stack): what a switch agent of ``vale-ctl -a`` does; without it
    netmap's rule holds and such a name is refused.  The port type is the first of
    :data:`pynetmap.adapters.ADAPTERS` that takes the name.  Raises
    :class:`PortNameError` (a ``ValueError``) for a bad name and
    :class:`NetmapError` (an ``OSError``) when netmap would fail.
    """
    if not isinstance(name, str):
        raise TypeError(f"port name must be a str, not {type(name).__name__}")
    spec = parse(name)
    unknown = sorted(k for k in conf
                     if k not in _OPEN_KEYS and k not in _NIC_KEYS and k not in _VALE_KEYS)
    if unknown:
        raise TypeError(f"open() got unexpected keyword arguments: {', '.join(unknown)}; "
                        f"it takes {', '.join(_OPEN_KEYS)} and, for network interfaces, "
                        f"{', '.join(_NIC_KEYS)}; VALE ports {', '.join(_VALE_KEYS)}")
    kw = dict(conf)
    extra, flags, mem_id = _common(kw)
    c = _conf(spec, kw)
    if mem_id and spec.mem_id and mem_id != spec.mem_id:
        raise ValueError(f"mem_id={mem_id} conflicts with @{spec.mem_id} in {name!r}")
    shared = _shared_mem_id(spec)
    explicit = mem_id or spec.mem_id
    if shared and explicit and shared != explicit:  # spec §3: EINVAL, as netmap
        raise NetmapError(errno.EINVAL, f"{name}: @share names region {shared}, not "
                          f"{explicit}")
    c["mem_id"] = explicit or shared
    flags |= spec.flags
    if (flags & ~spec.flags) & (NR_MONITOR_TX | NR_MONITOR_RX | NR_ZCOPY_MON):
        raise ValueError(f"{name}: ask for a monitor in the name (/r, /t, /rt, /z), not flags=")
    from .adapters import adapter_for
    from .register import open_port

    return open_port(adapter_for(spec), spec, c, extra, flags, kw)


def _common(kw: dict) -> tuple[int, int, int]:
    """``extra_bufs``, ``flags`` and ``mem_id``, checked (taken out of ``kw``)."""
    out = []
    for k in ("extra_bufs", "flags", "mem_id"):
        v = kw.pop(k, 0)
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{k} must be an int, not {type(v).__name__}")
        if v < 0:
            raise ValueError(f"{k} must be >= 0, got {v}")
        out.append(v)
    return out[0], out[1], out[2]


def open_null(mem_id: int, name: str = "null", **conf: int) -> Port:
    """netmap's null port (``NR_REG_NULL``): rings in region ``mem_id``, syncs do nothing.

    Keyword arguments: ``tx_rings``, ``rx_rings``, ``tx_slots``, ``rx_slots``
    (and ``rings``, ``slots``).
    """
    from .adapters import adapter_of_kind
    from .register import open_port

    spec = parse(f"netmap:null:{name}")
    kw = dict(conf)
    c = _conf(spec, kw)
    if kw:
        raise TypeError(f"open_null() got unexpected keyword arguments: {', '.join(sorted(kw))}")
    c["mem_id"] = mem_id
    return open_port(adapter_of_kind("null"), spec, c, 0, 0, {})


def _shared_mem_id(spec: PortSpec) -> int:
    """``@share=port``: the memory region of another, already open, port."""
    share = spec.options.get("share")
    if not share:
        return 0
    from .registry import transaction

    other = parse(share["port"]) if ":" in share["port"] else None
    key = share["port"] if other is None else (
        f"{other.port}{{{other.pipe_id}" if other.is_pipe() else other.port)
    with transaction() as state:
        rec = state["ports"].get(key)
        if rec is not None:
            return rec["mem_id"]
        if key in state["parents"]:
            return state["parents"][key]
    raise NetmapError(errno.ENXIO, f"@share: no open port {share['port']!r}")


__all__ = [
    "open", "open_null", "Port", "Ring", "Buffer", "SlotBatch", "swap", "parse", "PortSpec",
    "PortNameError", "NetmapError", "PeerGoneError", "RingError", "POLLIN", "POLLOUT", "POLLERR",
    "POLLHUP", "PortInfo", "wait_any",
]
