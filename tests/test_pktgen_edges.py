"""pkt-gen at its edges: -p with -n and --pcap-out, --json for every function,
bad thread counts, bad capture files, negative numbers and bad paths, Ctrl-C
while a worker waits.  Runs over netmap pipes, unprivileged; every wait is
bounded and nothing is timed: the tests count packets, lines and poll calls.
"""

import json
import os
import signal
import struct
import subprocess
import sys
import threading

import pytest
from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap, wrpcap
from test_pktgen_run import capture, done, pipe, run, summary, udp  # noqa: F401 (run)

import pynetmap
from pynetmap import pcap
from pynetmap.apps.pktgen import main
from pynetmap.apps.pktgen import options as O
from pynetmap.apps.pktgen.workers import SLICE_MS
from pynetmap.port import Port

TIMEOUT = 60


def pktgen(*args):
    """One pkt-gen process that is expected to stop by itself (bounded)."""
    return subprocess.run([sys.executable, "-m", "pynetmap.apps.pktgen", "-w", "0", *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


def one_error_line(r, *words):
    """A refusal: non-zero exit, before "Ready...", one line on stderr saying why."""
    assert r.returncode != 0, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert "Ready" not in r.stderr and not r.stdout


# -- 1. --pcap-out with -p N ----------------------------------------------------------------
def test_pcap_out_with_threads_holds_every_packet(run, tmp_path):  # noqa: F811
    out = str(tmp_path / "out.pcap")
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0@conf:rings=2", "-p", "2", "-n", "4000",
             "--pcap-out", out)
    tx = run("-f", "tx", "-i", name + "}0@conf:rings=2", "-p", "2", "-n", "4000")
    done(tx)
    rx_out, _ = done(rx)
    assert summary(rx_out)[1] == 4000
    got = rdpcap(out)
    assert len(got) == 4000  # read by scapy, not by us
    assert {len(p) for p in got} == {60}
    assert os.listdir(tmp_path) == ["out.pcap"]  # the parts were merged and removed


def test_append_parts_keeps_worker_order(tmp_path):
    paths = [str(tmp_path / f"p{i}") for i in range(3)]
    for i, path in enumerate(paths):
        w = pcap.Writer(path)
        for j in range(i + 1):
            w.write(bytes([i, j]) * 10)
        w.close()
    pcap.append_parts(paths[0], paths[1:])
    cap = pcap.read(paths[0])
    assert [cap.packet(k)[:2] for k in range(len(cap))] == [
        bytes([0, 0]), bytes([1, 0]), bytes([1, 1]), bytes([2, 0]), bytes([2, 1]),
        bytes([2, 2])]
    assert os.listdir(tmp_path) == ["p0"]


# -- 2. -n is exact with -p -----------------------------------------------------------------
def test_n_split_over_threads_adds_up():
    c = O.parse(["-i", "x", "-n", "1001", "-p", "2"])
    assert [c.share(0), c.share(1)] == [501, 500]
    c = O.parse(["-i", "x", "-n", "2", "-p", "3"])
    assert [c.share(i) for i in range(3)] == [1, 1, 0]


@pytest.mark.parametrize("n", [1001, 1])
def test_n_exact_with_threads(run, n):  # noqa: F811
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0@conf:rings=2", "-p", "2", "-n", str(n))
    tx = run("-f", "tx", "-i", name + "}0@conf:rings=2", "-p", "2", "-n", str(n))
    tx_out, _ = done(tx, TIMEOUT)
    rx_out, _ = done(rx, TIMEOUT)
    assert summary(tx_out)[1] == n
    assert summary(rx_out)[1] == n


# -- 3. --json: a final object for every function ---------------------------------------------
def test_ping_and_pong_end_with_a_json_object(run):  # noqa: F811
    name = pipe()
    pong = run("-f", "pong", "-i", name + "{0", "-n", "200", "--json")
    ping = run("-f", "ping", "-i", name + "}0", "-n", "200", "--json")
    ping_out, _ = done(ping)
    pong_out, _ = done(pong)
    p = json.loads(ping_out.splitlines()[-1])
    assert p["final"] and p["function"] == "ping" and p["pkts"] == 200
    assert 0 < p["received"] <= 200 and 0 < p["rtt_min_ns"]
    q = json.loads(pong_out.splitlines()[-1])
    assert q["final"] and q["function"] == "pong" and q["pkts"] == 200
    for out in (ping_out, pong_out):  # every line of stdout is an object
        assert all(isinstance(json.loads(ln), dict) for ln in out.splitlines())


# -- 4. more workers than rings ----------------------------------------------------------------
def test_more_threads_than_rings_is_an_error():
    r = pktgen("-f", "rx", "-i", pipe() + "{0", "-p", "3", "-n", "10")
    one_error_line(r, "bad nthreads 3, have 1 queues")


# -- 5. --replay refuses what it cannot send -----------------------------------------------
def _pcap_bytes(frames, linktype=1):
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for f in frames:
        out += struct.pack("<IIII", 1, 0, len(f), len(f)) + f
    return out


def _bad_capture(tmp_path, kind):
    path = tmp_path / f"{kind}.pcap"
    good = [bytes(udp(i, 80)) for i in range(3)]
    if kind == "cut_frame":
        path.write_bytes(_pcap_bytes(good)[:-5])
    elif kind == "cut_header":
        path.write_bytes(_pcap_bytes(good) + b"\0" * 7)
    elif kind == "raw_ip":
        wrpcap(str(path), [IP(dst="10.0.0.2") / UDP()])  # link type 101 or 228, not 1
    elif kind == "empty_frame":
        path.write_bytes(_pcap_bytes(good + [b""]))
    elif kind == "one_byte":
        path.write_bytes(_pcap_bytes([b"\x01"] + good))
    return str(path)


@pytest.mark.parametrize("kind, why", [
    ("cut_frame", "truncated"), ("cut_header", "truncated"), ("raw_ip", "not Ethernet"),
    ("empty_frame", "has 0 bytes"), ("one_byte", "has 1 bytes"),
])
def test_replay_refuses_bad_captures(tmp_path, kind, why):
    path = _bad_capture(tmp_path, kind)
    r = pktgen("-f", "tx", "-i", pipe() + "}0", "-n", "1", "--replay", path)
    one_error_line(r, why, path)


def test_truncated_pcapng_refused(tmp_path):
    path = str(tmp_path / "in.pcapng")
    full = capture(tmp_path, [udp(1, 100), udp(2, 100)], ng=True)
    with open(full, "rb") as f, open(path, "wb") as g:
        g.write(f.read()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        pcap.read(path)


def test_snaplen_cut_frames_are_reported(run, tmp_path):  # noqa: F811
    frames = [bytes(udp(i, 100)) for i in range(2)]
    raw = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 64, 1)
    for f in frames:  # captured with snaplen 64: 64 bytes kept of 100
        raw += struct.pack("<IIII", 1, 0, 64, len(f)) + f[:64]
    path = tmp_path / "snap.pcap"
    path.write_bytes(raw)
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-n", "4")
    tx = run("-f", "tx", "-i", name + "}0", "-n", "4", "--replay", str(path))
    _, err = done(tx)
    done(rx)
    assert "--replay: 2 of 2 frames were cut by the capture (snaplen)" in err


# -- 6. Ctrl-C in every waiting state; reports add up to the summary ------------------------
@pytest.mark.parametrize("function", ["tx", "txseq", "rx", "rxseq", "ping", "pong"])
def test_ctrl_c_while_waiting(monkeypatch, capsys, function):
    """The peer is there but never reads nor sends: every worker ends up waiting in
    poll.  Each wait must be a slice of at most SLICE_MS; a SIGINT sent from the third
    wait stops the run, whose periodic reports add up to its final object."""
    timeouts = []
    sent_sigint = threading.Event()
    real_poll = Port.poll

    def poll(self, events=0, timeout_ms=-1):
        if threading.current_thread() is not threading.main_thread() and timeout_ms:
            timeouts.append(timeout_ms)
            if len(timeouts) == 3 and not sent_sigint.is_set():
                sent_sigint.set()
                os.kill(os.getpid(), signal.SIGINT)
        return real_poll(self, events, timeout_ms)

    monkeypatch.setattr(Port, "poll", poll)
    name = pipe()
    end = "}0" if function in ("tx", "txseq", "ping") else "{0"
    other = "{0" if end == "}0" else "}0"
    with pynetmap.open(name + other) as peer:
        slots = (peer.rx_rings or peer.tx_rings)[0].num_slots
        assert main(["-f", function, "-i", name + end, "-w", "0", "-T", "20",
                     "--json"]) == 0
    assert sent_sigint.is_set()
    assert timeouts and max(timeouts) <= SLICE_MS, timeouts
    objs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    final = objs[-1]
    assert final["final"]
    assert sum(o["pkts"] for o in objs[:-1]) == final["pkts"]
    if function in ("tx", "txseq"):
        assert final["pkts"] == slots - 1  # the ring was full: counted when submitted


def test_rate_limiter_sleeps_in_slices(monkeypatch):
    """-R 1 waits a second between packets: in slices, so a cancel is seen."""
    from pynetmap.apps.pktgen import workers

    naps = []
    monkeypatch.setattr(workers.time, "sleep", naps.append)
    rl = workers.RateLimiter(1, 1)
    rl.next_ns = workers.time.time_ns()
    cancel = threading.Event()

    real = workers.time.time_ns
    calls = iter(range(100))

    def clock():  # cancel after a few looks at the clock
        if next(calls) == 5:
            cancel.set()
        return real()

    monkeypatch.setattr(workers.time, "time_ns", clock)
    rl.take(1, cancel)
    assert naps and max(naps) <= SLICE_MS / 1000


# -- 7. negative numbers, bad paths ----------------------------------------------------------
@pytest.mark.parametrize("opt, what", [
    ("-c", "cpus"), ("-n", "count"), ("-p", "nthreads"), ("-b", "burst"), ("-l", "pktsize"),
    ("-T", "report interval"), ("-w", "wait"), ("-R", "rate"), ("-a", "affinity"),
    ("-F", "number of fragments"), ("-M", "fragment size"), ("-H", "virtio-net"),
    ("-o", "options"),
])
def test_negative_numbers_refused(opt, what, capsys):
    argv = ["-i", "x", "-f", "tx", opt, "-1"]
    with pytest.raises(O.UsageError, match=f"bad {what}"):
        O.parse(argv)
    assert main(argv) == 255
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("pkt-gen: bad ") and "-1" in first and opt in first


def test_pcap_out_unwritable_refused_before_ready(tmp_path):
    r = pktgen("-f", "rx", "-i", pipe() + "{0", "-n", "1", "--pcap-out",
               str(tmp_path / "nonexistent" / "x"))
    one_error_line(r, "--pcap-out", "No such file")
    r = pktgen("-f", "rx", "-i", pipe() + "{0", "-n", "1", "--pcap-out", str(tmp_path))
    one_error_line(r, "--pcap-out", "directory")


def test_replay_unreadable_refused_before_ready(tmp_path):
    r = pktgen("-f", "tx", "-i", pipe() + "}0", "-n", "1", "--replay",
               str(tmp_path / "missing.pcap"))
    one_error_line(r, "missing.pcap")


# -- 8. the start-up line under --replay ------------------------------------------------------
def test_replay_startup_line_names_the_file(run, tmp_path):  # noqa: F811
    src = capture(tmp_path, [udp(i, 70) for i in range(3)])
    name = pipe()
    rx = run("-f", "rx", "-i", name + "{0", "-n", "3")
    tx = run("-f", "tx", "-i", name + "}0", "-n", "3", "--replay", src)
    tx_out, _ = done(tx)
    done(rx)
    lines = tx_out.splitlines()
    assert lines[1] == f"3 frames from {src}, sent as captured"
    assert "10.0.0.1" not in tx_out and "10.1.0.1" not in tx_out


def test_a_burst_moves_at_most_half_a_ring() -> None:
    """-b larger than half the ring is cut to half: two halves in flight, no cliff."""
    from types import SimpleNamespace

    from pynetmap.apps.pktgen.workers import half_ring

    assert [half_ring(SimpleNamespace(num_slots=n)) for n in (1, 2, 1024, 4096)] == [1, 1, 512,
                                                                                     2048]


def test_receivers_open_without_tx_polling() -> None:
    """rx/rxseq never send: their polls skip the TX flush (NR_NO_TX_POLL); senders keep it."""
    from pynetmap.apps.pktgen import options as O
    from pynetmap.constants import NR_NO_TX_POLL

    assert O.open_kwargs(O.parse(["-i", "netmap:x{0", "-f", "rx"]))["flags"] == NR_NO_TX_POLL
    assert O.open_kwargs(O.parse(["-i", "netmap:x{0", "-f", "rxseq", "-C", "512"])) == {
        "tx_slots": 512, "rx_slots": 512, "flags": NR_NO_TX_POLL}
    assert "flags" not in O.open_kwargs(O.parse(["-i", "netmap:x}0", "-f", "tx"]))
