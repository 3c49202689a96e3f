"""netmap's control ABI for ``/dev/netmap`` as ctypes structs (NETMAP-SPEC §1.5, §1.6).

Only what a REGISTER needs: ``struct nmreq_header``, ``struct
nmreq_register`` and the three ioctl numbers.  The ring and ``netmap_if``
layouts are the ones pynetmap's own regions use (:mod:`pynetmap.layout`),
so the kernel's memory is read with the same NumPy dtypes.

ioctl numbers are built from the OS's ``_IOC`` encoding, not copied as
constants, because ``_IO`` differs: Linux encodes "no data" as 0, the BSDs
as ``IOC_VOID`` (0x20000000), so ``NIOCTXSYNC`` is 0x6994 on Linux and
0x20006994 on FreeBSD while ``NIOCCTRL`` is 0xc0586997 on both.
"""

from __future__ import annotations

import ctypes
import errno
import sys

from ..constants import NETMAP_API, NETMAP_REQ_IFNAMSIZ, NETMAP_REQ_REGISTER
from ..errors import NetmapError

u16, u32, u64 = ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class NmreqHeader(ctypes.Structure):
    """``struct nmreq_header`` (88 bytes): what every ``NIOCCTRL`` passes."""

    _fields_ = [
        ("nr_version", u16),
        ("nr_reqtype", u16),
        ("nr_reserved", u32),
        ("nr_name", ctypes.c_char * NETMAP_REQ_IFNAMSIZ),
        ("nr_options", u64),  # address of the first struct nmreq_option (0: none)
        ("nr_body", u64),  # address of the request body
    ]


class NmreqRegister(ctypes.Structure):
    """``struct nmreq_register`` (56 bytes): the body of ``NETMAP_REQ_REGISTER``."""

    _fields_ = [
        ("nr_offset", u64),
        ("nr_memsize", u64),
        ("nr_tx_slots", u32),
        ("nr_rx_slots", u32),
        ("nr_tx_rings", u16),
        ("nr_rx_rings", u16),
        ("nr_host_tx_rings", u16),
        ("nr_host_rx_rings", u16),
        ("nr_mem_id", u16),
        ("nr_ringid", u16),
        ("nr_mode", u32),
        ("nr_extra_bufs", u32),
        ("nr_flags", u64),  # natural alignment puts it at 48, after 4 bytes of padding
    ]


def ioc(family: str, inout: str, group: str, nr: int, size: int) -> int:
    """``_IOC`` of ``family`` (``"linux"`` or ``"bsd"``); ``inout`` is ``""``, ``"r"``, ``"w"``
    or ``"rw"`` (``_IO``, ``_IOR``, ``_IOW``, ``_IOWR``).

    Linux: the generic encoding (x86, ARM, RISC-V; not PowerPC, MIPS, SPARC,
    which have their own and are not supported here).
    """
    if family == "linux":
        d = ("r" in inout) << 1 | ("w" in inout)  # _IOC_READ = 2, _IOC_WRITE = 1
        return d << 30 | size << 16 | ord(group) << 8 | nr
    if family == "bsd":
        d = (0x40000000 if "r" in inout else 0) | (0x80000000 if "w" in inout else 0)
        return (d or 0x20000000) | (size & 0x1FFF) << 16 | ord(group) << 8 | nr
    raise ValueError(f"ioctl encoding family must be linux or bsd, not {family!r}")


def ioctls(family: str) -> tuple[int, int, int]:
    """``(NIOCCTRL, NIOCTXSYNC, NIOCRXSYNC)`` for ``family``."""
    return (ioc(family, "rw", "i", 151, ctypes.sizeof(NmreqHeader)),
            ioc(family, "", "i", 148, 0), ioc(family, "", "i", 149, 0))


def os_family(platform: str = sys.platform) -> str:
    """The ioctl encoding of ``platform``: netmap exists on Linux (netmap.ko) and FreeBSD."""
    return "linux" if platform.startswith("linux") else "bsd"


def register_request(name: str, mode: int, ringid: int, flags: int, conf: dict,
                     extra_bufs: int) -> tuple[NmreqHeader, NmreqRegister]:
    """The header and body of a REGISTER of port ``name`` (``nmport_parse``'s output).

    The header's ``nr_body`` is the body's address: keep both objects alive
    until the ioctl returns (the caller holds them).
    """
    raw = name.encode()
    if len(raw) >= NETMAP_REQ_IFNAMSIZ:
        raise NetmapError(errno.EINVAL, f"port name {name!r} is longer than netmap's "
                          f"{NETMAP_REQ_IFNAMSIZ - 1} bytes")
    fields = {f"nr_{k}": conf.get(k, 0) for k in ("tx_slots", "rx_slots", "tx_rings",
                                                  "rx_rings", "host_tx_rings",
                                                  "host_rx_rings", "mem_id")}
    fields.update(nr_ringid=ringid, nr_mode=mode, nr_extra_bufs=extra_bufs, nr_flags=flags)
    for k, v in fields.items():
        bits = 8 * getattr(NmreqRegister, k).size
        if not 0 <= v < 1 << bits:  # ctypes would truncate silently
            raise ValueError(f"{k[3:]} must be in 0..{(1 << bits) - 1} for netmap, got {v}")
    body = NmreqRegister(**fields)
    hdr = NmreqHeader(nr_version=NETMAP_API, nr_reqtype=NETMAP_REQ_REGISTER, nr_name=raw,
                      nr_body=ctypes.addressof(body))
    return hdr, body
