"""pkt-gen's packets (spec §6.2-§6.3): the UDP template, the address
odometer, sequence numbers, ping timestamps -- built for a whole batch at
once.

Frames of a batch differ only in a few 16-bit words (addresses, ports,
sequence number), so their IPv4 and UDP checksums are computed from the
template's partial sums plus those words, with NumPy over the batch: no
Python per packet.  Checksums are always correct (netmap's pkt-gen forgets
the carry when a port digit wraps, spec §6.2; we do not), and a UDP
checksum that computes to 0 is sent as 0xFFFF (RFC 768).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import numpy as np

from ...checksum import fold, split32, words_sum

PAYLOAD = b"netmap pkt-gen DIRECT payload\nhttp://info.iet.unipi.it/~luigi/netmap/ "
PAYLOAD_INDIRECT = b"netmap pkt-gen indirect payload\nhttp://info.iet.unipi.it/~luigi/netmap/ "
DEFAULT_SRC = "10.0.0.1"
DEFAULT_DST = "10.1.0.1"
DEFAULT_SRC6 = "fd00::1"
DEFAULT_DST6 = "fd00:0:0:1::1"
DEFAULT_PORT = 1234
ETH_HLEN = 14
_U64 = np.uint64
_STAMP = struct.Struct("<III")  # ping's counter, seconds, nanoseconds (host order, x86)
_STAMP_WORDS = struct.Struct(">6H")  # the same 12 bytes as the UDP sum adds them


@dataclass(frozen=True)
class AddrRange:
    """An address and port range of ``-s``/``-d``.

    IPv4 iterates the whole address from ``start`` to ``end``; IPv6 only the
    16-bit word ``group`` (0..7) of the address, from ``start``'s value of
    that word to ``end``'s.
    """

    start: int
    end: int
    port0: int
    port1: int
    v6: bool = False
    group: int = 7
    text: str = ""

    @property
    def first(self) -> int:
        """First value of the iterated digit (IPv4: address; IPv6: the word)."""
        return self._word(self.start) if self.v6 else self.start

    @property
    def last(self) -> int:
        return self._word(self.end) if self.v6 else self.end

    def _word(self, addr: int) -> int:
        return (addr >> (16 * (7 - self.group))) & 0xFFFF

    @property
    def is_range(self) -> bool:
        return self.first != self.last or self.port0 != self.port1

    def addr_bytes(self) -> bytes:
        return self.start.to_bytes(16 if self.v6 else 4, "big")


def _split_range(text: str) -> list[str]:
    """Split ``a-b`` at the '-' that is outside brackets."""
    depth = 0
    for i, c in enumerate(text):
        depth += c == "["
        depth -= c == "]"
        if c == "-" and depth == 0:
            return [text[:i], text[i + 1 :]]
    return [text]


def parse_range(text: str, v6: bool = False, default: str | None = None) -> AddrRange:
    """Parse ``ip[:port][-ip[:port]]`` (IPv6: ``[group@][addr]:port`` or ``addr``)."""
    default = default or (DEFAULT_SRC6 if v6 else DEFAULT_SRC)
    parts = _split_range(text)
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"bad address range {text!r}")
    group = 7
    ends: list[tuple[int, int | None]] = []
    for p in parts:
        if v6:
            if "@" in p:
                g, p = p.split("@", 1)
                if not g.isdigit() or not 0 <= int(g) <= 7:
                    raise ValueError(f"bad IPv6 group in {text!r} (0..7)")
                group = int(g)
            port = None
            if p.startswith("["):
                addr, _, rest = p[1:].partition("]")
                if rest:
                    if not rest.startswith(":") or not rest[1:].isdigit():
                        raise ValueError(f"bad port in {text!r}")
                    port = int(rest[1:])
            else:
                addr = p
            try:
                a = int(ipaddress.IPv6Address(addr or default))
            except ValueError as e:
                raise ValueError(f"bad IPv6 address in {text!r}: {e}") from None
        else:
            addr, _, ps = p.partition(":")
            port = None
            if ps:
                if not ps.isdigit():
                    raise ValueError(f"bad port in {text!r}")
                port = int(ps)
            try:
                a = int(ipaddress.IPv4Address(addr))
            except ValueError as e:
                raise ValueError(f"bad IPv4 address in {text!r}: {e}") from None
        if port is not None and not 0 <= port <= 0xFFFF:
            raise ValueError(f"port out of range in {text!r}")
        ends.append((a, port))
    (a0, p0), (a1, p1) = ends[0], ends[-1]
    p0 = DEFAULT_PORT if p0 is None else p0
    p1 = p0 if p1 is None else p1
    r = AddrRange(a0, a1, p0, p1, v6, group, text)
    if r.last < r.first or p1 < p0:
        raise ValueError(f"address range {text!r} ends before it starts")
    return r


def parse_mac(text: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` -> 6 bytes; anything else raises ValueError."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"invalid MAC address {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"invalid MAC address {text!r}") from None


class Template:
    """The frame of one size and the partial checksums that make a batch cheap."""

    def __init__(self, size: int, src: AddrRange, dst: AddrRange, src_mac: bytes = bytes(6),
                 dst_mac: bytes = b"\xff" * 6, vnet_hdr: int = 0, indirect: bool = False):
        if src.v6 != dst.v6:
            raise ValueError("source and destination must be of one address family")
        self.v6 = v6 = src.v6
        self.src, self.dst, self.h = src, dst, vnet_hdr
        ip_len = 40 if v6 else 20
        if size < ETH_HLEN + ip_len + 8:
            raise ValueError(f"frame size {size} too small for the headers")
        self.size = size
        h = vnet_hdr
        o_ip = h + ETH_HLEN
        self.o_udp = o_udp = o_ip + ip_len
        self.o_payload = o_udp + 8
        ulen = size - ETH_HLEN - ip_len
        payload_src = PAYLOAD_INDIRECT if indirect else PAYLOAD
        plen = ulen - 8
        payload = (payload_src * (plen // len(payload_src) + 1))[:plen]
        f = bytearray(h + size)
        f[h : h + 6] = dst_mac
        f[h + 6 : h + 12] = src_mac
        f[h + 12 : h + 14] = (0x86DD if v6 else 0x0800).to_bytes(2, "big")
        if v6:
            f[o_ip] = 0x60
            f[o_ip + 4 : o_ip + 6] = ulen.to_bytes(2, "big")
            f[o_ip + 6] = 17
            f[o_ip + 7] = 64
            self.o_src, self.o_dst = o_ip + 8, o_ip + 24
            f[self.o_src : self.o_src + 16] = src.addr_bytes()
            f[self.o_dst : self.o_dst + 16] = dst.addr_bytes()
        else:
            f[o_ip : o_ip + 12] = bytes([0x45, 0x10]) + (size - ETH_HLEN).to_bytes(2, "big") \
                + bytes([0, 0, 0x40, 0, 64, 17, 0, 0])
            self.o_src, self.o_dst = o_ip + 12, o_ip + 16
        f[o_udp + 4 : o_udp + 6] = ulen.to_bytes(2, "big")
        f[self.o_payload :] = payload
        self.o_ipsum = o_ip + 10
        self.o_usum = o_udp + 6
        # Partial sums without the words that vary per frame.
        if v6:
            self.o_sw = self.o_src + 2 * src.group  # the iterated words
            self.o_dw = self.o_dst + 2 * dst.group
            fixed = words_sum(bytes(f[self.o_src : self.o_dst + 16])) \
                - src._word(src.start) - dst._word(dst.start)
            self.ip_base = 0
            self.udp_base = fixed + ulen + 17 + ulen + words_sum(bytes(payload))
        else:
            self.ip_base = words_sum(bytes(f[o_ip : o_ip + 12]))
            self.udp_base = 17 + ulen + ulen + words_sum(bytes(payload))
        self.frame = np.frombuffer(bytes(f), np.uint8)
        self.head4 = words_sum(bytes(payload[:4]).ljust(4, b"\0"))
        self.head12 = words_sum(bytes(payload[:12]).ljust(12, b"\0"))
        first = self.batch(0, 1)[0][0]
        self.frame = first  # the template carries the first frame's checksums
        # UDP sum of the first frame without its first 12 payload bytes (ping's stamp)
        u = self.o_udp
        varying = words_sum(bytes(first[u : u + 4])) + (
            src._word(src.start) + dst._word(dst.start) if v6
            else words_sum(bytes(first[self.o_src : self.o_src + 8])))
        self.ping_base = self.udp_base - self.head12 + varying
        fb, u, p = self.frame.tobytes(), self.o_usum, self.o_payload
        self._ping_parts = (fb[:u], fb[u + 2 : p], fb[p + 12 :])  # around the UDP sum and stamp

    # -- the odometer ----------------------------------------------------------
    def period(self) -> int:
        s, d = self.src, self.dst
        return ((s.port1 - s.port0 + 1) * (s.last - s.first + 1) * (d.port1 - d.port0 + 1)
                * (d.last - d.first + 1))

    def digits(self, k: int, n: int) -> tuple[np.ndarray, ...]:
        """(sport, sip, dport, dip) of frames k..k+n-1: src port turns fastest."""
        s, d = self.src, self.dst
        ks = (np.arange(n, dtype=_U64) + _U64(k % self.period()))
        out = []
        for lo, hi in ((s.port0, s.port1), (s.first, s.last), (d.port0, d.port1),
                       (d.first, d.last)):
            m = _U64(hi - lo + 1)
            out.append(ks % m + _U64(lo))
            ks = ks // m
        return tuple(out)

    # -- batches ---------------------------------------------------------------
    def batch(self, k: int, n: int, seq: np.ndarray | None = None,
              rnd: np.random.Generator | None = None, rand_src: bool = False,
              rand_dst: bool = False, per: int = 1) -> tuple[np.ndarray, int]:
        """Frames k..k+n-1 as an (n, len) array with correct checksums; next k.

        With ``per`` > 1 the addresses advance once every ``per`` frames
        (txseq's fragments of one packet); ``n`` must be a multiple of it.
        """
        steps = n // per
        digits = self.digits(k, steps)
        if per > 1:
            digits = tuple(np.repeat(d, per) for d in digits)
        sport, sip, dport, dip = digits
        if rand_src and rnd is not None and not self.v6:
            sip = rnd.integers(0, 1 << 32, n, dtype=_U64)
            sport = rnd.integers(0, 1 << 16, n, dtype=_U64)
        if rand_dst and rnd is not None and not self.v6:
            dip = rnd.integers(0, 1 << 32, n, dtype=_U64)
            dport = rnd.integers(0, 1 << 16, n, dtype=_U64)
        rows = np.empty((n, len(self.frame)), np.uint8)
        rows[:] = self.frame
        u = self.o_udp
        rows[:, u : u + 2] = sport.astype(">u2").view(np.uint8).reshape(n, 2)
        rows[:, u + 2 : u + 4] = dport.astype(">u2").view(np.uint8).reshape(n, 2)
        usum = _U64(self.udp_base) + sport + dport
        if self.v6:
            rows[:, self.o_sw : self.o_sw + 2] = sip.astype(">u2").view(np.uint8).reshape(n, 2)
            rows[:, self.o_dw : self.o_dw + 2] = dip.astype(">u2").view(np.uint8).reshape(n, 2)
            usum = usum + sip + dip
        else:
            rows[:, self.o_src : self.o_src + 4] = sip.astype(">u4").view(np.uint8).reshape(n, 4)
            rows[:, self.o_dst : self.o_dst + 4] = dip.astype(">u4").view(np.uint8).reshape(n, 4)
            addr = split32(sip) + split32(dip)
            usum = usum + addr
            ipc = ~fold(_U64(self.ip_base) + addr) & _U64(0xFFFF)
            rows[:, self.o_ipsum : self.o_ipsum + 2] = ipc.astype(">u2").view(np.uint8) \
                .reshape(n, 2)
        if seq is not None:
            p = self.o_payload
            rows[:, p : p + 4] = seq.astype(">u4").view(np.uint8).reshape(n, 4)
            usum = usum - _U64(self.head4) + split32(seq)
        self._put_udp_sum(rows, usum)
        return rows, (k + steps) % self.period()

    def _put_udp_sum(self, rows: np.ndarray, usum: np.ndarray) -> None:
        c = ~fold(usum) & _U64(0xFFFF)
        c[c == 0] = 0xFFFF
        n = len(rows)
        rows[:, self.o_usum : self.o_usum + 2] = c.astype(">u2").view(np.uint8).reshape(n, 2)

    def stamp_ping(self, rows: np.ndarray, seq0: int, now_ns: int) -> None:
        """Write ping's counter and timestamp (§6.3: seq, sec, nsec; host order) and fix the sum."""
        n = len(rows)
        p = self.o_payload
        if n == 1:  # ping's usual burst: plain integers beat a dozen tiny array operations
            rows[0] = np.frombuffer(self.ping_frame(seq0, now_ns), np.uint8)
            return
        hdr = np.empty((n, 3), "<u4")
        hdr[:, 0] = (seq0 + np.arange(n)) & 0xFFFFFFFF
        hdr[:, 1] = (now_ns // 1_000_000_000) & 0xFFFFFFFF
        hdr[:, 2] = now_ns % 1_000_000_000
        rows[:, p : p + 12] = hdr.view(np.uint8)
        usum = _U64(self.ping_base) + rows[:, p : p + 12].view(">u2").sum(axis=1, dtype=_U64)
        self._put_udp_sum(rows, usum)

    def ping_frame(self, seq: int, now_ns: int) -> bytes:
        """One ping probe as bytes: the frame with counter, send time and UDP sum.

        The one-probe path (ping's burst is 1): plain integers and one join of
        the template's fixed parts, written into the slot with ``Ring.write``
        -- no array operation at all.  Its cost is part of every RTT.
        """
        sec, nsec = divmod(now_ns, 1_000_000_000)
        stamp = _STAMP.pack(seq & 0xFFFFFFFF, sec & 0xFFFFFFFF, nsec)
        c = ~_fold_int(self.ping_base + sum(_STAMP_WORDS.unpack(stamp))) & 0xFFFF
        head, mid, tail = self._ping_parts
        return b"".join((head, (c or 0xFFFF).to_bytes(2, "big"), mid, stamp, tail))

    def ping_ns(self, frame: bytes) -> int:
        """The send time (ns) in one received ping frame."""
        sec, nsec = struct.unpack_from("<II", frame, self.o_payload + 4)
        return sec * 1_000_000_000 + nsec

    def read_ping_ns(self, bufs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """The send timestamps (ns) of received ping frames."""
        p = self.o_payload
        t = bufs[idx, p + 4 : p + 12].copy().view("<u4")
        return t[:, 0].astype(np.int64) * 1_000_000_000 + t[:, 1].astype(np.int64)

    def read_seq(self, bufs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """txseq sequence numbers of received frames (big-endian at payload offset 0)."""
        p = self.o_payload
        return bufs[idx, p : p + 4].copy().view(">u4").ravel().astype(np.uint32)


def _fold_int(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def swap_addresses(rows: np.ndarray, h: int = 0) -> None:
    """pong: swap the MAC addresses, and the IPv4 addresses of IPv4 frames, in
    place in ``rows`` (one frame per row, at least ``h + 14`` bytes wide)."""
    macs = rows[:, h : h + 12].copy()
    rows[:, h : h + 6] = macs[:, 6:12]
    rows[:, h + 6 : h + 12] = macs[:, 0:6]
    if rows.shape[1] < h + 34:
        return
    v4 = (rows[:, h + 12] == 0x08) & (rows[:, h + 13] == 0x00)
    sel = slice(None) if v4.all() else np.flatnonzero(v4)
    ips = rows[sel, h + 26 : h + 34].copy()
    rows[sel, h + 26 : h + 30] = ips[:, 4:8]
    rows[sel, h + 30 : h + 34] = ips[:, 0:4]
