"""netmap's constants, with netmap's names and values (NETMAP-SPEC §1).

Kept in one module so that code ported from C can ``from pynetmap.constants
import *`` and read the same as the original.
"""

NETMAP_API = 14
NETMAP_MIN_API = 14
NETMAP_MAX_API = 15

# struct netmap_slot.flags
NS_BUF_CHANGED = 0x0001
NS_REPORT = 0x0002
NS_FORWARD = 0x0004
NS_NO_LEARN = 0x0008
NS_INDIRECT = 0x0010
NS_MOREFRAG = 0x0020
NS_TXMON = 0x0040
NS_PORT_SHIFT = 8
NS_PORT_MASK = 0xFF << NS_PORT_SHIFT
NETMAP_MAX_FRAGS = 64


def NS_RFRAGS(flags: int) -> int:  # noqa: N802 - netmap's macro name
    """Fragments left in a VALE RX chain, this one included."""
    return (flags >> 8) & 0xFF


# struct netmap_ring.flags
NR_TIMESTAMP = 0x0002
NR_FORWARD = 0x0004

# struct netmap_if.ni_flags
NI_PRIV_MEM = 0x1

# nmreq_register.nr_mode
NR_REG_DEFAULT = 0
NR_REG_ALL_NIC = 1
NR_REG_SW = 2
NR_REG_NIC_SW = 3
NR_REG_ONE_NIC = 4
NR_REG_PIPE_MASTER = 5
NR_REG_PIPE_SLAVE = 6
NR_REG_NULL = 7
NR_REG_ONE_SW = 8

# nmreq_register.nr_flags
NR_MONITOR_TX = 0x100
NR_MONITOR_RX = 0x200
NR_ZCOPY_MON = 0x400
NR_EXCLUSIVE = 0x800
NR_RX_RINGS_ONLY = 0x2000
NR_TX_RINGS_ONLY = 0x4000
NR_ACCEPT_VNET_HDR = 0x8000
NR_DO_RX_POLL = 0x10000
NR_NO_TX_POLL = 0x20000

# ring direction (struct netmap_ring.dir)
NR_TX = 0
NR_RX = 1

# limits
NETMAP_REQ_IFNAMSIZ = 64
IFNAMSIZ = 16
NETMAP_RING_MASK = 0x0FFF
NM_MAXPIPES = 64
NM_PIPE_MAXRINGS = 256
NM_PIPE_MAXSLOTS = 4096
NETMAP_BUF_SIZE = 2048

# request types (nmreq_header.nr_reqtype)
NETMAP_REQ_REGISTER = 1
NETMAP_REQ_PORT_INFO_GET = 2
NETMAP_REQ_VALE_ATTACH = 3
NETMAP_REQ_VALE_DETACH = 4
NETMAP_REQ_VALE_LIST = 5
NETMAP_REQ_PORT_HDR_SET = 6
NETMAP_REQ_PORT_HDR_GET = 7
NETMAP_REQ_VALE_NEWIF = 8
NETMAP_REQ_VALE_DELIF = 9
NETMAP_REQ_VALE_POLLING_ENABLE = 10
NETMAP_REQ_VALE_POLLING_DISABLE = 11
NETMAP_REQ_POOLS_INFO_GET = 12
