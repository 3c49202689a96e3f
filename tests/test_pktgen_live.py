"""``pkt-gen -f tx --live``: the kernel's live-frame sender, checked at the veth peer.

Frames are captured by an AF_PACKET socket on the peer (in its own namespace, GRO on
so that veth takes XDP frames) and compared with what ``pkt-gen -f tx`` builds
(:meth:`Template.batch`): exact count, the address/port odometer, byte for byte.
The IPv4 and UDP checksums are also recomputed here from scratch, by a separate
implementation.  Unprivileged parts (option refusals, the kernel check, the
checksum constant, the assembler) run everywhere.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import netns
import pytest

from pynetmap.apps.pktgen import options as O
from pynetmap.apps.pktgen.live import odometer
from pynetmap.apps.pktgen.template import Template, parse_range
from pynetmap.errors import NetmapError
from pynetmap.linux import live
from pynetmap.linux.bpf import Asm

SO_TIMESTAMPNS = 35


# -- without privileges ---------------------------------------------------------------------

@pytest.mark.parametrize("extra,name", [
    (["-F", "2"], "-F"), (["-M", "100"], "-M"), (["-l", "100", "-l", "60"], "a second -l"),
    (["-H", "10"], "-H"), (["-C", "512"], "-C"), (["--replay", "x.pcap"], "--replay"),
    (["--busy"], "--busy"), (["-I"], "-I"), (["-X"], "-X"), (["-r"], "-r"), (["-z"], "-z"),
    (["-Z"], "-Z"), (["-o", "4"], "-o 4/8 (copy)"),
])
def test_unsupported_options_are_refused_by_name(extra: list[str], name: str) -> None:
    with pytest.raises(O.UsageError, match=rf"--live does not support {re.escape(name)}:"):
        O.parse(["-i", "veth0", "-f", "tx", "--live", *extra])


def test_live_is_tx_on_a_whole_interface() -> None:
    with pytest.raises(O.UsageError, match="--live sends .-f tx.; not -f rx"):
        O.parse(["-i", "veth0", "--live"])
    for name in ("netmap:veth0-1", "netmap:veth0^", "vale0:a", "netmap:a{1",
                 "netmap:veth0@conf:rings=2"):
        with pytest.raises(O.UsageError, match="--live sends on a whole Linux interface"):
            O.parse(["-i", name, "-f", "tx", "--live"])
    with pytest.raises(O.UsageError, match="at most 256"):
        O.parse(["-i", "veth0", "-f", "tx", "--live", "-b", "257"])
    with pytest.raises(O.UsageError, match="one worker per cpu"):
        O.parse(["-i", "veth0", "-f", "tx", "--live", "-p", str((os.cpu_count() or 1) + 1)])
    c = O.parse(["-i", "veth0", "-f", "tx", "--live"])
    assert (c.ifname, c.burst, c.live) == ("netmap:veth0", 64, True)
    assert "--live" in O.usage()


def test_old_kernel_is_refused_in_one_line() -> None:
    with pytest.raises(NetmapError) as e:
        live.check_kernel("5.17.9-generic")
    assert e.value.errno == errno.ENOSYS
    assert str(e.value).endswith("--live needs Linux 5.18 or later "
                                 "(BPF_F_TEST_XDP_LIVE_FRAMES); this is 5.17.9-generic")
    live.check_kernel("5.18.0")
    live.check_kernel("6.1.0-rc2")
    assert live.kernel_version("4.19.0") == (4, 19)


def _csum(data: bytes) -> int:
    """RFC 1071, written out plainly (independent of pynetmap.checksum)."""
    if len(data) % 2:
        data += b"\0"
    return ~_fold(sum(struct.unpack(f"!{len(data) // 2}H", data))) & 0xFFFF


def _fold(s: int) -> int:
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _checksums_ok(f: bytes) -> bool:
    """IPv4 header and UDP checksums of an Ethernet frame (IPv4 or IPv6), recomputed."""
    et = int.from_bytes(f[12:14], "big")
    if et == 0x0800:
        ihl = (f[14] & 15) * 4
        ip = f[14:14 + ihl]
        if _csum(ip) != 0:
            return False
        udp = f[14 + ihl:14 + int.from_bytes(ip[2:4], "big")]
        pseudo = ip[12:20] + b"\0\x11" + len(udp).to_bytes(2, "big")
    else:
        assert et == 0x86DD
        udp = f[54:54 + int.from_bytes(f[18:20], "big")]
        pseudo = f[22:54] + len(udp).to_bytes(4, "big") + b"\0\0\0\x11"
    stored = int.from_bytes(udp[6:8], "big")
    want = _csum(pseudo + udp[:6] + b"\0\0" + udp[8:]) or 0xFFFF
    return stored == want


@pytest.mark.parametrize("v6", [False, True])
def test_checksum_constant_matches_pktgen_frames(v6: bool) -> None:
    """The program's arithmetic, in Python: constant + digit words -> each frame's sums."""
    if v6:
        src, dst = parse_range("[fd00::fff0]:65534-[fd00::ffff]:65535", True), \
            parse_range("3@[fd00:0:0:1::1]:7-[fd00:0:0:3::1]:8", True)
    else:
        src = parse_range("10.0.0.254:65533-10.0.1.1:65535")
        dst = parse_range("255.255.255.254:1-255.255.255.255:2")
    t = Template(97, src, dst)
    odo = odometer(t)
    frame = t.frame.tobytes()
    rows, _ = t.batch(0, 300)
    k_udp = live.constant(frame, odo.udp_csum, list(odo.digits))
    k_ip = live.constant(frame, odo.ip_csum, [odo.digits[1], odo.digits[3]]) \
        if odo.ip_csum is not None else 0
    for row in rows:
        f = row.tobytes()
        assert _checksums_ok(f)
        vals = [int.from_bytes(f[d.offset:d.offset + d.width], "big") for d in odo.digits]
        words = [(v >> 16) + (v & 0xFFFF) for v in vals]
        u = _fold(k_udp + sum(words)) ^ 0xFFFF
        assert (u or 0xFFFF) == int.from_bytes(f[odo.udp_csum:odo.udp_csum + 2], "big")
        if odo.ip_csum is not None:
            ip = _fold(k_ip + words[1] + words[3]) ^ 0xFFFF
            assert ip == int.from_bytes(f[odo.ip_csum:odo.ip_csum + 2], "big")


def test_assembler_resolves_labels() -> None:
    a = Asm()
    a.jump(Asm.JA, "end")
    a.op(Asm.MOV_K, dst=0, imm=1)
    a.label("end")
    a.op(Asm.EXIT)
    code = a.code()
    assert struct.unpack_from("<BBhi", code, 0) == (Asm.JA, 0, 1, 0)
    b = Asm()
    b.jump(Asm.JA, "nowhere")
    with pytest.raises(ValueError, match="undefined label"):
        b.code()


# -- on a veth pair --------------------------------------------------------------------------

@pytest.fixture
def live_veth(_netns_session: None) -> Iterator[netns.VethPair]:
    netns.require_privileges(bpf=True)
    if live.kernel_version() < live.MIN_KERNEL:
        pytest.skip(f"needs Linux 5.18 (this is {os.uname().release})")
    if shutil.which("ethtool") is None:
        pytest.skip("needs ethtool (to turn GRO on at the veth peer)")
    with netns.veth_pair() as pair:
        yield pair


def _gro(pair: netns.VethPair, on: bool) -> None:
    netns.run(pair.ns_b, "ethtool", "-K", pair.if_b, "gro", "on" if on else "off")


def _pktgen(pair: netns.VethPair, *args: str, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return netns.run(pair.ns_a, sys.executable, "-m", "pynetmap.apps.pktgen", "-i",
                     pair.if_a, "-f", "tx", "--live", "-w", "0", *args, timeout=timeout,
                     check=False)


def _capture(pair: netns.VethPair, *args: str, count: int, timeout: float = 60
             ) -> tuple[subprocess.CompletedProcess[str], list[bytes], list[int]]:
    """Run pkt-gen --live while an AF_PACKET socket on the peer takes every frame
    (with its kernel receive time, ns); returns pkt-gen's result, frames, times."""
    s = netns.raw_socket(pair.ns_b, pair.if_b, netns.ETH_P_ALL)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.settimeout(0.5)
    argv = ["ip", "netns", "exec", pair.ns_a, sys.executable, "-m", "pynetmap.apps.pktgen",
            "-i", pair.if_a, "-f", "tx", "--live", "-w", "0", *args]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    frames: list[bytes] = []
    times: list[int] = []
    deadline = time.monotonic() + timeout
    try:  # read while it sends: the socket's buffer need not hold the whole run
        while len(frames) < count + 64 and time.monotonic() < deadline:
            try:
                data, anc, _, _ = s.recvmsg(65536, 64)
            except TimeoutError:
                if p.poll() is not None:
                    break
                continue
            if data[12:14] not in (b"\x08\x00", b"\x86\xdd"):
                continue
            frames.append(data)
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", value[:16])
                    times.append(sec * 1_000_000_000 + nsec)
        out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        s.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(argv, p.returncode, out, err), frames, times


def _template(pair: netns.VethPair, size: int, src: str, dst: str, v6: bool = False
              ) -> Template:
    return Template(size, parse_range(src, v6), parse_range(dst, v6), src_mac=pair.mac_a,
                    dst_mac=b"\xff" * 6)


@pytest.mark.parametrize("v6,src,dst", [
    (False, "10.0.0.254:1000-10.0.1.1:1002", "10.1.0.1:7-10.1.0.3:8"),
    (True, "[fd00::fffe]:1000-[fd00::ffff]:1001", "[fd00:0:0:1::1]:7-[fd00:0:0:1::3]:9"),
])
def test_frames_are_pktgens_exact_count_odometer_checksums(
        live_veth: netns.VethPair, v6: bool, src: str, dst: str) -> None:
    pair, n = live_veth, 1000
    _gro(pair, True)
    r, frames, _ = _capture(pair, *(["-6"] if v6 else []), "-n", str(n), "-l", "90", "-s", src,
                            "-d", dst, count=n)
    assert r.returncode == 0, r.stderr
    assert f"Sent {n} packets {90 * n} bytes" in r.stdout, r.stdout
    assert len(frames) == n
    rows, _ = _template(pair, 90, src, dst, v6).batch(0, n)
    assert all(f == row.tobytes() for f, row in zip(frames, rows, strict=True))
    assert all(_checksums_ok(f) for f in frames)
    # the odometer, read back from the frames: source port turns fastest
    if not v6:
        first = [(int.from_bytes(f[34:36], "big"), str(ipaddress.IPv4Address(f[26:30])),
                  int.from_bytes(f[36:38], "big"), str(ipaddress.IPv4Address(f[30:34])))
                 for f in frames[:7]]
        assert first == [(1000, "10.0.0.254", 7, "10.1.0.1"), (1001, "10.0.0.254", 7, "10.1.0.1"),
                         (1002, "10.0.0.254", 7, "10.1.0.1"), (1000, "10.0.0.255", 7, "10.1.0.1"),
                         (1001, "10.0.0.255", 7, "10.1.0.1"), (1002, "10.0.0.255", 7, "10.1.0.1"),
                         (1000, "10.0.1.0", 7, "10.1.0.1")]


def test_workers_each_run_the_odometer_and_n_is_exact(live_veth: netns.VethPair) -> None:
    pair, n = live_veth, 1001
    _gro(pair, True)
    src, dst = "10.0.0.1:1-10.0.0.1:5", "10.1.0.1:9-10.1.0.4:9"
    r, frames, _ = _capture(pair, "-p", "2", "-n", str(n), "-s", src, "-d", dst, count=n)
    assert r.returncode == 0, r.stderr
    assert f"Sent {n} packets" in r.stdout
    assert len(frames) == n
    t = _template(pair, 60, src, dst)
    want = Counter(row.tobytes() for k in (501, 500) for row in t.batch(0, k)[0])
    assert Counter(frames) == want


def test_rate_is_honoured(live_veth: netns.VethPair) -> None:
    pair, rate, n = live_veth, 20000, 40000
    _gro(pair, True)
    r, frames, times = _capture(pair, "-R", str(rate), "-n", str(n), count=n)
    assert r.returncode == 0, r.stderr
    assert len(frames) == n and len(times) == n
    got = (n - 1) / ((times[-1] - times[0]) / 1e9)
    assert abs(got - rate) <= 0.05 * rate, got


def test_peer_without_napi_is_said_in_one_line(live_veth: netns.VethPair) -> None:
    pair = live_veth
    _gro(pair, False)
    r = _pktgen(pair, "-n", "100")
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if "NAPI" in ln]
    assert len(lines) == 1, r.stderr
    assert "enable GRO on the peer: ethtool -K PEER gro on" in lines[0]
    assert f"ifindex {pair.index_b} in another network namespace" in lines[0]


def test_interface_errors_in_one_line(live_veth: netns.VethPair) -> None:
    pair = live_veth
    r = netns.run(pair.ns_a, sys.executable, "-m", "pynetmap.apps.pktgen", "-i", "nosuch0",
                  "-f", "tx", "--live", "-w", "0", "-n", "1", check=False, timeout=30)
    assert r.returncode == 1
    assert "--live on nosuch0: no such interface 'nosuch0'" in r.stderr, r.stderr
    netns.run(pair.ns_a, "ip", "link", "set", pair.if_a, "down")
    r = _pktgen(pair, "-n", "1")
    assert r.returncode == 1
    assert f"interface {pair.if_a} is down" in r.stderr, r.stderr


def test_without_cap_bpf_it_says_so(live_veth: netns.VethPair) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop capabilities")
    caps = "-all,+net_admin,+net_raw"
    r = netns.run(live_veth.ns_a, "setpriv", f"--inh-caps={caps}", f"--ambient-caps={caps}",
                  f"--bounding-set={caps}", sys.executable, "-m", "pynetmap.apps.pktgen",
                  "-i", live_veth.if_a, "-f", "tx", "--live", "-w", "0", "-n", "1",
                  check=False, timeout=30)
    assert r.returncode == 1
    assert "--live needs CAP_BPF (run as root or grant it)" in r.stderr, r.stderr


def test_ctrl_c_stops_a_run_at_once(live_veth: netns.VethPair) -> None:
    """An endless run (no -n) stops on SIGINT within a report slice, with its summary."""
    import signal

    pair = live_veth
    _gro(pair, True)
    p = subprocess.Popen(["ip", "netns", "exec", pair.ns_a, sys.executable, "-m",
                          "pynetmap.apps.pktgen", "-i", pair.if_a, "-f", "tx", "--live",
                          "-w", "0", "-R", "100000"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    m = re.search(r"Sent (\d+) packets", out)
    assert m and int(m.group(1)) > 0, out
    stats = pair.link_stats("b")
    assert stats["rx_packets"] == int(m.group(1))
