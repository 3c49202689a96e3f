"""lb (spec §6.7): the hash, the forwarding rules, the command line, end to end.

In-process tests drive :class:`LoadBalancer` one round at a time (``sync`` then
``step``) over pipes, so every count is exact; the end-to-end tests run lb,
pkt-gen and workers as separate processes, and one puts lb on a veth pair.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import netns
import numpy as np
import pytest

import pynetmap
from pynetmap.apps.lb import hash as H
from pynetmap.apps.lb.main import LoadBalancer, Stats, main, parse, pipe_names
from pynetmap.apps.pktgen.options import UsageError
from pynetmap.constants import NS_MOREFRAG

FINAL = re.compile(r"^(\d+) packets forwarded\.  (\d+) packets dropped\. Total (\d+)$", re.M)
PIPE_KEYS = ["ts", "interface", "output_ring", "packets_forwarded", "packets_dropped",
             "data_forward_rate_Mbps", "data_drop_rate_Mbps", "packet_forward_rate_kpps",
             "packet_drop_rate_kpps", "overflow_queue_size"]
TOTAL_KEYS = ["ts", "interface", "output_ring", "packets_received", "packets_forwarded",
              "packets_dropped", "non_ip_packets", "data_forward_rate_Mbps",
              "data_drop_rate_Mbps", "packet_forward_rate_kpps", "packet_drop_rate_kpps",
              "free_buffer_slots"]


def ip4(src: str, dst: str, proto: int, payload: bytes, ihl: int = 5) -> bytes:
    opts = bytes(4 * (ihl - 5))
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(payload), 0, 0, 64,
                       proto, 0, bytes(map(int, src.split("."))),
                       bytes(map(int, dst.split(".")))) + opts + payload


def ports(sp: int, dp: int, n: int = 18) -> bytes:
    return struct.pack("!HHHH", sp, dp, 8 + n, 0) + bytes(n)


def eth(payload: bytes, etype: int = 0x0800, dst: bytes = b"\x02" + bytes(5),
        src: bytes = b"\x02" + bytes(4) + b"\x01") -> bytes:
    return dst + src + struct.pack("!H", etype) + payload


def udp(src: str, dst: str, sp: int, dp: int, proto: int = 17, seq: int = 0) -> bytes:
    f = eth(ip4(src, dst, proto, ports(sp, dp)))
    return f[:-4] + struct.pack("!I", seq)  # a sequence number in the last payload bytes


def seq_of(frame: bytes) -> int:
    return struct.unpack("!I", frame[-4:])[0]


# -- the hash ------------------------------------------------------------------------------

def reference_hash(sip: int, dip: int, sp: int, dp: int) -> int:
    """The spec's definition, bit by bit: T(w) = XOR of K[i] for every set bit i (MSB=0)."""
    key = int("506D" * 8, 16)  # 128 key bits

    def k(i: int) -> int:
        return (key >> (128 - 32 - i)) & 0xFFFFFFFF

    def t(w: int) -> int:
        out = 0
        for i in range(32):
            if w >> (31 - i) & 1:
                out ^= k(i)
        return out

    return t(sip) ^ t(dip) ^ t(((sp & 0xFFFF) << 16) | (dp & 0xFFFF))


def test_hash_vectors_from_the_spec() -> None:
    assert H.frame_hash(udp("10.0.0.1", "10.1.0.1", 1234, 1234)) == 2822154294
    assert H.frame_hash(udp("10.0.0.1", "10.1.0.1", 8080, 80)) == 3615479679
    assert H.frame_hash(udp("10.1.0.1", "10.0.0.1", 80, 8080)) == 3615479679
    arp = bytes([2, 0, 0x11, 0x22, 0x33, 0x44, 2, 0, 0x55, 0x66, 0x77, 0x88, 8, 6]) + bytes(46)
    assert H.frame_hash(arp) == 1611685904
    assert H.frame_hash(b"\xff" * 6 + bytes([2, 0, 0, 0, 0, 1, 8, 6]) + bytes(46)) == 0


def test_table_hash_equals_the_bitwise_definition() -> None:
    rng = np.random.default_rng(1)
    v = rng.integers(0, 2**32, size=(200, 4), dtype=np.uint64)
    v[:, 2:] %= 1 << 17  # ports above 16 bits are taken mod 2^16
    got = H.sym_hash(v[:, 0], v[:, 1], v[:, 2], v[:, 3])
    want = [reference_hash(*map(int, row)) for row in v]
    assert got.tolist() == want
    assert H.key_words()[0] == 0x506D506D


def test_hash_is_symmetric_for_tcp_udp_ipv6() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        a, b = (".".join(str(x) for x in rng.integers(0, 256, 4)) for _ in range(2))
        sp, dp = (int(x) for x in rng.integers(0, 65536, 2))
        for proto in (6, 17, 1):
            assert H.frame_hash(udp(a, b, sp, dp, proto)) == H.frame_hash(udp(b, a, dp, sp, proto))
    s6, d6 = bytes(range(16)), bytes(range(100, 116))

    def v6(src: bytes, dst: bytes, sp: int, dp: int) -> bytes:
        hdr = struct.pack("!IHBB", 6 << 28, 26, 17, 64) + src + dst
        return eth(hdr + ports(sp, dp), 0x86DD)

    h6 = H.frame_hash(v6(s6, d6, 53, 4000))
    assert h6 == H.frame_hash(v6(d6, s6, 4000, 53)) != 0
    # IPv6: the first 4 bytes of each address and the ports with the seed
    assert h6 == reference_hash(0x00010203, 0x64656667, 53 + 66, 4000 + 66)


def test_hash_headers_vlan_tunnels_and_bad_ipv4() -> None:
    inner = ip4("10.0.0.1", "10.9.9.9", 6, ports(443, 5555))
    plain = H.frame_hash(eth(inner))
    assert plain == reference_hash(0x0A000001, 0x0A090909, 443 + 66, 5555 + 66)
    # other protocols: the addresses and the pseudo ports
    assert H.frame_hash(eth(ip4("10.0.0.1", "10.9.9.9", 1, bytes(30)))) == reference_hash(
        0x0A000001, 0x0A090909, 0xFDFF + 66, 0xFEFF + 66)
    vlan = eth(struct.pack("!HH", 5, 0x0800) + inner, 0x8100)
    assert H.frame_hash(vlan) == plain
    assert H.frame_hash(eth(ip4("1.2.3.4", "5.6.7.8", 4, inner))) == plain  # IP-in-IP
    assert H.frame_hash(eth(ip4("1.2.3.4", "5.6.7.8", 47,
                                struct.pack("!HH", 0, 0x0800) + inner))) == plain  # GRE
    keyed = struct.pack("!HHI", 0x2000, 0x0800, 7) + inner  # GRE with a key
    assert H.frame_hash(eth(ip4("1.2.3.4", "5.6.7.8", 47, keyed))) == plain
    teb = struct.pack("!HH", 0, 0x6558) + eth(inner)
    assert H.frame_hash(eth(ip4("1.2.3.4", "5.6.7.8", 47, teb))) == plain
    assert H.frame_hash(eth(ip4("10.0.0.1", "10.9.9.9", 6, ports(443, 5555), ihl=7))) == plain
    bad = bytearray(eth(inner))
    bad[14] = 0x44  # IHL 4
    assert H.frame_hash(bytes(bad)) == 0
    # a VLAN frame that carries no IP hashes the outer MACs
    arp = bytes([2, 0, 0x11, 0x22, 0x33, 0x44, 2, 0, 0x55, 0x66, 0x77, 0x88])
    assert H.frame_hash(arp + b"\x81\x00\x00\x05\x08\x06" + bytes(42)) == 1611685904


def test_bytes_past_the_end_do_not_count() -> None:
    """A truncated frame hashes the same whatever its buffer held before."""
    f = udp("10.0.0.1", "10.1.0.1", 1234, 1234)[:36]  # cut inside the UDP ports
    pool = np.zeros((4, 2048), np.uint8)
    pool[2, :36] = np.frombuffer(f, np.uint8)
    pool[3, :] = 0xAB
    pool[3, :36] = np.frombuffer(f, np.uint8)
    got = H.batch_hash(pool, np.array([2, 3]), np.array([36, 36]))
    assert got[0] == got[1] == reference_hash(0x0A000001, 0x0A010001, (0x04D2 + 66),
                                              (0x0000 + 66))


# -- forwarding, one round at a time -------------------------------------------------------

class Rig:
    """lb in this process on ``netmap:IN}0``, a producer on ``IN{0``, consumers on pipes."""

    def __init__(self, groups: list[str], extra: int = 0, batch: int = 2048) -> None:
        tag = uuid.uuid4().hex[:6]
        self.inp = f"lbin{tag}"
        self.names = {g: f"{g}{tag}" for g in {g.split(':')[0] for g in groups}}
        argv = ["-i", f"netmap:{self.inp}}}0@conf:slots=4096", "-w", "0", "-b", str(batch)]
        for g in groups:
            name, n = g.split(":")
            argv += ["-p", f"{self.names[name]}:{n}"]
        if extra:
            argv += ["-B", str(extra)]
        self.cfg = parse(argv)
        self.lb = LoadBalancer(self.cfg)
        self.lb.open()
        self.prod = pynetmap.open(f"netmap:{self.inp}{{0")
        self.cons: dict[str, pynetmap.Port] = {}

    def consumer(self, name: str, k: int) -> pynetmap.Port:
        key = f"{name}}}{k}"
        if key not in self.cons:
            self.cons[key] = pynetmap.open(f"netmap:{self.names[name]}}}{k}")
        return self.cons[key]

    def send(self, frames: list[bytes], flags: list[int] | None = None) -> None:
        tx = self.prod.tx_rings[0]
        b = tx.reserve(len(frames))
        assert b.count == len(frames)
        b.write(frames)
        if flags is not None:
            b.flags = np.array(flags, np.uint16)
        tx.advance(len(frames))
        self.prod.txsync()

    def round(self) -> int:
        """Rounds of lb until the input is empty; the input slots moved."""
        total = 0
        while True:
            self.lb.sync()
            moved = self.lb.step()
            self.lb.sync()
            total += moved
            if not moved:
                return total

    def take(self, name: str, k: int, release: bool = True) -> list[bytes]:
        port = self.consumer(name, k)
        port.rxsync()
        rx = port.rx_rings[0]
        got = rx.receive()
        frames = got.frames()
        if release:
            rx.advance(got.count)
            port.rxsync()
        return frames

    def close(self) -> str:
        self.lb.close()
        for p in [*self.cons.values(), self.prod]:
            p.close()
        return self.lb.summary()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for r in made:
        if r.prod is not None and not r.prod.closed:
            r.close()


def flows(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [udp(f"10.0.{rng.integers(256)}.{rng.integers(256)}", "10.1.0.1",
                int(rng.integers(1024, 65536)), 80, seq=i) for i in range(n)]


def test_distribution_follows_the_hash(rigs: list[Rig]) -> None:
    r = Rig(["out:4"])
    rigs.append(r)
    frames = flows(2000)
    r.send(frames)
    assert r.round() == 2000
    want: list[list[bytes]] = [[], [], [], []]
    for f in frames:
        want[H.frame_hash(f) % 4].append(f)
    for k in range(4):
        assert r.take("out", k) == want[k]  # byte-exact, in arrival order
        assert 300 < len(want[k]) < 700
    lb = r.lb.lb
    assert lb is not None
    assert [p.pkts for p in lb.pipes] == [len(w) for w in want]
    assert (lb.received, lb.forwarded, lb.dropped, lb.non_ip) == (2000, 2000, 0, 0)
    assert FINAL.search(r.close()).groups() == ("2000", "0", "2000")  # type: ignore[union-attr]


def test_one_flow_one_pipe_and_its_reverse_too(rigs: list[Rig]) -> None:
    r = Rig(["out:3"])
    rigs.append(r)
    fwd = [udp("192.168.1.5", "10.7.7.7", 40000, 443, proto=6, seq=i) for i in range(50)]
    rev = [udp("10.7.7.7", "192.168.1.5", 443, 40000, proto=6, seq=i) for i in range(50)]
    r.send(fwd + rev)
    r.round()
    k = H.frame_hash(fwd[0]) % 3
    assert r.take("out", k) == fwd + rev
    assert all(not r.take("out", j) for j in range(3) if j != k)


def test_full_ring_without_extra_buffers_drops_and_counts(rigs: list[Rig]) -> None:
    r = Rig(["out:1"])
    rigs.append(r)
    frames = [udp("10.0.0.1", "10.1.0.1", 1, 2, seq=i) for i in range(3000)]
    r.send(frames)
    r.round()
    lb = r.lb.lb
    assert lb is not None
    assert (lb.forwarded, lb.dropped) == (1023, 3000 - 1023)  # a pipe holds n - 1 slots
    assert lb.pipes[0].drop == 3000 - 1023
    assert r.take("out", 0) == frames[:1023]
    assert FINAL.search(r.close()).groups() == ("1023", "1977", "3000")  # type: ignore[union-attr]


def test_no_loss_with_enough_extra_buffers(rigs: list[Rig]) -> None:
    r = Rig(["out:2"], extra=4096)
    rigs.append(r)
    frames = flows(3500, seed=3)
    r.send(frames)
    r.round()
    lb = r.lb.lb
    assert lb is not None and lb.freeq is not None
    queued = sum(p.oq.n for p in lb.pipes if p.oq)
    assert queued > 0 and lb.freeq.n == 4096 - queued and lb.dropped == 0
    got: list[list[bytes]] = [[], []]
    for _ in range(10):  # consumers drain, lb refills from the overflow queues
        for k in range(2):
            got[k] += r.take("out", k)
        r.round()
    want: list[list[bytes]] = [[], []]
    for f in frames:
        want[H.frame_hash(f) % 2].append(f)
    assert got == want
    assert (lb.forwarded, lb.dropped, lb.freeq.n) == (3500, 0, 4096)
    assert FINAL.search(r.close()).groups() == ("3500", "0", "3500")  # type: ignore[union-attr]


def test_revoke_drops_the_oldest_queued_packets(rigs: list[Rig]) -> None:
    """Free queue empty: the 150 oldest packets of the longest overflow queue go."""
    r = Rig(["out:1"], extra=300)
    rigs.append(r)
    frames = [udp("10.0.0.1", "10.1.0.1", 1, 2, seq=i) for i in range(1023 + 300 + 100)]
    r.send(frames)
    r.round()
    lb = r.lb.lb
    assert lb is not None and lb.freeq is not None
    p = lb.pipes[0]
    assert p.oq is not None
    # 1023 in the ring, 300 queued, then 150 revoked to make room for the last 100
    assert (lb.forwarded, lb.dropped, p.oq.n, lb.freeq.n) == (1023, 150, 250, 50)
    got = []
    for _ in range(4):
        got += r.take("out", 0)
        r.round()
    assert [seq_of(f) for f in got] == list(range(1023)) + list(range(1023 + 150, 1423))
    assert (lb.forwarded, lb.dropped) == (1273, 150)


def test_group_chaining_forwards_what_consumers_release(rigs: list[Rig]) -> None:
    r = Rig(["a:1", "b:2"])
    rigs.append(r)
    frames = flows(600, seed=4)
    r.send(frames)
    r.round()
    assert r.take("a", 0) == frames  # group a sees everything and releases it
    r.round()  # lb notices the release and chains the packets to group b
    want: list[list[bytes]] = [[], []]
    for f in frames:
        want[H.frame_hash(f) % 2].append(f)
    assert [r.take("b", k) for k in range(2)] == want
    lb = r.lb.lb
    assert lb is not None
    assert (lb.received, lb.forwarded, lb.dropped) == (600, 1200, 0)


def test_fragments_stay_together(rigs: list[Rig]) -> None:
    r = Rig(["out:4"])
    rigs.append(r)
    frames, flags = [], []
    for i, f in enumerate(flows(30, seed=5)):
        frames += [f, bytes([i]) * 60, bytes([i]) * 61]  # a 3-slot packet: one hash
        flags += [NS_MOREFRAG, NS_MOREFRAG, 0]
    r.send(frames, flags)
    r.round()
    total = 0
    for k in range(4):
        got = r.take("out", k)
        total += len(got)
        for j in range(0, len(got), 3):
            assert H.frame_hash(got[j]) % 4 == k
            assert got[j + 1][0] == got[j + 2][0] == seq_of(got[j])
    assert total == 90


# -- names, options, output ------------------------------------------------------------------

def test_group_names_and_ids() -> None:
    cfg = parse(["-i", "eth0-1", "-p", "2", "-p", "x:1", "-p", "3"])
    assert cfg.ifname == "netmap:eth0-1"
    groups = pipe_names(cfg)
    assert [(g.name, g.nports, g.first_id) for g in groups] == [
        ("eth0", 2, 0), ("x", 1, 0), ("eth0", 3, 2)]
    assert pipe_names(parse(["-i", "vale0:a"]))[0].name == "vale0:a"
    assert parse(["-i", "netmap:p}0"]).groups == [("", 2)]
    with pytest.raises(UsageError, match="is a pipe"):
        pipe_names(parse(["-i", "netmap:p}0"]))


@pytest.mark.parametrize("argv, why", [
    ([], "missing interface name"),
    (["-i", "x", "-p", "0"], "invalid number of pipes '0'"),
    (["-i", "x", "-p", ":3"], "missing prefix before ':'"),
    (["-i", "x", "-b", "0"], "-b must be at least 1"),
    (["-i", "x", "-B", "-5"], "-B must be at least 0"),
    (["-i", "x", "-Q"], "bad option"),
])
def test_usage_errors(argv: list[str], why: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert why in err and len(err.strip().splitlines()) == 1
    assert out.startswith("usage: lb [options]")


def test_open_errors_are_one_line(capsys: pytest.CaptureFixture) -> None:
    tag = uuid.uuid4().hex[:6]
    assert main(["-i", f"netmap:in{tag}}}0", "-w", "0"]) == 1  # a pipe input needs -p NAME:N
    assert "is a pipe" in capsys.readouterr().err
    squatter = pynetmap.open(f"netmap:o{tag}}}0")  # created first: in its own region
    try:
        assert main(["-i", f"netmap:in{tag}}}0", "-p", f"o{tag}:1", "-w", "0"]) == 1
        err = capsys.readouterr().err
        assert "failed to open pipe #1 in zero-copy mode" in err
    finally:
        squatter.close()


def test_stats_lines_are_netmaps() -> None:
    r = Rig(["out:2"])
    try:
        lb = r.lb.lb
        assert lb is not None
        st = Stats(lb, r.cfg.ifname, 1000.0)
        lb.pipes[0].pkts, lb.pipes[0].bytes = 3000, 3000 * 60
        lb.pipes[1].drop, lb.pipes[1].drop_bytes = 500, 500 * 60
        lb.received, lb.forwarded, lb.dropped, lb.non_ip = 3500, 3000, 500, 7
        lines = st.snapshot(1002.0)
    finally:
        r.close()
    assert len(lines) == 3 and all(" " not in ln for ln in lines)
    objs = [json.loads(ln) for ln in lines]
    assert [list(o) for o in objs] == [PIPE_KEYS, PIPE_KEYS, TOTAL_KEYS]
    assert lines[0].startswith('{"ts":1002.000000,"interface":"netmap:out')
    assert '"output_ring":0,"packets_forwarded":3000,"packets_dropped":0,' \
           '"data_forward_rate_Mbps":0.6866,"data_drop_rate_Mbps":0.0000,' \
           '"packet_forward_rate_kpps":1.5000,"packet_drop_rate_kpps":0.0000,' \
           '"overflow_queue_size":0}' in lines[0]
    assert objs[2]["interface"] == r.cfg.ifname and objs[2]["output_ring"] is None
    assert (objs[2]["packets_received"], objs[2]["packets_forwarded"],
            objs[2]["packets_dropped"], objs[2]["non_ip_packets"]) == (3500, 3000, 500, 7)
    assert '"packet_drop_rate_kpps":0.2500,"free_buffer_slots":0}' in lines[2]


# -- separate processes ---------------------------------------------------------------------

def _py(*args: str, **kw: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]


def _finish(p: subprocess.Popen, sig: bool = True) -> tuple[str, str]:
    if sig and p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        return p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()


WORKER = """
import sys, time, pynetmap
from pynetmap import POLLIN
n, want, seen = 0, int(sys.argv[2]), set()
with pynetmap.open(sys.argv[1]) as port:
    print("ready", flush=True)
    rx = port.rx_rings[0]
    end = time.monotonic() + 20
    while n < want and time.monotonic() < end:
        if port.poll(POLLIN, 200) & POLLIN:
            got = rx.receive()
            n += got.count
            rx.advance(got.count)
    port.rxsync()
print(n)
"""


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no {text!r} from {proc.args!r}")


def test_processes_pktgen_to_lb_to_workers() -> None:
    """pkt-gen tx -> lb -> 2 worker processes; stats lines while it runs, netmap's last line."""
    tag = uuid.uuid4().hex[:6]
    n = 20000
    lb = _py("-m", "pynetmap.apps.lb", "-i", f"netmap:in{tag}}}0", "-p", f"w{tag}:2", "-w", "0",
             "-o", "1", "-B", "8192")
    workers: list[subprocess.Popen] = []
    try:
        time.sleep(1.0)  # lb creates the pipes: it must open them first
        assert lb.poll() is None
        # the per-pipe split of the flows pkt-gen sends (10.0.0.1-10.0.0.100, port 1234)
        hashes = [H.frame_hash(udp(f"10.0.0.{i}", "10.1.0.1", 1234, 1234)) % 2
                  for i in range(1, 101)]
        share = [sum(n // 100 for h in hashes if h == k) for k in range(2)]
        for k in range(2):
            workers.append(_py("-c", WORKER, f"netmap:w{tag}}}{k}", str(share[k])))
            _wait_for(workers[-1], "ready")
        tx = subprocess.run([sys.executable, "-m", "pynetmap.apps.pktgen", "-f", "tx", "-w", "0",
                             "-i", f"netmap:in{tag}{{0", "-n", str(n), "-s",
                             "10.0.0.1-10.0.0.100"], capture_output=True, text=True, timeout=60)
        assert tx.returncode == 0, tx.stderr
        counts = [int(_finish(w, sig=False)[0].split()[-1]) for w in workers]
        time.sleep(1.2)  # one more stats line
    finally:
        for w in workers:
            _finish(w)
        out, err = _finish(lb)
    assert lb.returncode == 0, err
    assert counts == share
    m = FINAL.search(out)
    assert m and m.groups() == (str(n), "0", str(n))
    stats = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert stats and len(stats) % 3 == 0
    last = stats[-3:]
    assert [list(o) for o in last] == [PIPE_KEYS, PIPE_KEYS, TOTAL_KEYS]
    assert [o["packets_forwarded"] for o in last[:2]] == share
    assert last[2]["packets_received"] == n and last[2]["non_ip_packets"] == 0
    assert last[2]["free_buffer_slots"] == 8192


def test_lb_on_a_veth_interface(veth: netns.VethPair) -> None:
    """lb's input is a NIC (veth, in a namespace of this test); frames arrive whole."""
    frames = [eth(ip4("10.0.0.1", f"10.1.0.{i % 50}", 17, ports(1000 + i, 53, 30)),
                  dst=veth.mac_a, src=veth.mac_b) for i in range(200)]

    def body() -> tuple[list[list[bytes]], str]:
        cfg = parse(["-i", f"netmap:{veth.if_a}", "-p", "2", "-w", "0"])
        lb = LoadBalancer(cfg)
        lb.open()
        try:
            outs = [pynetmap.open(f"netmap:{veth.if_a}}}{k}") for k in range(2)]
            os.write(w, b"1")
            got: list[list[bytes]] = [[], []]
            end = time.monotonic() + 10
            while sum(map(len, got)) < len(frames) and time.monotonic() < end:
                lb.sync()
                lb.step()
                lb.sync()
                for k, o in enumerate(outs):
                    o.rxsync()
                    b = o.rx_rings[0].receive()
                    got[k] += b.frames()
                    o.rx_rings[0].advance(b.count)
                time.sleep(0.01)
            for o in outs:
                o.close()
        finally:
            lb.close()
        return got, lb.summary()

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the sender, in B, once lb is open
        try:
            os.read(r, 1)
            netns.send_frames(netns.raw_socket(veth.ns_b, veth.if_b), frames)
        finally:
            os._exit(0)
    try:
        got, summary = netns.call(veth.ns_a, body, timeout=30)
    finally:
        os.waitpid(pid, 0)
    want: list[list[bytes]] = [[], []]
    for f in frames:
        want[H.frame_hash(f) % 2].append(f)
    assert got == want
    assert FINAL.search(summary).groups() == ("200", "0", "200")  # type: ignore[union-attr]


def test_lb_reads_a_vale_port() -> None:
    """Input from a switch: the pipes live in the VALE port's region (default names)."""
    sw = f"vale{uuid.uuid4().hex[:6]}"
    lb = LoadBalancer(parse(["-i", f"{sw}:lb", "-w", "0", "-p", "2"]))
    lb.open()
    src = pynetmap.open(f"{sw}:src")
    outs = [pynetmap.open(f"{sw}:lb}}{k}") for k in range(2)]
    try:
        frames = flows(40)
        src.tx_rings[0].send(frames)
        src.txsync()  # the switch floods them to lb's port
        lb.sync()
        assert lb.step() == 40
        lb.sync()
        got = []
        for k, p in enumerate(outs):
            p.rxsync()
            r = p.rx_rings[0]
            b = r.receive()
            got += [(k, f) for f in b.frames()]
            r.advance(b.count)
            p.rxsync()
        assert sorted(f for _, f in got) == sorted(frames)
        assert all(H.frame_hash(f) % 2 == k for k, f in got)
    finally:
        for p in outs + [src]:
            p.close()
        lb.close()
