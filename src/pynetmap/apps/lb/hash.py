"""lb's symmetric flow hash (spec §6.7), computed for a whole batch with NumPy.

netmap's lb hashes a packet's 4-tuple with a Toeplitz-style function whose
key is the 16-bit pattern 0x506D repeated: because the key has period 16,
swapping the two addresses or the two ports gives the same hash, so both
directions of a connection land in the same pipe.  The function is linear
over XOR, so the whole hash is one lookup in a 65536-entry table (see :data:`H`),
and a batch costs a fixed number of array operations.

Which fields are hashed (netmap's ``pkt_hdr_hash(buf, 4, 'B')`` on x86-64):

- IPv4 TCP/UDP: source and destination address, ``port + 66`` for both
  ports (66 is the seed ``'B'``); other IPv4 protocols: the addresses and
  the pseudo ports ``0xFDFF + 66``, ``0xFEFF + 66``; an IPv4 header with
  IHL < 5 or longer than its total length hashes to 0.
- IPv6: the first 4 bytes of each address (a big-endian u32), ports as
  IPv4 (TCP/UDP right after the 40-byte header; no extension headers).
- IP-in-IP (IPv4 protocol 4; IPv6 next header 4 or 41) and GRE
  (protocol 47: IPv4, IPv6 or transparent Ethernet 0x6558 inside) are
  decapsulated and the inner header is hashed.
- VLAN (0x8100): the inner ethertype decides; anything not IP hashes MAC
  bytes 2..5 of source and destination, each read as a little-endian u32,
  with the pseudo ports.

Hash 0 means "not IP" to lb's counters.  Header bytes past the packet's
length read as 0 (netmap reads whatever the buffer holds), so a truncated
packet hashes the same whatever the buffer held before.  GRE's header
length follows RFC 2784/2890 (4 bytes, plus 4 for each of the checksum,
key and sequence bits); netmap's takes the flag bits from the wrong end of
the byte, which agrees for plain GRE only.
"""

from __future__ import annotations

import numpy as np

SEED = 66  #: netmap's ``'B'``
#: netmap's ``ntohs(0xFFFD) + seed`` and ``ntohs(0xFFFE) + seed`` on a little-endian host
PSEUDO_SPORT = 0xFDFF + SEED
PSEUDO_DPORT = 0xFEFF + SEED
_PSEUDO = PSEUDO_SPORT ^ PSEUDO_DPORT
ETH_IP, ETH_IPV6, ETH_VLAN, ETH_TEB = 0x0800, 0x86DD, 0x8100, 0x6558
PROTO_IPIP, PROTO_TCP, PROTO_UDP, PROTO_IPV6, PROTO_GRE = 4, 6, 17, 41, 47
#: tunnels inside tunnels deeper than this hash to 0
MAX_DEPTH = 8
#: bytes of every packet read at once: Ethernet, VLAN, IPv4 or IPv6 and the ports
HEAD = 64


def key_words(count: int = 96) -> np.ndarray:
    """``K[i]``: the 32 key-stream bits from bit i (MSB first) of 0x506D 0x506D ..."""
    stream = 0
    for _ in range((count + 32) // 16 + 1):
        stream = (stream << 16) | 0x506D
    top = ((count + 32) // 16 + 1) * 16
    return np.array([(stream >> (top - 32 - i)) & 0xFFFFFFFF for i in range(count)],
                    dtype=np.uint32)


def _table() -> np.ndarray:
    """``H[x] = T(x)`` for every 16-bit x (the low half word of a 32-bit input)."""
    k = key_words(32)
    x = np.arange(1 << 16, dtype=np.uint32)
    t = np.zeros(1 << 16, np.uint32)
    for j in range(16):  # once, at import
        t[(x >> (15 - j)) & 1 == 1] ^= k[16 + j]
    return t


#: ``T`` is linear over XOR and its key repeats every 16 bits, so ``T(w) = H[(w >> 16) ^
#: (w & 0xffff)]`` and ``sym_hash(sip, dip, sp, dp) = H[fold]`` with ``fold`` the XOR of
#: the six 16-bit halves of the inputs: one table lookup per packet, whatever was parsed.
H = _table()


def sym_hash(sip: np.ndarray | int, dip: np.ndarray | int, sport: np.ndarray | int,
             dport: np.ndarray | int) -> np.ndarray:
    """netmap's ``sym_hash_fn`` for arrays: addresses as u32 values, ports mod 2^16."""
    x = np.asarray(sip, np.uint32) ^ np.asarray(dip, np.uint32)
    fold = (x >> 16) ^ (x & 0xFFFF) ^ (np.asarray(sport, np.uint32) & 0xFFFF)
    return H[fold ^ (np.asarray(dport, np.uint32) & 0xFFFF)]


class _Batch:
    """The packets being hashed: buffer pool, indices, lengths, their first HEAD bytes."""

    __slots__ = ("bufs", "idx", "lens", "head", "clean")

    def __init__(self, bufs: np.ndarray, idx: np.ndarray, lens: np.ndarray) -> None:
        self.bufs, self.idx, self.lens = bufs, idx, lens
        self.head = bufs[idx, :HEAD]
        #: head columns below this read as the packets hold them (0 past a packet's end)
        self.clean = int(lens.min()) if len(lens) else HEAD

    def zero_past_end(self, upto: int) -> None:
        """Zero head bytes past each packet's end in columns below ``upto`` (done lazily:
        the usual parse never reads past the shortest packet)."""
        if upto <= self.clean:
            return
        lo = self.clean
        short = np.flatnonzero(self.lens < upto)
        part = self.head[short, lo:upto]
        part[np.arange(lo, upto) >= self.lens[short, None]] = 0
        self.head[short, lo:upto] = part
        self.clean = upto


Rows = np.ndarray | None  # positions in the batch; None: all of them
Off = np.ndarray | int  # one offset for all rows, or one per row


def _uniform(off: Off) -> Off:
    if isinstance(off, np.ndarray) and len(off) and off.min() == off.max():
        return int(off[0])
    return off


def _pick(rows: Rows, mask: np.ndarray) -> Rows:
    return None if rows is None and mask.all() else np.flatnonzero(mask) if rows is None \
        else rows[mask]


def _at(off: Off, mask: np.ndarray) -> Off:
    return off if isinstance(off, int) else off[mask]


def _bytes(b: _Batch, rows: Rows, off: Off, width: int) -> np.ndarray:
    """Bytes ``[off, off + width)`` of the packets ``rows`` (0 past a packet's end)."""
    off = _uniform(off)
    if isinstance(off, int):
        if off + width <= HEAD:
            b.zero_past_end(off + width)
            h = b.head[:, off:off + width]
            return h if rows is None else h[rows]
        cols = off + np.arange(width)
    else:
        top = int(off.max()) + width
        if top <= HEAD:
            b.zero_past_end(top)
            h = b.head if rows is None else b.head[rows]
            return np.take_along_axis(h, off[:, None] + np.arange(width), 1)
        cols = off[:, None] + np.arange(width)
    idx = b.idx if rows is None else b.idx[rows]
    lens = b.lens if rows is None else b.lens[rows]
    blk = b.bufs[idx[:, None], np.minimum(cols, b.bufs.shape[1] - 1)]
    blk[cols >= lens[:, None]] = 0
    return blk


def _be16(h: np.ndarray, at: int) -> np.ndarray:
    return (h[:, at].astype(np.uint32) << 8) | h[:, at + 1]


def _xor16(h: np.ndarray, cols: list[int]) -> np.ndarray:
    """XOR of the big-endian 16-bit words at ``cols`` of each row."""
    w = np.ascontiguousarray(h[:, cols[0]:cols[-1] + 2]).view(">u2")
    out = np.zeros(len(h), np.uint32)
    for c in cols:
        out ^= w[:, (c - cols[0]) // 2]
    return out


def batch_hash(bufs: np.ndarray, idx: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """lb's hash of the packets in buffers ``idx`` of the pool ``bufs`` (uint32 each)."""
    if not len(idx):
        return np.zeros(0, np.uint32)
    return H[_eth_fold(_Batch(bufs, idx, lens), None, 0, 0)]


def frame_hash(frame: bytes) -> int:
    """The hash of one frame (tests, tools; lb hashes whole batches with :func:`batch_hash`)."""
    buf = np.zeros((1, max(2048, len(frame))), np.uint8)
    buf[0, :len(frame)] = np.frombuffer(frame, np.uint8)
    return int(batch_hash(buf, np.zeros(1, np.int64), np.array([len(frame)]))[0])


def _eth_fold(b: _Batch, rows: Rows, off: Off, depth: int) -> np.ndarray:
    """Folded inputs of the Ethernet frames at ``off`` (``pkt_hdr_hash``)."""
    e = _bytes(b, rows, off, 18)
    n = len(e)
    out = np.zeros(n, np.uint32)
    if depth > MAX_DEPTH:
        return out
    et = _be16(e, 12)
    vlan = et == ETH_VLAN
    l3: Off = off + 14
    if vlan.any():
        et = np.where(vlan, _be16(e, 16), et)
        l3 = np.where(vlan, off + 18, off + 14)
    for kind, fold in ((ETH_IP, _ip4_fold), (ETH_IPV6, _ip6_fold)):
        m = et == kind
        if m.all():
            return fold(b, rows, l3, depth)
        if m.any():
            out[m] = fold(b, _pick(rows, m), _at(l3, m), depth)
    other = (et != ETH_IP) & (et != ETH_IPV6)
    if other.any():
        # MAC bytes 2..5 of source and destination as little-endian u32s (netmap's
        # ntohl of the big-endian value), folded to 16 bits, with the pseudo ports
        w = np.ascontiguousarray(e[other, 2:12]).view("<u2")
        out[other] = w[:, 0] ^ w[:, 1] ^ w[:, 3] ^ w[:, 4] ^ np.uint32(_PSEUDO)
    return out


def _l4_fold(b: _Batch, rows: Rows, l4: Off, proto: np.ndarray) -> np.ndarray:
    """The ports' part of the fold: ``port + seed`` for TCP/UDP, else the pseudo ports."""
    out = np.full(len(proto), _PSEUDO, np.uint32)
    m = (proto == PROTO_TCP) | (proto == PROTO_UDP)
    if m.any():
        p = _bytes(b, _pick(rows, m), _at(l4, m), 4)
        out[m] = ((_be16(p, 0) + SEED) & 0xFFFF) ^ ((_be16(p, 2) + SEED) & 0xFFFF)
    return out


def _inner(b: _Batch, rows: Rows, l4: Off, proto: np.ndarray, ok: np.ndarray,
           out: np.ndarray, depth: int) -> None:
    """Decapsulate IP-in-IP and GRE: their rows of ``out`` get the inner packet's fold."""
    for p, fold in ((PROTO_IPIP, _ip4_fold), (PROTO_IPV6, _ip6_fold), (PROTO_GRE, _gre_fold)):
        m = ok & (proto == p)
        if m.any():
            out[m] = fold(b, _pick(rows, m), _at(l4, m), depth + 1)




def _ip4_fold(b: _Batch, rows: Rows, off: Off, depth: int) -> np.ndarray:
    h = _bytes(b, rows, off, 20)
    if depth > MAX_DEPTH:
        return np.zeros(len(h), np.uint32)
    ihl = (h[:, 0] & 0x0F).astype(np.int64)
    valid = (ihl >= 5) & (ihl * 4 <= _be16(h, 2))
    proto = h[:, 9]
    l4 = _uniform(off + ihl * 4)
    out = _xor16(h, [12, 14, 16, 18]) ^ _l4_fold(b, rows, l4, proto)
    out[~valid] = 0
    tun = valid & ((proto == PROTO_IPIP) | (proto == PROTO_GRE))  # IPv4 carries IPv4 only
    if tun.any():
        _inner(b, rows, l4, proto, tun, out, depth)
    return out


def _ip6_fold(b: _Batch, rows: Rows, off: Off, depth: int) -> np.ndarray:
    h = _bytes(b, rows, off, 40)
    if depth > MAX_DEPTH:
        return np.zeros(len(h), np.uint32)
    nh = h[:, 6]
    l4 = off + 40
    # the first 4 bytes of each address, as a big-endian u32
    out = _xor16(h, [8, 10]) ^ _xor16(h, [24, 26]) ^ _l4_fold(b, rows, l4, nh)
    tun = (nh == PROTO_IPIP) | (nh == PROTO_IPV6) | (nh == PROTO_GRE)
    if tun.any():
        _inner(b, rows, l4, nh, tun, out, depth)
    return out


def _gre_fold(b: _Batch, rows: Rows, off: Off, depth: int) -> np.ndarray:
    """The packet inside GRE: IPv4, IPv6 or Ethernet (0x6558); anything else folds to 0."""
    g = _bytes(b, rows, off, 4)
    out = np.zeros(len(g), np.uint32)
    flags = g[:, 0]
    # checksum (C, and R, which RFC 1701 puts the offset next to), key (K), sequence (S)
    size = 4 + 4 * (((flags & 0xC0) != 0).astype(np.int64) + ((flags & 0x20) != 0)
                    + ((flags & 0x10) != 0))
    et = _be16(g, 2)
    inner = off + size
    for kind, fold in ((ETH_IP, _ip4_fold), (ETH_IPV6, _ip6_fold), (ETH_TEB, _eth_fold)):
        m = et == kind
        if m.any():
            out[m] = fold(b, _pick(rows, m), _at(inner, m), depth)
    return out
