"""NIC senders and receivers on a veth pair, counted by the kernel at the other end.

One run, one topology: two fresh namespaces A and B (``tests/netns.py``: IPv6 off,
always deleted, also on Ctrl-C), veth ``pnm0`` in A <-> ``pnm1`` in B.  Every frame is
60 bytes (64 on the wire): IPv4/UDP 192.0.2.1:1234 -> 192.0.2.2:9 (the other way round
for RX).  TX frames go to :data:`SINK_MAC`, a MAC no interface has: veth delivers in
the sender's softirq, so B's receive work is charged to the sender's core, and with
this address B's kernel counts each frame in pnm1's ``rx_packets`` and drops it at
once (not for this host) instead of running IPv4/UDP and ICMP for it -- the same
small cost for every peer, as a switch port or a NIC's counters would be.

TX (sender in A pinned to one core, ``--cpu``): after the first frame is counted,
``rx_packets`` of pnm1 (``ip -n B -s -j link show pnm1``) is sampled at the start and
end of a ``--seconds`` window; Mpps = delta / window.  Peers: pynetmap ``pkt-gen -f tx``
with ``PYNETMAP_ENGINE=xdp`` and ``=packet``, trafgen (netsniff-ng, C, one process),
a Python per-packet AF_PACKET ``send()`` loop, and scapy ``sendp`` (``--scapy-count``
frames; its own send time is the window).  Ratios are against trafgen, or against the
per-packet socket when trafgen is missing.  ``live`` is ``pkt-gen -f tx --live`` (the
kernel sends: an XDP program on live frames, docs/pktgen-live.md); veth takes such
frames only when the peer has NAPI, so its row runs with GRO on at pnm1, and so does
``trafgen_gro`` (trafgen again, same conditions): their ratio is the fair one.

RX (receiver in A on another core): ``--rx-sender`` in B -- pynetmap ``pkt-gen -f tx``
over AF_XDP (default, the fastest sender here) or trafgen -- offers the same load to
every receiver: ``--rx-count`` frames (default 1e6 x seconds) as fast as it goes, or at
``--rx-rate`` pps, bounded in time.  veth does the receiver's kernel work on the
sender's core, so "as fast as it goes" depends on the receiving path.
Offered = pnm1's ``tx_packets`` delta (frames veth handed to A), received = the
receiver's own count, drops = offered - received, Mpps = received / sending time.
Receivers: ``pkt-gen -f rx`` (xdp, packet) and a per-packet AF_PACKET ``recv()`` loop.

A peer that fails (e.g. pkt-gen while NIC ports are not supported) gets its error in
its row; the other peers still run.  Every sender is bounded in packets and seconds;
only processes started here are signalled, by their pid (process group).

    python bench/nic_bench.py [--seconds 5] [--skip scapy,rx] [--json PATH]

Needs root (namespaces).  trafgen: ``apt-get install netsniff-ng``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
if "pytest" not in sys.modules:
    try:
        import pytest  # noqa: F401  (tests/netns.py imports it, for require_privileges)
    except ImportError:  # the bench needs none of pytest: a stand-in lets netns import
        sys.modules["pytest"] = types.ModuleType("pytest")
import netns  # noqa: E402
from _common import machine, table, write_json  # noqa: E402

FRAME = 60
SPORT, DPORT = 1234, 9
#: locally administered, on no interface: B counts these frames and drops them at once
SINK_MAC = bytes.fromhex("020000000009")
TX_PEERS = ("xdp", "packet", "trafgen", "socket", "scapy", "trafgen_gro", "live")
#: rows that run with GRO on at pnm1 (veth's NAPI path, needed by XDP-sent frames)
GRO_PEERS = ("trafgen_gro", "live")
RX_PEERS = ("xdp", "packet", "socket")
#: pynetmap's own engines, run as pkt-gen with PYNETMAP_ENGINE (pcap: bench/pcap_bench.py)
ENGINE_PEERS = ("xdp", "packet", "pcap")
ETH_P_IP = 0x0800
SOL_PACKET, PACKET_STATISTICS, PACKET_IGNORE_OUTGOING = 263, 6, 23
#: no sender can exceed this on one core here; sets each sender's packet bound
MAX_PPS = 30_000_000


# -- frames ---------------------------------------------------------------------------------

def _csum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(dst_mac: bytes, src_mac: bytes, src: str, dst: str, size: int = FRAME) -> bytes:
    """An Ethernet/IPv4/UDP frame of ``size`` bytes (no FCS), checksums filled in."""
    ulen = size - 14 - 20
    saddr, daddr = socket.inet_aton(src), socket.inet_aton(dst)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, 17, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    payload = bytes(ulen - 8)
    udp = struct.pack("!HHHH", SPORT, DPORT, ulen, 0) + payload
    pseudo = saddr + daddr + struct.pack("!BBH", 0, 17, ulen)
    c = _csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IP) + ip + udp


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


# -- workers: run as ``nic_bench.py _worker KIND ...`` inside a namespace --------------------

def worker_send(ifname: str, frame_hex: str, count: int, seconds: float) -> None:
    """Per-packet ``send()`` of one frame, at most ``count`` times and ``seconds`` long."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: never receives
    s.bind((ifname, 0))
    frame, send = bytes.fromhex(frame_hex), s.send
    sent = errors = tries = 0
    t0 = time.monotonic()
    end = t0 + seconds
    with contextlib.suppress(KeyboardInterrupt):
        while sent < count:
            tries += 1
            try:
                send(frame)
                sent += 1
            except OSError:  # ENOBUFS: counted, the loop stays bounded
                errors += 1
            if not tries & 1023 and time.monotonic() > end:
                break
    print(json.dumps({"sent": sent, "errors": errors, "seconds": time.monotonic() - t0}),
          flush=True)


def worker_recv(ifname: str, count: int, seconds: float) -> None:
    """Per-packet ``recv()`` on AF_PACKET (64 MiB buffer) until SIGINT, count or deadline."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    s.bind((ifname, ETH_P_IP))
    s.setsockopt(socket.SOL_SOCKET, netns.SO_RCVBUFFORCE, 64 << 20)
    with contextlib.suppress(OSError):  # Linux >= 4.20: leave out what A itself sends
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reading resets the counters
    s.setblocking(False)
    recv = s.recv
    got = 0
    end = time.monotonic() + seconds
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while got < count:
            try:
                recv(2048)
                got += 1
            except BlockingIOError:
                left = end - time.monotonic()
                if left <= 0:
                    break
                select.select([s], [], [], min(left, 0.5))
    _, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    print(json.dumps({"received": got, "socket_drops": drops}), flush=True)


def worker_scapy(ifname: str, frame_hex: str, count: int) -> None:
    from scapy.all import Ether, sendp

    pkt = Ether(bytes.fromhex(frame_hex))
    t0 = time.monotonic()
    sendp(pkt, iface=ifname, count=count, verbose=False)
    print(json.dumps({"sent": count, "seconds": time.monotonic() - t0}), flush=True)


def worker(argv: list[str]) -> int:
    # SIGINT stops a worker even if it was started with SIGINT ignored (as ``cmd &``
    # in a script does), which Python would otherwise keep
    signal.signal(signal.SIGINT, signal.default_int_handler)
    kind, ifname, *rest = argv
    if kind == "send":
        worker_send(ifname, rest[0], int(rest[1]), float(rest[2]))
    elif kind == "recv":
        worker_recv(ifname, int(rest[0]), float(rest[1]))
    elif kind == "scapy":
        worker_scapy(ifname, rest[0], int(rest[1]))
    else:
        raise SystemExit(f"unknown worker {kind}")
    return 0


# -- processes ------------------------------------------------------------------------------

class Proc:
    """A command in its own process group; output to temporary files (never a full pipe)."""

    live: list[Proc] = []

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.out = tempfile.TemporaryFile("w+")
        self.err = tempfile.TemporaryFile("w+")
        self.p = subprocess.Popen(argv, stdout=self.out, stderr=self.err, env=env,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        Proc.live.append(self)

    def poll(self) -> int | None:
        return self.p.poll()

    def signal(self, sig: int) -> None:
        # pgid == our child's pid (start_new_session): the child and what it forked
        # (trafgen's sender process), nothing else
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGKILL after ``timeout`` s; the exit status.

        Signals go only while the child is unreaped, so its pid (= the group id) is
        still ours.
        """
        if self.p.poll() is None:
            self.signal(signal.SIGINT)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.p.wait(10)
        if self in Proc.live:
            Proc.live.remove(self)
        return self.p.returncode

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.stop()

    def stdout(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def why(self) -> str:
        """The last meaningful output line, for a failed row."""
        lines = [ln.strip() for ln in (self.stderr() + "\n" + self.stdout()).splitlines()
                 if ln.strip()]
        return (f"exit {self.p.returncode}: " + (lines[-1] if lines else "no output"))[:160]

    @classmethod
    def stop_all(cls) -> None:
        for p in list(cls.live):
            p.stop(timeout=3)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    src = os.path.join(ROOT, "src")  # works with or without an installed pynetmap
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def in_ns(ns: str, cpu: int, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, "taskset", "-c", str(cpu), *argv]


def stats(ns: str, ifname: str) -> dict:
    out = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", ifname],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return json.loads(out)[0]["stats64"]


def counter(ns: str, ifname: str, side: str) -> tuple[float, int]:
    """(time, ``side`` packets of ``ifname``), the time taken mid-call."""
    t0 = time.monotonic()
    n = stats(ns, ifname)[side]["packets"]
    return (t0 + time.monotonic()) / 2, n


# -- TX ---------------------------------------------------------------------------------------

def tx_window(pair: netns.VethPair, proc: Proc, seconds: float, start: float = 20.0) -> dict:
    """Mpps counted at pnm1 over ``seconds`` once ``proc``'s frames arrive there."""
    _, base = counter(pair.ns_b, pair.if_b, "rx")
    deadline = time.monotonic() + start
    while True:
        if proc.poll() is not None:
            raise RuntimeError(proc.why())
        if counter(pair.ns_b, pair.if_b, "rx")[1] > base:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"no frame counted at {pair.if_b} within {start:g} s")
        time.sleep(0.05)
    time.sleep(0.3)  # past the ramp-up
    t0, c0 = counter(pair.ns_b, pair.if_b, "rx")
    while time.monotonic() < t0 + seconds and proc.poll() is None:
        time.sleep(0.05)
    t1, c1 = counter(pair.ns_b, pair.if_b, "rx")
    early = proc.poll() is not None
    rc = proc.stop()
    if early and rc not in (0, None):
        raise RuntimeError(proc.why())
    n = c1 - c0
    return {"counted": n, "window_s": t1 - t0, "mpps": n / (t1 - t0) / 1e6,
            "ended_early": early}


def trafgen_conf(frame: bytes, cpu: int | None) -> str:
    """A config file with one packet, ``frame``, for the sender on ``cpu`` (None: any)."""
    f = tempfile.NamedTemporaryFile("w", prefix="nic_bench-", suffix=".cfg", delete=False)
    with f:
        f.write(("" if cpu is None else f"cpu({cpu}): ")
                + "{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }\n")
    return f.name


def trafgen_argv(ns: str, ifname: str, conf: str, cpu: int, count: int,
                 rate: int = 0) -> list[str]:
    # trafgen pins its i-th sender to cpu i: -P cpu+1 and cpu(cpu): in the config leave
    # one sender, on ``cpu``.  With -b (rate) it has one sender, on cpu 0, whatever -P.
    # --no-sock-mem/--notouch-irq: change no system setting.
    return in_ns(ns, cpu, "trafgen", "--dev", ifname, "--conf", conf, "-P", str(cpu + 1),
                 "-n", str(count), "--no-sock-mem", "--notouch-irq",
                 *(["-b", f"{rate}pps"] if rate else []))


def pktgen_argv(pair: netns.VethPair, cpu: int, function: str, count: int,
                a_to_b: bool = True, rate: int = 0, live: bool = False) -> list[str]:
    """pkt-gen on pnm0 in A (``a_to_b``: frames A -> B), or on pnm1 in B (B -> A)."""
    src, dst = (pair.addr_a, pair.addr_b) if a_to_b else (pair.addr_b, pair.addr_a)
    smac, dmac = (pair.mac_a, SINK_MAC) if a_to_b else (pair.mac_b, pair.mac_a)
    in_b = function == "tx" and not a_to_b
    ns, ifname = (pair.ns_b, pair.if_b) if in_b else (pair.ns_a, pair.if_a)
    return in_ns(ns, cpu, sys.executable, "-m", "pynetmap", "pkt-gen",
                 "-i", f"netmap:{ifname}", "-f", function, "-l", str(FRAME),
                 *(["--live", "-b", "64"] if live else ["-b", "512"]),
                 "-T", "1000", "-w", "1", "-n", str(count),
                 "-s", f"{src}:{SPORT}", "-d", f"{dst}:{DPORT}",
                 "-S", _mac(smac), "-D", _mac(dmac), "--json",
                 *(["-R", str(rate)] if rate else []))


def run_tx(peer: str, pair: netns.VethPair, a: argparse.Namespace, frame: bytes,
           conf: str | None) -> dict:
    count = int(MAX_PPS * (a.seconds + 25))  # more than the window needs, still a bound
    limit = a.seconds + 30  # seconds, for the senders that take one
    if peer in ENGINE_PEERS:
        proc = Proc(pktgen_argv(pair, a.cpu, "tx", count), env=child_env(PYNETMAP_ENGINE=peer))
    elif peer == "live":
        proc = Proc(pktgen_argv(pair, a.cpu, "tx", count, live=True), env=child_env())
    elif peer in ("trafgen", "trafgen_gro"):
        if conf is None:
            raise LookupError("trafgen not installed (apt-get install netsniff-ng)")
        proc = Proc(trafgen_argv(pair.ns_a, pair.if_a, conf, a.cpu, count))
    elif peer == "socket":
        proc = Proc(in_ns(pair.ns_a, a.cpu, sys.executable, os.path.abspath(__file__),
                          "_worker", "send", pair.if_a, frame.hex(), str(count), str(limit)))
    elif peer == "scapy":
        return run_tx_scapy(pair, a, frame)
    else:
        raise ValueError(peer)
    try:
        return tx_window(pair, proc, a.seconds)
    finally:
        proc.stop()


def run_tx_scapy(pair: netns.VethPair, a: argparse.Namespace, frame: bytes) -> dict:
    _, c0 = counter(pair.ns_b, pair.if_b, "rx")
    proc = Proc(in_ns(pair.ns_a, a.cpu, sys.executable, os.path.abspath(__file__), "_worker",
                      "scapy", pair.if_a, frame.hex(), str(a.scapy_count)))
    rc = proc.wait(timeout=120)
    _, c1 = counter(pair.ns_b, pair.if_b, "rx")
    if rc != 0:
        raise RuntimeError(proc.why())
    r = json.loads(proc.stdout().strip().splitlines()[-1])
    n = c1 - c0
    return {"counted": n, "window_s": r["seconds"], "mpps": n / r["seconds"] / 1e6,
            "ended_early": False, "sent": r["sent"]}


# -- RX ---------------------------------------------------------------------------------------

def gro(pair: netns.VethPair, on: bool) -> None:
    """GRO at pnm1 on or off (the pair is made with it off, when ethtool is there)."""
    if shutil.which("ethtool") is None:
        if on:
            raise LookupError("needs ethtool, to turn GRO on at pnm1")
        return
    subprocess.run(["ip", "netns", "exec", pair.ns_b, "ethtool", "-K", pair.if_b, "gro",
                    "on" if on else "off"], check=True, capture_output=True, timeout=10)


def rx_cpus(a: argparse.Namespace) -> tuple[int, int]:
    """(sender core, receiver core) for RX.  trafgen's rate mode (-b) has one sender,
    which it pins to cpu 0 itself; otherwise the sender is on --cpu."""
    send = 0 if a.rx_rate and a.rx_sender == "trafgen" else a.cpu
    return send, (1 if send == 0 else 0) if (os.cpu_count() or 1) > 1 else 0


def steer_rx(pair: netns.VethPair, cpu: int) -> None:
    """RPS: A's stack work for received frames on the receiver's core, as a NIC's IRQ would.

    Without it veth runs A's whole receive path on the sender's core, and a costly
    receiving path would slow the offered load down instead of showing drops.  XDP
    (the AF_XDP receiver) runs before RPS, on the sender's core either way.
    """
    path = f"/sys/class/net/{pair.if_a}/queues/rx-0/rps_cpus"
    subprocess.run(["ip", "netns", "exec", pair.ns_a, "sh", "-c",
                    f"echo {1 << cpu:x} > {path}"], check=True, timeout=10)


def offer(pair: netns.VethPair, a: argparse.Namespace, frame: bytes, conf: str | None) -> dict:
    """Send --rx-count frames B -> A (--rx-sender, else the socket loop), bounded in time."""
    cpu = rx_cpus(a)[0]
    if a.rx_sender == "pktgen":
        proc = Proc(pktgen_argv(pair, cpu, "tx", a.rx_count, a_to_b=False, rate=a.rx_rate),
                    env=child_env(PYNETMAP_ENGINE="xdp"))
    elif conf is not None:
        proc = Proc(trafgen_argv(pair.ns_b, pair.if_b, conf, cpu, a.rx_count, a.rx_rate))
    else:
        proc = Proc(in_ns(pair.ns_b, cpu, sys.executable, os.path.abspath(__file__),
                          "_worker", "send", pair.if_b, frame.hex(), str(a.rx_count),
                          str(a.rx_limit)))
    t0, c0 = counter(pair.ns_b, pair.if_b, "tx")
    t, first, last, prev = t0, None, None, c0
    deadline = time.monotonic() + a.rx_limit + 1
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        t, c = counter(pair.ns_b, pair.if_b, "tx")
        if c != prev:
            first = first if first is not None else t
            last, prev = t, c
    cut = proc.poll() is None  # still sending at the time bound: stopped, still counted
    rc = proc.stop()
    time.sleep(0.3)
    _, c1 = counter(pair.ns_b, pair.if_b, "tx")
    if rc != 0 and not cut:
        raise RuntimeError("sender " + proc.why())
    if first is None or c1 == c0:
        raise RuntimeError("sender: nothing left pnm1 " + proc.why())
    window = (last - first) if last > first else max(1e-3, t - t0)
    return {"offered": c1 - c0, "send_s": window, "cut_at_time_bound": cut,
            "pnm1_tx_dropped": stats(pair.ns_b, pair.if_b)["tx"]["dropped"]}


def measure_rx(proc: Proc, pair: netns.VethPair, load: argparse.Namespace, frame: bytes,
               conf: str | None, wait_s: float, ready: str | None, settle_s: float,
               count: Callable[[str], tuple[int, dict] | None]) -> dict:
    """What a started receiver got of the offered load: wait until it prints
    ``ready`` (then ``settle_s`` more; None: wait all of ``wait_s``), offer the
    load, let it drain, stop it and read its count (``count(stdout)``)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None:
        if ready is not None and ready in proc.stdout() + proc.stderr():
            time.sleep(settle_s)
            break
        time.sleep(0.05)
    try:
        if proc.poll() is not None:
            raise RuntimeError(proc.why())
        o = offer(pair, load, frame, conf)
        time.sleep(0.5)  # let the receiver drain
        proc.stop()
        found = count(proc.stdout())
        if found is None:
            raise RuntimeError(proc.why())
        got, extra = found
    finally:
        proc.stop()
    return {**o, "received": got, "drops": o["offered"] - got,
            "mpps": got / o["send_s"] / 1e6, **extra}


def pktgen_rx_count(out: str) -> tuple[int, dict] | None:
    """Packets in a pkt-gen receiver's final ``--json`` line."""
    finals = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{") and '"final"' in ln]
    return (int(finals[-1]["pkts"]), {}) if finals else None


def _recv_count(out: str) -> tuple[int, dict] | None:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        return None
    r = json.loads(lines[-1])
    return r["received"], {"socket_drops": r["socket_drops"]}


def run_rx(peer: str, pair: netns.VethPair, a: argparse.Namespace, frame: bytes,
           conf: str | None) -> dict:
    rx_cpu = rx_cpus(a)[1]
    count = a.rx_count
    if peer in ("xdp", "packet"):
        proc = Proc(pktgen_argv(pair, rx_cpu, "rx", 2 * count, a_to_b=False),
                    env=child_env(PYNETMAP_ENGINE=peer))
        return measure_rx(proc, pair, a, frame, conf, a.rx_warmup, None, 0.0, pktgen_rx_count)
    proc = Proc(in_ns(pair.ns_a, rx_cpu, sys.executable, os.path.abspath(__file__),
                      "_worker", "recv", pair.if_a, str(2 * count), str(a.rx_limit + 30)))
    return measure_rx(proc, pair, a, frame, conf, 20.0, "ready", 0.0, _recv_count)


# -- main ---------------------------------------------------------------------------------------

def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per row (default 5)")
    ap.add_argument("--json", default=None, help="results file (default "
                    "bench/results/nic_bench.json)")
    ap.add_argument("--skip", action="append", default=[],
                    help="peers to leave out, comma-separated or repeated: "
                    f"{', '.join(TX_PEERS)}, tx, rx (a peer name skips it in TX and RX)")
    ap.add_argument("--cpu", type=int, default=1 if (os.cpu_count() or 1) > 1 else 0,
                    help="core of every sender (default 1)")
    ap.add_argument("--rx-count", type=int, default=None,
                    help="frames offered to each receiver (default 1e6 x --seconds)")
    ap.add_argument("--rx-sender", choices=("pktgen", "trafgen"), default="pktgen",
                    help="what offers the RX load: pynetmap pkt-gen tx over AF_XDP (default: "
                    "the fastest sender here) or trafgen")
    ap.add_argument("--rx-rate", type=int, default=0,
                    help="pps for the offered load (default 0: as fast as it goes; trafgen's "
                    "rate mode is slow, ~0.3 Mpps here, and pins it to cpu 0)")
    ap.add_argument("--no-rps", action="store_true",
                    help="leave A's receive work on the sender's core (veth's default)")
    ap.add_argument("--rx-warmup", type=float, default=4.0,
                    help="s to let pkt-gen rx start before the load")
    ap.add_argument("--scapy-count", type=int, default=20000)
    a = ap.parse_args(argv)
    if a.rx_count is None:
        a.rx_count = int(1e6 * a.seconds)
    a.rx_limit = max(30.0, 10 * a.seconds)  # seconds: the bound on each offered load
    skip = {s.strip() for x in a.skip for s in x.split(",") if s.strip()}
    why = netns.missing_privileges()
    if why:
        print(f"nic_bench: {why}", file=sys.stderr)
        return 2
    if not shutil.which("taskset"):
        print("nic_bench: needs taskset (util-linux)", file=sys.stderr)
        return 2
    have_trafgen = shutil.which("trafgen") is not None
    if not have_trafgen:
        print("trafgen not found: apt-get install netsniff-ng  (its row is marked missing; "
              "ratios are against the per-packet socket)")
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    netns.sweep_stale()
    tx: dict[str, dict] = {}
    rx: dict[str, dict] = {}
    confs: list[str] = []
    try:
        with netns.veth_pair() as pair:
            fwd = udp_frame(SINK_MAC, pair.mac_a, pair.addr_a, pair.addr_b)
            back = udp_frame(pair.mac_a, pair.mac_b, pair.addr_b, pair.addr_a)
            conf_fwd = conf_back = None
            if have_trafgen:
                conf_fwd = trafgen_conf(fwd, a.cpu)
                conf_back = trafgen_conf(back, None if a.rx_rate else a.cpu)
                confs += [conf_fwd, conf_back]
            try:
                for peer in TX_PEERS if "tx" not in skip else ():
                    if peer in skip:
                        continue
                    print(f"tx {peer} ...", flush=True)
                    try:
                        gro(pair, peer in GRO_PEERS)
                        tx[peer] = run_tx(peer, pair, a, fwd, conf_fwd)
                    except LookupError as e:
                        tx[peer] = {"missing": str(e)}
                    except (RuntimeError, OSError, subprocess.SubprocessError,
                            ValueError) as e:
                        tx[peer] = {"error": str(e)}
                gro(pair, False)
                if "rx" not in skip and not a.no_rps:
                    steer_rx(pair, rx_cpus(a)[1])
                for peer in RX_PEERS if "rx" not in skip else ():
                    if peer in skip:
                        continue
                    print(f"rx {peer} ...", flush=True)
                    try:
                        rx[peer] = run_rx(peer, pair, a, back, conf_back)
                    except (RuntimeError, OSError, subprocess.SubprocessError,
                            ValueError) as e:
                        rx[peer] = {"error": str(e)}
            finally:
                Proc.stop_all()  # before the namespaces go
    except KeyboardInterrupt:
        print("interrupted; namespaces deleted", file=sys.stderr)
        return 130
    finally:
        Proc.stop_all()
        for c in confs:
            with contextlib.suppress(OSError):
                os.unlink(c)
    report(a, tx, rx, have_trafgen)
    return 0


def report(a: argparse.Namespace, tx: dict, rx: dict, have_trafgen: bool) -> None:
    base_name = "trafgen" if have_trafgen and "mpps" in tx.get("trafgen", {}) else "socket"
    base = tx.get(base_name, {}).get("mpps")
    names = {"xdp": "pynetmap pkt-gen (xdp)", "packet": "pynetmap pkt-gen (packet)",
             "trafgen": "trafgen -P 1 (C)", "socket": "Python send() per packet",
             "scapy": f"scapy sendp (count {a.scapy_count})",
             "trafgen_gro": "trafgen -P 1 (C), GRO on at pnm1",
             "live": "pynetmap pkt-gen --live, GRO on at pnm1"}
    if tx:
        print(f"\nTX: {FRAME}-byte frames pnm0 (A) -> pnm1 (B), sender on cpu {a.cpu}, "
              f"{a.seconds:g} s, counted at pnm1 rx_packets")
        rows = []
        for peer, r in tx.items():
            if "mpps" in r:
                ratio = f"{r['mpps'] / base:.2f}" if base else "-"
                rows.append([names[peer], r["counted"], r["window_s"], f"{r['mpps']:.3f}",
                             ratio])
                r[f"ratio_vs_{base_name}"] = r["mpps"] / base if base else None
            else:
                rows.append([names[peer], "-", "-", "-",
                             r.get("missing") or "FAILED: " + r["error"]])
        print(table(["sender", "counted", "s", "Mpps", f"x {base_name}"], rows))
        lv, tg = tx.get("live", {}).get("mpps"), tx.get("trafgen_gro", {}).get("mpps")
        if lv and tg:
            tx["live"]["ratio_vs_trafgen_gro"] = lv / tg
            print(f"pkt-gen --live / trafgen, both with GRO on at pnm1: {lv / tg:.2f}x")
    if rx:
        rate = f"at {a.rx_rate} pps" if a.rx_rate else "as fast as it goes,"
        load = (f"pynetmap pkt-gen tx (xdp) {rate}" if a.rx_sender == "pktgen" else
                f"trafgen {rate}" if have_trafgen else "Python send() loop")
        snd, rcv = rx_cpus(a)
        print(f"\nRX: pnm1 (B) -> pnm0 (A): {a.rx_count} frames offered by {load} on cpu "
              f"{snd}, receiver on cpu {rcv}; offered = pnm1 tx_packets delta, "
              "Mpps = received / sending time")
        rnames = {"xdp": "pynetmap pkt-gen rx (xdp)", "packet": "pynetmap pkt-gen rx (packet)",
                  "socket": "Python recv() per packet"}
        rows = []
        for peer, r in rx.items():
            if "mpps" in r:
                rows.append([rnames[peer], r["received"], r["offered"], r["drops"],
                             f"{r['mpps']:.3f}", ""])
            else:
                rows.append([rnames[peer], "-", "-", "-", "-", "FAILED: " + r["error"]])
        print(table(["receiver", "received", "offered", "drops", "Mpps", "note"], rows))
    data = {"seconds": a.seconds, "frame": FRAME, "cpu": a.cpu, "rx_rate": a.rx_rate,
            "rx_sender": a.rx_sender,
            "rx_count": a.rx_count,
            "baseline": base_name, "trafgen": shutil.which("trafgen"), "tx": tx, "rx": rx}
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine(), **data}, f, indent=2)
        path = a.json
    else:
        path = write_json("nic_bench", data)
    print(f"results: {path}")


if __name__ == "__main__":
    sys.exit(main())
