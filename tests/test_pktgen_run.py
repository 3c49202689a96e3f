"""pkt-gen end to end: two pkt-gen processes over a netmap pipe, no privileges.

Every process is started by a fixture that kills it (by PID) if a test
fails, and every run is bounded by ``-n`` and a timeout.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap, wrpcapng
from test_pktgen_options import REPORT, SPEED, SUMMARY

import pynetmap
from pynetmap.apps.pktgen import main

TIMEOUT = 90


@pytest.fixture
def run():
    procs = []

    def start(*args):
        p = subprocess.Popen([sys.executable, "-m", "pynetmap.apps.pktgen", "-w", "0", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def done(p, timeout=TIMEOUT):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{err}"
    return out, err


def pipe():
    return "netmap:g" + uuid.uuid4().hex[:8]


def summary(out):
    m = SUMMARY.search(out)
    assert m, out
    assert SPEED.search(out), out
    return m.group(1), int(m.group(2)), int(m.group(3))


def test_tx_rx_exact_counts_and_report_lines(run):
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-n", "300000", "-T", "100")
    tx = run("-f", "tx", "-i", name + "}0", "-n", "300000", "-l", "128")
    tx_out, _ = done(tx)
    rx_out, rx_err = done(rx)
    assert summary(tx_out) == ("Sent", 300000, 300000 * 128)
    assert summary(rx_out) == ("Received", 300000, 300000 * 128)
    assert rx_out.startswith(f"Receiving from {name}{{0: 1 queues, 1 threads and 1 cpus.\n")
    assert tx_out.startswith(f"Sending on {name}}}0: 1 queues, 1 threads and 1 cpus.\n"
                             "10.0.0.1 -> 10.1.0.1 (00:00:00:00:00:00 -> ff:ff:ff:ff:ff:ff)\n")
    reports = [ln for ln in rx_err.splitlines() if "main_thread" in ln]
    assert all(REPORT.match(ln) for ln in reports), reports
    assert "Ready..." in rx_err


def test_rx_stops_at_exactly_n(run):
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-n", "1234", "-b", "100")
    tx = run("-f", "tx", "-i", name + "}0", "-n", "50000")
    rx_out, _ = done(rx)
    assert summary(rx_out)[1:] == (1234, 1234 * 60)
    done(tx)  # the sender sees the receiver go (POLLHUP) and stops


def test_txseq_rxseq_a_million_without_gaps(run):
    name = pipe()
    rx = run("-f", "rxseq", "-i", name + "{0", "-n", "1000000")
    tx = run("-f", "txseq", "-i", name + "}0")
    rx_out, rx_err = done(rx)
    assert summary(rx_out)[1] == 1000000
    assert "rxseq: 0 gaps, 0 out of order, 0 too short, 0 with a wrong fragment count" in rx_err
    assert "Sequence" not in rx_err
    tx_out, _ = done(tx)
    assert summary(tx_out)[1] >= 1000000


def test_txseq_fragments_checked(run):
    name = pipe()
    rx = run("-f", "rxseq", "-i", name + "{0", "-n", "30000")
    tx = run("-f", "txseq", "-i", name + "}0", "-F", "3", "-l", "100")
    rx_out, rx_err = done(rx)
    assert summary(rx_out)[1:] == (30000, 30000 * 3 * 100)
    assert "rxseq: 0 gaps, 0 out of order, 0 too short, 0 with a wrong fragment count" in rx_err
    done(tx)


def test_multi_slot_packets(run):
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-n", "20000")
    tx = run("-f", "tx", "-i", name + "}0", "-n", "20000", "-l", "5000")  # 3 slots each
    rx_out, _ = done(rx)
    tx_out, tx_err = done(tx)
    assert summary(rx_out)[1:] == (20000, 20000 * 5000)
    assert "frags 3 frag_size 2048" in tx_err


def test_ping_pong(run):
    name = pipe()
    pong = run("-f", "pong", "-i", name + "{0", "-n", "3000")
    ping = run("-f", "ping", "-i", name + "}0", "-n", "3000")
    _, err = done(ping)
    m = re.search(r"ping_body \[\d+\] RTT over 3000 packets: min (\d+) av (\d+) ns", err)
    assert m and 0 < int(m.group(1)) <= int(m.group(2)), err
    assert re.search(r"count \d+ RTT: min \d+ av \d+ ns", err)
    assert re.search(r"k: \d+ \.\. \d+\n\t( +\d+)+", err)
    out, _ = done(pong)
    assert out.startswith(f"Working on {name}{{0: 1 queues")


def test_rate_limit(run):
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-n", "30000")
    tx = run("-f", "tx", "-i", name + "}0", "-n", "30000", "-R", "20000")
    tx_out, tx_err = done(tx)
    rx_out, _ = done(rx)
    assert "Sending 66 packets every  0.003300000 s" in tx_err
    seconds = float(SUMMARY.search(tx_out).group(6))
    rate = 30000 / seconds
    assert 18000 < rate < 22000, tx_out  # unlimited would be millions
    assert summary(rx_out)[1] == 30000


def capture(tmp_path, packets, ng=False):
    path = str(tmp_path / ("in.pcapng" if ng else "in.pcap"))
    (wrpcapng if ng else wrpcap)(path, packets)
    return path


def udp(i, size):
    p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
        src="192.168.0.1", dst=f"192.168.1.{i}") / UDP(sport=1000 + i, dport=9)
    return p / (b"x" * (size - len(p)))


def test_pcap_first_packet_as_template(run, tmp_path):
    src = capture(tmp_path, [udp(7, 90), udp(8, 70)])
    out = str(tmp_path / "out.pcap")
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-n", "100", "--pcap-out", out)
    tx = run("-f", "tx", "-i", name + "}0", "-n", "100", "-P", src)
    done(tx)
    done(rx)
    got = rdpcap(out)  # a reader we did not write
    assert len(got) == 100
    assert {bytes(p) for p in got} == {bytes(udp(7, 90))}


@pytest.mark.parametrize("ng", [False, True])
def test_replay_all_packets_in_order(run, tmp_path, ng):
    pkts = [udp(i, 60 + 37 * i) for i in range(5)]
    src = capture(tmp_path, pkts, ng)
    out = str(tmp_path / "out.pcap")
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-n", "23", "--pcap-out", out)
    tx = run("-f", "tx", "-i", name + "}0", "-n", "23", "--replay", src, "-b", "4")
    tx_out, _ = done(tx)
    done(rx)
    got = [bytes(p) for p in rdpcap(out)]
    assert got == [bytes(pkts[i % 5]) for i in range(23)]
    assert summary(tx_out)[2] == sum(len(pkts[i % 5]) for i in range(23))
    if shutil.which("tcpdump"):  # and a C reader, where installed
        r = subprocess.run(["tcpdump", "-nn", "-r", out], capture_output=True, text=True,
                           timeout=30)
        assert r.stdout.count("UDP") == 23


def _both_ends_open(parent: str) -> bool:
    from pynetmap.registry import transaction

    with transaction() as state:
        rec = state["ports"].get(parent.split(":", 1)[1] + "{0")
        return rec is not None and all(e["opens"] for e in rec["endpoints"].values())


def test_sigint_prints_the_summary(run):
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0")
    tx = run("-f", "tx", "-i", name + "}0")
    deadline = time.monotonic() + 30
    while not _both_ends_open(name) and time.monotonic() < deadline:
        time.sleep(0.05)  # pkt-gen catches SIGINT from before it opens its port
    while time.monotonic() < deadline:  # until traffic flows
        time.sleep(0.3)
        if tx.poll() is not None:
            break
        tx.send_signal(signal.SIGINT)
        try:
            tx_out, _ = tx.communicate(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    assert tx.returncode == 0
    sent = summary(tx_out)[1]
    assert sent > 0
    # rx stops by itself when the sender's end goes (POLLHUP); a SIGINT sent now could
    # arrive after its handler was restored, as the process exits, and kill it
    rx_out, _ = done(rx)
    assert 0 < summary(rx_out)[1] <= sent


def test_threads_as_processes_one_ring_each(run):
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0@conf:rings=2", "-p", "2", "-n", "200000")
    tx = run("-f", "tx", "-i", name + "}0@conf:rings=2", "-p", "2", "-n", "200000", "-a", "0")
    tx_out, _ = done(tx)
    rx_out, _ = done(rx)
    assert "2 queues, 2 threads" in tx_out
    assert summary(tx_out)[1] == 200000
    assert summary(rx_out)[1] == 200000


def test_json_reports(run):
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-n", "2000000", "-T", "50", "--json")
    tx = run("-f", "tx", "-i", name + "}0", "-n", "2000000")
    out, err = done(rx)
    done(tx)
    objs = [json.loads(ln) for ln in out.splitlines()]
    assert objs[-1]["final"] and objs[-1]["pkts"] == 2000000
    assert all({"pps", "pkts", "bytes", "usec", "min_space"} <= o.keys() for o in objs[:-1])
    assert "Receiving from" in err  # start-up lines move to stderr


def test_wait_idle_exit(run):
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-W")
    tx = run("-f", "tx", "-i", name + "}0", "-n", "5000")
    done(tx)
    rx_out, _ = done(rx)
    assert summary(rx_out)[1] == 5000


def test_dump_and_notes(run):
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-n", "2", "-X")
    tx = run("-f", "tx", "-i", name + "}0", "-n", "2", "-o", "1", "-W")
    tx_out, tx_err = done(tx)
    rx_out, _ = done(rx)
    assert "-o 1 (prefetch): no effect here" in tx_err
    assert "-W: rx/rxseq only" in tx_err
    assert rx_out.count("flags 0x") == 2
    assert "    0: ff ff ff ff ff ff 00 00 00 00 00 00 08 00 45 10 " in rx_out


def test_indirect_refused_and_open_errors(capsys):
    assert main(["-i", "netmap:q{0", "-I", "-f", "tx", "-w", "0"]) == 1
    assert "needs a VALE port" in capsys.readouterr().err
    assert main(["-i", "netmap:bad{", "-w", "0"]) == 1
    assert "Unable to open netmap:bad{" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [
    [sys.executable, "-m", "pynetmap", "pkt-gen", "-h"],
    [sys.executable, "-m", "pynetmap.apps.pktgen", "-h"],
])
def test_entry_points(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("Usage: pkt-gen")


def test_console_script_installed():
    exe = shutil.which("pkt-gen", path=os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
    if exe is None:
        pytest.skip("pkt-gen console script not on PATH (package not installed)")
    r = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Usage: pkt-gen" in r.stdout


def test_library_send_receive_scapy_packets():
    from pynetmap.traffic import receive, send

    name = pipe()
    pkts = [udp(i, 64 + i) for i in range(10)]
    with pynetmap.open(name + "{0") as a, pynetmap.open(name + "}0") as b:
        assert send(a, pkts, repeat=3) == 30
        got = receive(b, 30, timeout_ms=2000)
    assert got.frames() == [bytes(pkts[i % 10]) for i in range(30)]
