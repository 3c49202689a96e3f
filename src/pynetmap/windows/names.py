"""Windows interface names as netmap names (pure: the system calls are elsewhere).

Npcap names a device ``\\Device\\NPF_{GUID}``; Windows users know the
adapter by its friendly name ("Ethernet 2", "Wi-Fi").  Neither is a valid
netmap port name: braces open pipes and ``-`` selects a ring
(``netmap:Wi-Fi`` would be ring "Fi" of "Wi").  So each interface gets:

* a **netmap name**: the friendly name with every character netmap's
  grammar reserves (``-*^/@{}``), and spaces, replaced by ``_``
  (``Wi_Fi``, ``Ethernet_2``); two adapters that would get the same
  name get ``_<ifindex>`` appended, all but the lowest index;
* its **GUID** as 32 hex digits (``3f2504e04f8911d39a0c0305e82c3301``),
  which never changes when the adapter is renamed.

Both are accepted by :func:`lookup`, case-insensitively, as is the
friendly name itself when it has no reserved character.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import NetmapError

NPF_PREFIX = "\\Device\\NPF_"
LOOPBACK = "\\Device\\NPF_Loopback"
_RESERVED = re.compile(r"[-*^/@{}\s]")


@dataclass(frozen=True)
class PcapDevice:
    """One entry of ``pcap_findalldevs``."""

    name: str  #: ``\\Device\\NPF_{GUID}``
    description: str = ""


@dataclass(frozen=True)
class Adapter:
    """What ``GetAdaptersAddresses`` says about one adapter."""

    guid: str  #: ``AdapterName``: ``{3F2504E0-4F89-11D3-9A0C-0305E82C3301}``
    friendly: str
    description: str
    mac: bytes
    ifindex: int
    up: bool = True
    mtu: int = 1500


@dataclass(frozen=True)
class Interface:
    """One interface as pynetmap names it."""

    netmap_name: str  #: what follows ``netmap:``
    device: str  #: the Npcap device to open
    guid: str  #: 32 hex digits, lower case ("" for Npcap's loopback)
    friendly: str
    description: str
    mac: bytes | None
    ifindex: int | None
    up: bool
    mtu: int | None


def guid_hex(text: str) -> str:
    """``{3F2504E0-4F89-...}`` (or the device name holding it) as 32 lower-case hex digits."""
    return re.sub(r"[^0-9a-f]", "", text.lower().rsplit("npf_", 1)[-1])


def safe_name(friendly: str) -> str:
    """A netmap port name for a friendly name: reserved characters become ``_``."""
    return _RESERVED.sub("_", friendly.strip()) or "_"


def interfaces(devices: Sequence[PcapDevice], adapters: Sequence[Adapter]) -> list[Interface]:
    """Join Npcap's devices with Windows' adapters (by GUID) and name each one.

    A device Windows does not describe (Npcap's loopback, a disabled
    adapter) is named ``NPF_Loopback`` or by its GUID.
    """
    by_guid = {guid_hex(a.guid): a for a in adapters}
    out: list[Interface] = []
    for d in devices:
        if d.name == LOOPBACK:
            out.append(Interface("NPF_Loopback", d.name, "", "Npcap loopback",
                                 d.description, None, None, True, None))
            continue
        g = guid_hex(d.name)
        a = by_guid.get(g)
        if a is None:
            out.append(Interface(g, d.name, g, "", d.description, None, None, True, None))
        else:
            out.append(Interface(safe_name(a.friendly), d.name, g, a.friendly,
                                 a.description or d.description, a.mac, a.ifindex, a.up, a.mtu))
    # the same safe name twice: all but the lowest interface index get "_<ifindex>"
    seen: dict[str, list[int]] = {}
    for i, itf in enumerate(out):
        seen.setdefault(itf.netmap_name.lower(), []).append(i)
    for idxs in seen.values():
        if len(idxs) > 1:
            idxs.sort(key=lambda i: _order(out[i]))
            for i in idxs[1:]:
                itf = out[i]
                out[i] = Interface(f"{itf.netmap_name}_{itf.ifindex}", itf.device, itf.guid,
                                   itf.friendly, itf.description, itf.mac, itf.ifindex,
                                   itf.up, itf.mtu)
    return out


def _order(itf: Interface) -> int:
    return itf.ifindex if itf.ifindex is not None else 1 << 31


def lookup(name: str, table: Sequence[Interface]) -> Interface:
    """The interface ``name`` (netmap name, GUID hex or friendly name) designates."""
    key = name.lower()
    for pick in (lambda i: i.netmap_name.lower(), lambda i: i.guid,
                 lambda i: i.friendly.lower()):
        hits = [i for i in table if pick(i) == key]
        if len(hits) == 1:
            return hits[0]
    known = ", ".join(i.netmap_name for i in table) or "none"
    raise NetmapError(errno.ENXIO, f"no such interface {name!r} (Npcap sees: {known}; "
                      "'pynetmap interfaces' lists them with their GUIDs)")
