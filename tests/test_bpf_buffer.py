"""The BPF buffer parser (pynetmap.bsd.bpfbuf) on synthetic buffers, built here record by
record as a BSD kernel or Npcap's driver lays them out: against a straightforward
reference walk, for each platform's header format.  No BSD kernel was involved.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynetmap.bsd import bpfbuf as B

FORMATS = [B.NPCAP, B.DARWIN, B.FREEBSD64]


def _build(fmt: B.HdrFormat, pkts: list[bytes], pad_hdr: int = 0) -> tuple[np.ndarray, list]:
    """A buffer of records; ``pad_hdr`` > 0 makes bh_hdrlen longer than the header, as
    FreeBSD does to align the network header.  Returns it and the expected fields."""
    out = bytearray()
    want = []
    ts = "<II" if fmt.ts_word == 4 else "<QQ"
    for i, p in enumerate(pkts):
        start = len(out)
        hdrlen = fmt.size + pad_hdr
        hdr = bytearray(hdrlen)
        struct.pack_into(ts, hdr, 0, 1_700_000_000 + i, 1000 * i)
        struct.pack_into("<II", hdr, fmt.caplen, len(p), len(p) + 4)  # wire len: + FCS, say
        struct.pack_into("<H", hdr, fmt.hdrlen, hdrlen)
        out += hdr + p
        out += bytes(-len(out) % fmt.align)
        want.append((start + hdrlen, len(p), len(p) + 4, 1_700_000_000 + i, 1000 * i))
    return np.frombuffer(bytes(out), np.uint8).copy(), want


def _fields(rec: B.Records) -> list:
    return list(zip(rec.data.tolist(), rec.caplen.tolist(), rec.datalen.tolist(),
                    rec.ts_sec.tolist(), rec.ts_usec.tolist(), strict=True))


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("pad", [0, 8])
def test_parse_finds_every_record(fmt: B.HdrFormat, pad: int) -> None:
    rng = np.random.default_rng(1)
    pkts = [rng.integers(0, 256, int(k), np.uint8).tobytes()
            for k in rng.integers(0, 1600, 300)]
    buf, want = _build(fmt, pkts, pad)
    rec = B.parse(buf, len(buf), fmt)
    assert _fields(rec) == want
    for i in (0, 17, 299):
        a = int(rec.data[i])
        assert buf[a: a + int(rec.caplen[i])].tobytes() == pkts[i]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=0, max_size=80), st.sampled_from(FORMATS))
def test_parse_matches_a_record_by_record_walk(sizes: list[int], fmt: B.HdrFormat) -> None:
    buf, want = _build(fmt, [bytes([k % 256]) * k for k in sizes])
    assert _fields(B.parse(buf, len(buf), fmt)) == want


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 60, 61, 1514]), st.integers(1, 70)),
                min_size=1, max_size=5),
       st.sampled_from(FORMATS), st.integers(0, 8), st.floats(0, 1))
def test_a_cut_anywhere_keeps_the_whole_records_before_it(runs: list[tuple[int, int]],
                                                          fmt: B.HdrFormat, pad: int,
                                                          where: float) -> None:
    """Runs of one size (long ones found by strided comparison) and changes of size
    (walked), cut at any byte: exactly the records whose header and packet end
    before the cut, with every header field."""
    sizes = [k for k, times in runs for _ in range(times)]
    buf, want = _build(fmt, [bytes([k % 256]) * k for k in sizes], pad)
    cut = int(where * len(buf))
    whole = [w for w in want if w[0] + w[1] <= cut]  # data offset + caplen
    assert _fields(B.parse(buf, cut, fmt)) == whole


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_a_short_read_ends_at_the_last_whole_record(fmt: B.HdrFormat) -> None:
    buf, want = _build(fmt, [b"a" * 60, b"b" * 61, b"c" * 62])
    full = len(buf)
    cut = full - 10  # inside the last packet's data
    assert _fields(B.parse(buf, cut, fmt)) == want[:2]
    assert _fields(B.parse(buf, 3, fmt)) == []
    assert _fields(B.parse(buf, 0, fmt)) == []


def test_a_bad_header_length_ends_the_walk() -> None:
    fmt = B.NPCAP
    buf, want = _build(fmt, [b"a" * 60, b"b" * 60, b"c" * 60])
    second = want[1][0] - fmt.size
    buf[second + fmt.hdrlen: second + fmt.hdrlen + 2] = [2, 0]  # bh_hdrlen = 2: corrupt
    assert _fields(B.parse(buf, len(buf), fmt)) == want[:1]
    buf[fmt.hdrlen] = 0
    assert len(B.parse(buf, len(buf), fmt)) == 0


def test_take_splits_what_a_ring_has_room_for() -> None:
    buf, want = _build(B.NPCAP, [b"x" * k for k in (60, 70, 80)])
    head, rest = B.parse(buf, len(buf), B.NPCAP).take(2)
    assert _fields(head) == want[:2] and _fields(rest) == want[2:]


def test_to_rows_copies_packets_into_buffers() -> None:
    pkts = [bytes(range(k % 256)) * 1 for k in (0, 1, 60, 255)] + [b"\xab" * 3000]
    buf, _ = _build(B.DARWIN, pkts)
    rec = B.parse(buf, len(buf), B.DARWIN)
    bufs = np.zeros((16, 2048), np.uint8)
    rows = np.array([3, 9, 4, 15, 7])
    lens = B.to_rows(buf, rec, bufs, rows)
    assert lens.tolist() == [0, 1, 60, 255, 2048]  # a frame longer than a buffer is cut
    for r, p, n in zip(rows, pkts, lens, strict=True):
        assert bufs[r, :n].tobytes() == p[:n]
    assert not bufs[[0, 1, 2, 5, 6, 8]].any()
