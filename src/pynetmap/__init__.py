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

from .batch import SlotBatch, swap
from .constants import *  # noqa: F403 - netmap's names, as in C
from .constants import NR_MONITOR_RX, NR_MONITOR_TX, NR_ZCOPY_MON
from .errors import NetmapError, PeerGoneError
from .names import PortNameError, PortSpec, parse
from .port import POLLERR, POLLHUP, POLLIN, POLLOUT, Port, RingError
from .ring import Ring

__version__ = "0.1.0"

_CONF_KEYS = ("tx_rings", "rx_rings", "host_tx_rings", "host_rx_rings", "tx_slots", "rx_slots")


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


def open(name: str, **conf: int) -> Port:  # noqa: A001 - netmap's verb
    """Open and register a netmap port by name (``nmport_open``).

    ``name`` follows netmap's grammar (``netmap:eth0-1/T``, ``netmap:x{3``,
    ``vale0:p``...).  Keyword arguments: ``rings``, ``tx_rings``,
    ``rx_rings``, ``slots``, ``tx_slots``, ``rx_slots`` (as ``@conf:``; only
    effective when the open creates the port), ``extra_bufs`` (spec §2.7),
    ``flags`` (extra ``NR_*`` flags such as ``NR_NO_TX_POLL``) and
    ``mem_id``.  Network interfaces (Linux) also take ``engine`` (``"auto"``,
    ``"xdp"``, ``"packet"``; default ``$PYNETMAP_ENGINE`` or auto) and
    ``xdp_mode`` (``"auto"``, ``"zerocopy"``, ``"copy"``); the port's
    ``engine`` and ``mode`` attributes say what was obtained.  Raises
    :class:`PortNameError` (a ``ValueError``) for a bad name and
    :class:`NetmapError` (an ``OSError``) when netmap would fail.
    """
    if not isinstance(name, str):
        raise TypeError(f"port name must be a str, not {type(name).__name__}")
    spec = parse(name)
    kw = dict(conf)
    extra = kw.pop("extra_bufs", 0)
    flags = kw.pop("flags", 0)
    mem_id = kw.pop("mem_id", 0)
    engine = kw.pop("engine", None)
    xdp_mode = kw.pop("xdp_mode", "auto")
    if xdp_mode not in ("auto", "zerocopy", "copy"):
        raise ValueError(f"xdp_mode must be auto, zerocopy or copy, not {xdp_mode!r}")
    for k, v in (("extra_bufs", extra), ("flags", flags), ("mem_id", mem_id)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{k} must be an int, not {type(v).__name__}")
        if v < 0:
            raise ValueError(f"{k} must be >= 0, got {v}")
    c = _conf(spec, kw)
    if kw:
        raise TypeError(f"open() got unexpected keyword arguments: {', '.join(sorted(kw))}")
    if mem_id and spec.mem_id and mem_id != spec.mem_id:
        raise ValueError(f"mem_id={mem_id} conflicts with @{spec.mem_id} in {name!r}")
    c["mem_id"] = mem_id or spec.mem_id or _shared_mem_id(spec)
    flags |= spec.flags
    if flags & (NR_MONITOR_TX | NR_MONITOR_RX | NR_ZCOPY_MON):
        raise NetmapError(errno.EOPNOTSUPP, f"{name}: monitor ports are not implemented yet")
    if spec.is_pipe():
        from .adapters.pipe import open_pipe

        return open_pipe(spec, c, extra, flags)
    if spec.is_vale():
        raise NetmapError(errno.EOPNOTSUPP, f"{name}: VALE switches are not implemented yet")
    from .adapters.nic import open_nic

    return open_nic(spec, c, extra, flags, engine, xdp_mode)


def open_null(mem_id: int, name: str = "null", **conf: int) -> Port:
    """netmap's null port (``NR_REG_NULL``): rings in region ``mem_id``, syncs do nothing.

    Keyword arguments: ``tx_rings``, ``rx_rings``, ``tx_slots``, ``rx_slots``.
    """
    from .adapters.null import open_null as _open_null

    return _open_null(mem_id, name, **conf)


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
    "open", "open_null", "Port", "Ring", "SlotBatch", "swap", "parse", "PortSpec", "PortNameError",
    "NetmapError", "PeerGoneError", "RingError", "POLLIN", "POLLOUT", "POLLERR", "POLLHUP",
]
