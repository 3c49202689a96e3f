"""pkt-gen's frames: the spec's reference vector, the odometer, and checksums
checked against scapy's (a checksum implementation we did not write)."""

import re
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pynetmap import checksum as C
from pynetmap.apps.pktgen import options as O
from pynetmap.apps.pktgen.frames import FrameSource, RttHistogram, SeqChecker
from pynetmap.apps.pktgen.template import Template, parse_range, swap_addresses

REFERENCE = bytes.fromhex(
    "ffffffffffff" "000000000000" "0800"
    "4510" "002e" "0000" "4000" "4011" "26ad" "0a000001" "0a010001"
    "04d2" "04d2" "001a" "1580"
    "6e65746d617020706b742d67656e20444952")


def tpl(size=60, src="10.0.0.1", dst="10.1.0.1", v6=False, h=0):
    return Template(size, parse_range(src, v6), parse_range(dst, v6), vnet_hdr=h)


def scapy_sums(frame: bytes) -> tuple[int | None, int]:
    """(IPv4 header checksum or None, UDP checksum) as scapy computes them."""
    p = Ether(frame)
    if IP in p:
        del p[IP].chksum
    del p[UDP].chksum
    q = Ether(bytes(p))
    return (q[IP].chksum if IP in q else None), q[UDP].chksum


def check_frame(frame: bytes) -> None:
    p = Ether(frame)
    ip_sum, udp_sum = scapy_sums(frame)
    if IP in p:
        assert p[IP].chksum == ip_sum
        assert p[IP].len == len(frame) - 14
    else:
        assert p[IPv6].plen == len(frame) - 54
    assert p[UDP].chksum == udp_sum
    assert p[UDP].len == len(frame) - (34 if IP in p else 54)


def test_reference_frame_is_byte_exact():
    assert tpl().frame.tobytes()[: len(REFERENCE)] == REFERENCE
    payload = tpl(100).frame.tobytes()[42:]
    assert payload[:39] == b"netmap pkt-gen DIRECT payload\nhttp://in"


def test_odometer_order_and_wrap():
    t = tpl(dst="10.1.0.1:1234-10.1.0.2:1235")
    rows, nxt = t.batch(0, 5)
    got = [(Ether(r.tobytes())[IP].dst, Ether(r.tobytes())[UDP].dport) for r in rows]
    assert got == [("10.1.0.1", 1234), ("10.1.0.1", 1235), ("10.1.0.2", 1234),
                   ("10.1.0.2", 1235), ("10.1.0.1", 1234)]
    assert [r[24:26].tobytes().hex() for r in rows] == ["26ad", "26ad", "26ac", "26ac", "26ad"]
    # the spec's correct UDP checksums (netmap's pkt-gen gets frames 3+ wrong)
    assert [r[40:42].tobytes().hex() for r in rows] == ["1580", "157f", "157f", "157e", "1580"]
    assert nxt == 1


def test_digit_order_src_port_first():
    t = tpl(src="10.0.0.1:1-10.0.0.2:2", dst="10.1.0.1:7-10.1.0.2:8")
    rows, _ = t.batch(0, 16)
    seen = [(p[IP].src, p[UDP].sport, p[IP].dst, p[UDP].dport)
            for p in (Ether(r.tobytes()) for r in rows)]
    assert seen[:3] == [("10.0.0.1", 1, "10.1.0.1", 7), ("10.0.0.1", 2, "10.1.0.1", 7),
                        ("10.0.0.2", 1, "10.1.0.1", 7)]
    assert seen[4] == ("10.0.0.1", 1, "10.1.0.1", 8)
    assert seen[8] == ("10.0.0.1", 1, "10.1.0.2", 7)
    assert len(set(seen)) == 16


@settings(max_examples=60, deadline=None)
@given(size=st.integers(42, 1514), a=st.integers(0, 2**32 - 300), span=st.integers(0, 260),
       p0=st.integers(0, 65000), pspan=st.integers(0, 300), k=st.integers(0, 10**6))
def test_ipv4_range_checksums_match_scapy(size, a, span, p0, pspan, k):
    import ipaddress
    lo, hi = ipaddress.IPv4Address(a), ipaddress.IPv4Address(a + span)
    p1 = min(65535, p0 + pspan)
    t = tpl(size, src=f"{lo}:{p0}-{hi}:{p1}", dst=f"{hi}:{p1}-{hi}:{p1}")
    rows, _ = t.batch(k, 7)
    for r in rows:
        check_frame(r.tobytes())


@settings(max_examples=40, deadline=None)
@given(size=st.integers(62, 1514), group=st.integers(0, 7), w0=st.integers(0, 65000),
       span=st.integers(0, 500), k=st.integers(0, 10**5))
def test_ipv6_range_checksums_match_scapy(size, group, w0, span, k):
    words = [0xFD00, 0, 0, 1, 0, 0, 0, 1]
    words[group] = w0

    def addr(w):
        ws = list(words)
        ws[group] = w
        return ":".join(f"{x:x}" for x in ws)

    src = f"{group}@[{addr(w0)}]:1000-[{addr(min(0xFFFF, w0 + span))}]:1003"
    t = tpl(size, src=src, dst="[fd00::2]:53", v6=True)
    rows, _ = t.batch(k, 6)
    for r in rows:
        check_frame(r.tobytes())
    assert Ether(rows[0].tobytes())[IPv6].src != "::"


def test_random_addresses_keep_checksums_valid():
    t = tpl()
    rows, _ = t.batch(0, 50, rnd=np.random.default_rng(1), rand_src=True, rand_dst=True)
    assert len({r[26:30].tobytes() for r in rows}) > 40
    for r in rows:
        check_frame(r.tobytes())


def test_txseq_sequence_numbers_and_checksums():
    t = tpl(128)
    seq = np.array([0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF], np.uint64)
    rows, _ = t.batch(0, 5, seq=seq)
    for s, r in zip(seq, rows, strict=True):
        assert struct.unpack(">I", r[42:46].tobytes())[0] == s
        check_frame(r.tobytes())


@pytest.mark.parametrize("v6,h", [(False, 0), (False, 12), (True, 0)])
@pytest.mark.parametrize("n", [1, 3])
def test_ping_stamp_checksum_and_readback(n, v6, h):
    """The one-probe path (n=1, ping_frame) and the batch path stamp the same way."""
    t = tpl(80, "2001:db8::1", "2001:db8::2", v6=True) if v6 else tpl(80, h=h)
    rows = np.repeat(t.frame[None, :], n, axis=0)
    t.stamp_ping(rows, 7, 1_234_567_890_123_456_789)
    p = t.o_payload
    for i, r in enumerate(rows):
        check_frame(r[h:].tobytes())
        assert struct.unpack("<III", r[p:p + 12].tobytes()) == (
            7 + i, 1_234_567_890 & 0xFFFFFFFF, 123_456_789)
    bufs = rows.copy()
    ts = t.read_ping_ns(bufs, np.arange(n))
    assert (ts == (1_234_567_890 & 0xFFFFFFFF) * 10**9 + 123_456_789).all()


def test_vnet_header_prefix():
    t = tpl(60, h=12)
    assert t.frame[:12].tobytes() == bytes(12)
    assert t.frame[12:].tobytes()[: len(REFERENCE)] == REFERENCE


def test_swap_addresses():
    t = tpl(60)
    rows = np.repeat(t.frame[None, :], 2, axis=0)
    rows[:, 6:12] = 1
    swap_addresses(rows)
    p = Ether(rows[0].tobytes())
    assert p.dst == "01:01:01:01:01:01" and p.src == "ff:ff:ff:ff:ff:ff"
    assert p[IP].src == "10.1.0.1" and p[IP].dst == "10.0.0.1"
    check_frame(rows[1].tobytes())


def test_checksum_helpers_against_rfc1071_example():
    data = bytes.fromhex("0001f203f4f5f6f7")  # RFC 1071 §3 example: sum ddf2
    assert C.fold(C.words_sum(data)) == 0xDDF2
    assert C.checksum(data) == 0xFFFF - 0xDDF2
    assert C.checksum(b"\x01") == 0xFFFF - 0x0100
    rows = np.frombuffer(data * 3, np.uint8).reshape(3, 8)
    assert (C.checksum_rows(rows) == 0xFFFF - 0xDDF2).all()
    new = C.update(0xFFFF - 0xDDF2, 0x0001, 0x0002)
    assert int(new) == C.checksum(bytes.fromhex("0002f203f4f5f6f7"))


def test_udp_checksum_zero_is_sent_as_ffff():
    assert C.udp_checksum(0, b"\xff\xff") == 0xFFFF


def source(*args, buf=2048):
    return FrameSource(O.parse(["-i", "netmap:x", *args]), buf)


def test_fragment_count_follows_buffer_size():
    fs = source("-f", "tx", "-l", "5000")
    assert fs.frags == 3  # ceil(5000 / 2048)
    fs = source("-f", "tx", "-l", "1000", "-M", "300")
    assert fs.frags == 4 and fs.frag_size == 300
    fs = source("-f", "tx", "-F", "2")
    assert fs.frags == 2 and fs.copy


def test_fast_path_only_with_fixed_frames():
    assert not source("-f", "tx").copy
    assert source("-f", "tx", "-d", "10.1.0.1-10.1.0.9").copy
    assert source("-f", "tx", "-o", "4").copy
    assert source("-f", "tx", "-l", "100", "-l", "60").copy


def test_rtt_histogram_lines():
    h = RttHistogram()
    h.add(np.array([1000, 1500, 70000]))
    h.add(np.array([2047]))
    text = h.window_lines()
    assert "count 4 RTT: min 1000 av 18636 ns" in text
    assert "k: 512 .. 65536\n\t" in text  # buckets 2^9 .. 2^16
    assert text.rstrip("\n").split("\t")[1].split() == ["1", "2", "0", "0", "0", "0", "0", "1"]
    assert "RTT over 10 packets: min 1000 av 7454 ns" in h.final_line(10)


def test_rtt_histogram_one_by_one_as_arrays():
    """add_one (ping's usual probe, plain ints) counts as add does; samples keep arrival order."""
    h, g = RttHistogram(), RttHistogram()
    h.add_one(1000)
    h.add(np.array([1500, 70000]))
    h.add_one(2047)
    h.add_one(0)  # a clock that did not move counts as 1 ns, as in add
    g.add(np.array([1000, 1500, 70000, 2047, 0]))
    assert h.samples().tolist() == [1000, 1500, 70000, 2047, 1] == g.samples().tolist()
    assert h.received() == 5
    def strip(text: str) -> str:  # the D() prefixes carry the time of day
        return re.sub(r"\d{3}\.\d{6} ", "", text)

    assert strip(h.window_lines()) == strip(g.window_lines())


def test_seq_checker_counts_gaps_and_reordering():
    t = tpl(64)
    seq = np.array([5, 6, 7, 9, 10, 8, 11], np.uint64)
    rows, _ = t.batch(0, len(seq), seq=seq)
    c = SeqChecker()
    lens = np.full(len(seq), 64)
    c.check(rows, np.arange(len(seq)), lens, np.zeros(len(seq), np.uint16))
    assert (c.gaps, c.out_of_order) == (2, 1)  # 7->9 gap, 10->8 backwards, 8->11 gap
    c.check(rows, np.array([6]), lens[:1], np.zeros(1, np.uint16))
    assert (c.gaps, c.out_of_order) == (2, 2)  # expected 12, found 11


@pytest.mark.parametrize("h", [0, 12])
@pytest.mark.parametrize("kind", ["ipv4", "arp", "short"])
def test_pong_one_answers_as_the_batch_path(kind, h):
    """pong's one-slot path (bytes) swaps what swap_addresses (the batch path) swaps:
    MACs always, IPv4 addresses only in an IPv4 frame long enough to hold them."""
    import uuid

    import pynetmap

    frame = bytes(h) + tpl(60).frame.tobytes()
    if kind == "arp":
        frame = frame[: h + 12] + b"\x08\x06" + frame[h + 14 :]
    elif kind == "short":
        frame = frame[: h + 30]  # IPv4 ethertype, but no room for the addresses
    frame = frame[:h] + bytes(range(1, 13)) + frame[h + 12 :]  # two distinct MACs
    want = np.frombuffer(frame, np.uint8)[None, :].copy()
    swap_addresses(want, h)
    fs = source("-f", "pong", "-H", str(h))
    name = "pp" + uuid.uuid4().hex[:8]
    with pynetmap.open(f"netmap:{name}{{0") as a, pynetmap.open(f"netmap:{name}}}0") as b:
        rx, tx = a.rx_rings[0], a.tx_rings[0]
        bt = b.tx_rings[0]
        bt.write(bt.head, frame)
        bt.advance(1)
        b.txsync()
        a.rxsync()
        assert fs.pong_one(rx, rx.head, tx, tx.head) == len(frame)
        assert tx.read(tx.head) == want.tobytes() != frame
