"""Internet checksums (RFC 1071) and their incremental update (RFC 1624),
vectorised with NumPy so a batch of frames costs a few array operations.

Sums are kept unfolded in 64-bit integers until the end: adding 16-bit
words to a 64-bit accumulator cannot overflow for any frame we handle, and
``fold`` then reduces to 16 bits with end-around carry.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

_Sum = TypeVar("_Sum", int, np.ndarray)


def fold(s: _Sum) -> _Sum:
    """Fold a one's-complement sum to 16 bits (end-around carry)."""
    for _ in range(4):  # enough for any 64-bit sum
        s = (s & 0xFFFF) + (s >> 16)
    return s


def words_sum(data: bytes | np.ndarray) -> int:
    """Sum of the big-endian 16-bit words of ``data`` (odd length: zero padded)."""
    b = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) \
        else np.asarray(data, np.uint8)
    if len(b) % 2:
        b = np.concatenate([b, np.zeros(1, np.uint8)])
    return int(b.view(">u2").sum(dtype=np.uint64))


def checksum(data: bytes | np.ndarray, initial: int = 0) -> int:
    """The Internet checksum of ``data`` (plus an optional partial sum)."""
    return ~fold(words_sum(data) + initial) & 0xFFFF


def rows_sum(rows: np.ndarray) -> np.ndarray:
    """Per-row sums of 16-bit words of a 2-D uint8 array (even width)."""
    return rows.view(">u2").sum(axis=1, dtype=np.uint64)


def checksum_rows(rows: np.ndarray, initial: np.ndarray | int = 0) -> np.ndarray:
    """Checksums of every row of a 2-D uint8 array (even width), as uint16."""
    return (~fold(rows_sum(rows) + np.uint64(0) + initial) & 0xFFFF).astype(np.uint16)


def split32(v: np.ndarray) -> np.ndarray:
    """Sum of the two 16-bit halves of 32-bit values (their share of a checksum)."""
    v = v.astype(np.uint64)
    return (v >> np.uint64(16)) + (v & np.uint64(0xFFFF))


def update(hc: np.ndarray | int, old: np.ndarray | int, new: np.ndarray | int) -> np.ndarray:
    """RFC 1624 eqn. 3: checksum after a 16-bit word changes from ``old`` to ``new``."""
    s = (~np.asarray(hc, np.uint64) & 0xFFFF) + (~np.asarray(old, np.uint64) & 0xFFFF) \
        + np.asarray(new, np.uint64)
    return (~fold(s) & 0xFFFF).astype(np.uint16)


def ipv4_header_checksum(header: bytes) -> int:
    """Checksum of an IPv4 header whose checksum field (bytes 10-11) is zero."""
    return checksum(header)


def pseudo_ipv4(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Unfolded sum of the IPv4 pseudo header."""
    return words_sum(src + dst) + proto + length


def pseudo_ipv6(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Unfolded sum of the IPv6 pseudo header."""
    return words_sum(src + dst) + (length >> 16) + (length & 0xFFFF) + proto


def udp_checksum(pseudo: int, udp: bytes) -> int:
    """UDP checksum over pseudo header sum and the datagram (checksum field zero).

    A computed 0 is sent as 0xFFFF (RFC 768: 0 means "no checksum").
    """
    c = checksum(udp, pseudo)
    return c or 0xFFFF
