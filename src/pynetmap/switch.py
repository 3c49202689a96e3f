"""VALE's learning switch for one batch, as pure functions (spec §4.2); no I/O.

netmap forwards inside the *sender's* txsync, packet by packet: learn the
source MAC, look up the destination, pick a ring, copy.  Here the same
decisions are made for a whole batch at once with NumPy, so the cost of a
batch is a fixed number of array operations whatever its size:

- :func:`packets` splits the batch's slots into packets (``NS_MOREFRAG``);
- :func:`mac_hash` is netmap's bucket function (lookup2's ``mix``),
  vectorised, and :class:`HashCache` runs it only on MACs not seen before;
- :func:`route` learns the batch's source MACs and looks up the
  destinations with netmap's per-packet order of events, so a table entry
  written by packet *i* is what packets after *i* see;
- :func:`destinations` groups the packets by destination ring, in batch
  order (flooded and unicast packets interleaved as netmap sends them).

The adapter (:mod:`pynetmap.adapters.vale`) does the I/O: it reads the
headers out of the buffers, calls these, and copies into the rings.

MACs travel as integers: the 6 bytes read little-endian, so bit 0 of the
value is the group (multicast) bit of the first byte, as netmap tests it.
"""

from __future__ import annotations

import numpy as np

from .constants import NS_MOREFRAG

TABLE_SIZE = 1024  #: learning table entries (netmap's ``NM_BDG_HASH``)
MAC_MASK = (1 << 48) - 1
PORT_SHIFT = 48  #: a table entry is ``mac | (port + 1) << 48``; 0 is an empty entry
FLOOD = -1  #: :func:`route`: send to every other port
DROP = -2  #: :func:`route`: send nowhere (hairpin, runt, port gone)
_GOLDEN = np.uint32(0x9E3779B9)
#: lookup2's mix: (target, shift) per round, targets cycling a, b, c; b shifts left
_MIX = ((0, 13), (1, 8), (2, 13), (0, 12), (1, 16), (2, 5), (0, 3), (1, 10), (2, 15))


def mac_int(mac: bytes | str) -> int:
    """A MAC (6 bytes, or ``"aa:bb:..."``) as the integer this module works with."""
    if isinstance(mac, str):
        mac = bytes.fromhex(mac.replace(":", ""))
    if len(mac) != 6:
        raise ValueError(f"a MAC has 6 bytes, not {len(mac)}")
    return int.from_bytes(mac, "little")


def mac_str(mac: int) -> str:
    return ":".join(f"{b:02x}" for b in int(mac).to_bytes(6, "little"))


def mac_hash(macs: np.ndarray) -> np.ndarray:
    """The learning-table bucket of each MAC: netmap's ``nm_bridge_rthash``.

    lookup2's ``mix(a, b, c)`` on uint32 with wrap-around, a = b = the golden
    ratio plus the MAC's first four / last two bytes, c = 0; the bucket is
    ``c & 1023``.
    """
    m = np.atleast_1d(np.asarray(macs, dtype=np.uint64))
    a = (m & np.uint64(0xFFFFFFFF)).astype(np.uint32) + _GOLDEN
    b = ((m >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.uint32) + _GOLDEN
    c = np.zeros(len(m), np.uint32)
    for t, k in _MIX:
        s = np.uint32(k)
        if t == 0:
            a = (a - b - c) ^ (c >> s)
        elif t == 1:
            b = (b - c - a) ^ (a << s)
        else:
            c = (c - a - b) ^ (b >> s)
    return (c & np.uint32(TABLE_SIZE - 1)).astype(np.intp)


class HashCache:
    """MAC -> bucket for MACs seen before: a batch usually carries a handful of
    distinct MACs, and a dict lookup is far cheaper than the nine rounds."""

    def __init__(self, limit: int = 1 << 16) -> None:
        self._d: dict[int, int] = {}
        self._limit = limit

    def __call__(self, macs: np.ndarray) -> np.ndarray:
        d = self._d
        if len(macs) == 1:
            b = d.get(int(macs[0]))
            if b is not None:
                return np.array([b], np.intp)
        out = np.empty(len(macs), np.intp)
        miss = []
        for i, m in enumerate(macs.tolist()):
            b = d.get(m)
            if b is None:
                miss.append(i)
            else:
                out[i] = b
        if miss:
            if len(d) > self._limit:
                d.clear()
            hm = mac_hash(macs[miss])
            out[miss] = hm
            d.update(zip(macs[miss].tolist(), hm.tolist(), strict=True))
        return out


def unique(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, return_inverse=True)`` with a fast path for one value (one flow)."""
    if len(a) and (a == a[0]).all():
        return a[:1], np.zeros(len(a), np.intp)
    u, inv = np.unique(a, return_inverse=True)
    return u, inv.reshape(-1)


def packets(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first slot, slot count) of each packet of a TX batch's slot ``flags``.

    A packet ends at a slot without ``NS_MOREFRAG``; a chain still open at
    the end of the batch is truncated there (netmap clears its last
    fragment's flag).
    """
    more = (flags & NS_MOREFRAG) != 0
    ends = np.flatnonzero(~more)
    if len(flags) and more[-1]:
        ends = np.append(ends, len(flags) - 1)
    starts = np.empty(len(ends), np.intp)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return starts, ends - starts + 1


def route(src: np.ndarray, dst: np.ndarray, table: np.ndarray, me: int, last: int,
          buckets: HashCache | None = None) -> tuple[np.ndarray, dict[int, int], int]:
    """Learn and look up one batch from port ``me``: netmap's steps 2-4 per packet.

    ``src``/``dst`` are the packets' MACs, ``table`` the learning table as
    the batch starts (read only), ``last`` the source MAC this port learned
    last (-1: none).  A unicast source MAC that differs from the previous
    one learned on this port is written to its bucket; each destination is
    looked up in the table *as that packet sees it* (earlier packets of the
    batch may have written its bucket).  Returns the destination of each
    packet (a port, :data:`FLOOD` or :data:`DROP` for the hairpin), the
    table writes to make (bucket -> entry, the last write of each bucket)
    and the new ``last``.
    """
    h = buckets or mac_hash
    n = len(src)
    me_tag = np.uint64((me + 1) << PORT_SHIFT)
    li = np.flatnonzero((src & np.uint64(1)) == 0)  # unicast sources learn
    ls = src[li]
    prev = np.empty(len(ls), np.int64)
    if len(ls):
        prev[0] = last
        prev[1:] = ls[:-1].astype(np.int64)
    changed = ls.astype(np.int64) != prev
    wpos, wmac = li[changed], ls[changed]
    new_last = int(ls[-1]) if len(ls) else last

    ud, inv = unique(dst)
    dbu = h(ud)  # hash each distinct MAC once: a batch has few
    entry = table[dbu][inv] if n else np.zeros(0, np.uint64)
    writes: dict[int, int] = {}
    if len(wpos):
        uw, winv = unique(wmac)
        wb = h(uw)[winv].astype(np.int64)
        # The writes in (bucket, position) order: a bucket's last write is its entry
        # after the batch, and the write a packet sees is the last one at or before
        # it in its destination's bucket -- one sorted search for the whole batch,
        # however many sources it carries (a loop per bucket was a step per MAC).
        o = np.lexsort((wpos, wb))
        sb, sp, sm = wb[o], wpos[o], wmac[o]
        last_of = np.append(sb[1:] != sb[:-1], True)
        writes = dict(zip(sb[last_of].tolist(), (sm[last_of] | me_tag).tolist(), strict=True))
        dbk = dbu[inv].astype(np.int64)
        k = np.searchsorted(sb * (n + 1) + sp, dbk * (n + 1) + np.arange(n), side="right") - 1
        seen = k >= 0
        seen[seen] &= sb[k[seen]] == dbk[seen]
        entry[seen] = sm[k[seen]] | me_tag
    port = (entry >> np.uint64(PORT_SHIFT)).astype(np.int64) - 1
    known = ((dst & np.uint64(1)) == 0) & (port >= 0) & ((entry & np.uint64(MAC_MASK)) == dst)
    out = np.where(known, port, FLOOD)
    out[out == me] = DROP
    return out, writes, new_last


def route_flow(src: int, dst: int, table: np.ndarray, me: int, last: int,
               buckets: HashCache) -> tuple[int, dict[int, int], int]:
    """:func:`route` for a batch whose packets all carry ``src`` and ``dst`` (one flow).

    The first packet learns (if anything), and every packet then sees the
    same table, so one decision holds for the whole batch: a handful of
    Python operations instead of dozens of array ones.
    """
    writes: dict[int, int] = {}
    new_last = last
    if not src & 1:
        new_last = src
        if src != last:
            writes[int(buckets(np.array([src], np.uint64))[0])] = src | (me + 1) << PORT_SHIFT
    if dst & 1:
        return FLOOD, writes, new_last
    b = int(buckets(np.array([dst], np.uint64))[0])
    entry = writes.get(b)
    if entry is None:
        entry = int(table[b])
    port = (entry >> PORT_SHIFT) - 1
    if port < 0 or entry & MAC_MASK != dst:
        return FLOOD, writes, new_last
    return (DROP if port == me else port), writes, new_last


def destinations(dport: np.ndarray, me: int, tx_ring: int,
                 ports: dict[int, int]) -> list[tuple[int, int, np.ndarray]]:
    """``(port, rx ring, packet indices in batch order)`` to deliver (steps 4-5).

    ``ports`` maps each active port to its number of RX rings.  Unicast goes
    to ring ``tx_ring mod nrings`` of its port, a flooded packet to ring 0
    of every active port but the sender; packets to gone ports are dropped.
    """
    flood = dport == FLOOD
    any_flood = bool(flood.any())
    uni = dport[dport >= 0]
    targets = set(np.unique(uni).tolist()) if len(uni) else set()
    if any_flood:
        targets |= set(ports)
    targets.discard(me)
    out = []
    for p in sorted(targets):
        nrx = ports.get(p)
        if nrx is None:
            continue  # the port left: what was learned for it goes nowhere
        ring = tx_ring % nrx
        mine = dport == p
        if ring == 0:
            idx = np.flatnonzero(mine | flood) if any_flood else np.flatnonzero(mine)
            out.append((p, 0, idx))
        else:
            if any_flood:
                out.append((p, 0, np.flatnonzero(flood)))
            idx = np.flatnonzero(mine)
            if len(idx):
                out.append((p, ring, idx))
    return out
