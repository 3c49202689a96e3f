"""pynetmap.records.find against a record-by-record reference walk, for every kind of
layout (fixed or own header length, any alignment), runs long enough to take the
strided path and changes of size that take the walk, and a cut at any byte."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pynetmap import records

LAYOUTS = [
    records.Layout(caplen=8, size=16),  # pcap_dump
    records.Layout(caplen=8, size=16, align=4),  # a fixed header, padded records
    records.Layout(caplen=8, size=18, hdrlen=16, align=4),  # Npcap, macOS
    records.Layout(caplen=16, size=26, hdrlen=24, align=8),  # FreeBSD LP64
]


def build(lay: records.Layout, runs: list[tuple[int, int]], pad: int) -> bytes:
    """Records of ``runs`` (size, how many), each header ``pad`` bytes longer than the
    least when the layout has its own header length."""
    out = bytearray()
    for size, times in runs:
        for _ in range(times):
            h = lay.size + (pad if lay.hdrlen is not None else 0)
            hdr = bytearray(h)
            struct.pack_into("=I", hdr, lay.caplen, size)
            if lay.hdrlen is not None:
                struct.pack_into("=H", hdr, lay.hdrlen, h)
            out += hdr + bytes([size % 251]) * size
            out += bytes(-len(out) % lay.align)
    return bytes(out)


def reference(raw: bytes, used: int, lay: records.Layout,
              count: int | None) -> tuple[list[tuple[int, int, int]], int]:
    """(start, header length, packet length) of each whole record, and where the next
    would start: one record at a time."""
    out, at = [], 0
    while (count is None or len(out) < count) and at + lay.size <= used:
        c = struct.unpack_from("=I", raw, at + lay.caplen)[0]
        h = lay.size if lay.hdrlen is None else struct.unpack_from("=H", raw, at + lay.hdrlen)[0]
        if h < lay.size or at + h + c > used:
            break
        out.append((at, h, c))
        at += h + c
        at += -at % lay.align
    return out, at


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LAYOUTS),
       st.lists(st.tuples(st.sampled_from([0, 1, 60, 61, 200]), st.integers(1, 70)),
                min_size=1, max_size=6),
       st.integers(0, 6), st.floats(0, 1), st.none() | st.integers(0, 300))
def test_find_is_the_reference_walk(lay: records.Layout, runs: list[tuple[int, int]],
                                    pad: int, where: float, count: int | None) -> None:
    raw = build(lay, runs, pad)
    used = int(where * len(raw))
    buf = np.frombuffer(raw + bytes(64), np.uint8).copy()  # bytes past used are not read
    chain = records.find(buf, used, lay, count)
    want, end = reference(raw, used, lay, count)
    hl = chain.hdrlen
    got = list(zip(chain.start.tolist(),
                   [hl] * len(chain.start) if isinstance(hl, int) else hl.tolist(),
                   chain.caplen.tolist(), strict=True))
    assert got == want
    assert chain.end == end
