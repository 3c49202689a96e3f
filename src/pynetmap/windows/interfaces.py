"""``pynetmap interfaces``: this machine's network interfaces and their netmap names.

On Windows the names come from Npcap's device list joined with Windows'
adapter list (:mod:`.names`: ``Wi-Fi`` is ``netmap:Wi_Fi``, or its GUID).
Elsewhere a netmap name is the OS's interface name, listed as the OS has
it (``socket.if_nameindex``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import socket
import sys
from typing import Any

from . import names

AF_UNSPEC = 0
#: GAA_FLAG_SKIP_ANYCAST | SKIP_MULTICAST | SKIP_DNS_SERVER: only what we print
GAA_FLAGS = 0x2 | 0x4 | 0x8
ERROR_BUFFER_OVERFLOW = 111
IF_OPER_STATUS_UP = 1


class IpAdapterAddresses(ctypes.Structure):
    """The leading fields of ``IP_ADAPTER_ADDRESSES`` (Win64), the ones read here.

    Only ever read through pointers into the buffer Windows fills, so the
    fields after ``OperStatus`` need not be declared.
    """


IpAdapterAddresses._fields_ = [
    ("Length", ctypes.c_uint32), ("IfIndex", ctypes.c_uint32),
    ("Next", ctypes.POINTER(IpAdapterAddresses)), ("AdapterName", ctypes.c_char_p),
    ("FirstUnicastAddress", ctypes.c_void_p), ("FirstAnycastAddress", ctypes.c_void_p),
    ("FirstMulticastAddress", ctypes.c_void_p), ("FirstDnsServerAddress", ctypes.c_void_p),
    ("DnsSuffix", ctypes.c_wchar_p), ("Description", ctypes.c_wchar_p),
    ("FriendlyName", ctypes.c_wchar_p), ("PhysicalAddress", ctypes.c_ubyte * 8),
    ("PhysicalAddressLength", ctypes.c_uint32), ("Flags", ctypes.c_uint32),
    ("Mtu", ctypes.c_uint32), ("IfType", ctypes.c_uint32), ("OperStatus", ctypes.c_int),
]


def adapters(iphlpapi: Any = None) -> list[names.Adapter]:
    """Windows' adapters (``GetAdaptersAddresses``)."""
    lib = iphlpapi or ctypes.WinDLL("iphlpapi")  # type: ignore[attr-defined]
    size = ctypes.c_ulong(16 * 1024)
    for _ in range(3):  # the list can grow between the two calls
        buf = ctypes.create_string_buffer(size.value)
        rc = lib.GetAdaptersAddresses(AF_UNSPEC, GAA_FLAGS, None, buf, ctypes.byref(size))
        if rc != ERROR_BUFFER_OVERFLOW:
            break
    if rc != 0:
        raise OSError(rc, f"GetAdaptersAddresses failed ({rc})")
    out = []
    node = ctypes.cast(buf, ctypes.POINTER(IpAdapterAddresses))
    while node:
        a = node.contents
        out.append(names.Adapter(
            (a.AdapterName or b"").decode(), a.FriendlyName or "", a.Description or "",
            bytes(a.PhysicalAddress[: a.PhysicalAddressLength]), a.IfIndex,
            a.OperStatus == IF_OPER_STATUS_UP, a.Mtu))
        node = a.Next
    return out


def pcap_devices(npcap: Any) -> list[names.PcapDevice]:
    """Npcap's devices (``pcap_findalldevs``; an error is a ``NetmapError``, an OSError)."""
    from ..libpcap import all_devices

    return [names.PcapDevice(d.name.decode(), (d.description or b"").decode())
            for d in all_devices(npcap.wpcap)]


def windows_table(npcap: Any = None) -> list[names.Interface]:
    """Npcap's devices named as netmap names; ``npcap``: an already loaded :class:`.Npcap`."""
    if npcap is None:
        from .npcap import Npcap

        npcap = Npcap()
    return names.interfaces(pcap_devices(npcap), adapters())


def rows(table: list[names.Interface]) -> list[dict[str, Any]]:
    return [{"netmap": f"netmap:{i.netmap_name}", "guid": i.guid, "name": i.friendly,
             "description": i.description, "mac": i.mac.hex(":") if i.mac else "",
             "up": i.up, "device": i.device} for i in table]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pynetmap interfaces", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per interface")
    args = ap.parse_args(argv)
    try:
        if sys.platform == "win32":
            out = rows(windows_table())
        else:
            out = [{"netmap": f"netmap:{name}", "index": i} for i, name in socket.if_nameindex()]
    except OSError as e:
        print(f"pynetmap interfaces: {e}", file=sys.stderr)
        return 1
    for r in out:
        if args.json:
            print(json.dumps(r))
        elif sys.platform == "win32":
            print(f"{r['netmap']:<28} {r['guid']:<33} {r['mac']:<18} {r['name']} "
                  f"({r['description']}){'' if r['up'] else ' [down]'}")
        else:
            print(r["netmap"])
    return 0
