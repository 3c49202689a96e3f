"""pkt-gen's command line and output formats, without running traffic."""

import os
import re

import pytest

from pynetmap.apps.pktgen import main
from pynetmap.apps.pktgen import options as O
from pynetmap.apps.pktgen import report as R

# Patterns a script written for netmap's pkt-gen would use on its output.
REPORT = re.compile(
    r"^(?P<ts>\d{3}\.\d{6}) main_thread \[\d+\] (?P<pps>\d+\.\d{3}) (?P<u>[KMGT]?)pps "
    r"(?P<avg>\[avg/std \d+\.\d{3} [KMGT]?/\d+\.\d{3} [KMGT]?pps\])?"
    r"\((?P<pkts>\d+\.\d{3}) [KMGT]?pkts (?P<bps>\d+\.\d{3}) [KMGT]?bps in (?P<usec>\d+) usec\) "
    r"(?P<batch>\d+\.\d{2}) avg_batch (?P<space>\d+) min_space$")
REPORT_RAW = re.compile(r"main_thread \[\d+\] (\d+) pps \((\d+) pkts (\d+) bps in (\d+) usec\)")
SUMMARY = re.compile(r"^(Sent|Received) (\d+) packets (\d+) bytes (\d+) events (\d+) bytes each "
                     r"in (\d+\.\d{2}) seconds\.$", re.M)
SPEED = re.compile(r"^Speed: (\d+\.\d{3}) ([KMGT]?)pps Bandwidth: (\d+\.\d{3}) ([KMGT]?)bps "
                   r"\(raw (\d+\.\d{3}) ([KMGT]?)bps\)\. Average batch: (\d+\.\d{2}) pkts$", re.M)


def letters(getopt_string):
    return [c for c in getopt_string if c != ":"]


def test_every_getopt_letter_is_documented():
    documented = {k.split()[0] for k in O.OPTION_HELP}
    for c in letters(O.GETOPT):
        assert f"-{c}" in documented, c
    for long in O.LONG:
        if long.rstrip("=") != "help":
            assert f"--{long.rstrip('=')}" in documented


ARGS = {"a": "0", "f": "tx", "F": "2", "n": "10", "i": "netmap:x{1", "l": "100", "d": "10.1.0.1",
        "s": "10.0.0.1", "D": "00:11:22:33:44:55", "S": "00:11:22:33:44:66", "b": "32",
        "c": "0", "o": "4", "p": "2", "T": "500", "w": "0", "R": "1000", "C": "512",
        "H": "12", "P": "/tmp/x.pcap", "M": "512"}


@pytest.mark.parametrize("letter", letters(O.GETOPT))
def test_every_option_is_accepted_and_changes_the_config(letter):
    base = ["-i", "netmap:x{1"]
    arg = [f"-{letter}"] + ([ARGS[letter]] if f"{letter}:" in O.GETOPT else [])
    cfg = O.parse(base + arg) if letter != "i" else O.parse(arg)
    if letter == "h":
        assert cfg.help
        return
    default = O.parse(base)
    if letter in ("i", "4") or (letter == "c" and (os.cpu_count() or 1) == 1):
        return  # the same as the default
    assert cfg != default, f"-{letter} had no effect on the configuration"


def test_defaults_are_netmaps():
    c = O.parse(["-i", "netmap:p{0"])
    assert (c.function, c.pkt_size, c.burst, c.report_ms, c.wait_link, c.npkts) == \
        ("rx", 60, 512, 1000, 2, 0)
    assert O.parse(["-i", "vale0:a"]).wait_link == 0
    assert O.parse(["-i", "p{0", "-f", "ping"]).burst == 1
    assert O.parse(["-i", "eth0"]).ifname == "netmap:eth0"
    assert O.parse(["-i", "x", "-l", "100", "-l", "64"]).pkt_min_size == 64
    assert O.parse(["-i", "x", "-Nv", "-n100"]).npkts == 100  # clustered, attached
    c = O.parse(["-i", "x", "-f", "txseq", "-n", "5"])
    assert c.npkts == 0 and "Ignoring -n argument" in c.notes


@pytest.mark.parametrize("argv, why", [
    (["-f", "tx"], "missing -i"),
    (["-i", "x", "-f", "bogus"], "unrecognised function"),
    (["-i", "x", "-l", "15"], "bad pktsize"),
    (["-i", "x", "-D", "zz:00"], "invalid MAC"),
    (["-i", "x", "-H", "7"], "virtio-net"),
    (["-i", "x", "-F", "64"], "fragments"),
    (["-i", "x", "-c", "999"], "cpus"),
    (["-i", "x", "-f", "ping", "-p", "2"], "one thread"),
    (["-i", "x", "-n", "abc"], "needs a number"),
    (["-i", "x", "-q"], "option -q not recognized"),
])
def test_bad_command_lines(argv, why, capsys):
    with pytest.raises(O.UsageError, match=why):
        O.parse(argv)
    assert main(argv) == 255
    assert "Usage: pkt-gen" in capsys.readouterr().err


def test_help_exits_zero(capsys):
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: pkt-gen")
    for opt in O.OPTION_HELP:
        assert opt in out


def test_geometry_option():
    c = O.parse(["-i", "x", "-C", "256,512,2"])
    assert O.geometry(c) == {"tx_slots": 256, "rx_slots": 512, "tx_rings": 2, "rx_rings": 2}
    assert O.geometry(O.parse(["-i", "x", "-C", "128"])) == {"tx_slots": 128, "rx_slots": 128}


def test_norm_units():
    assert R.norm(14_880_952) == "14.881 M"
    assert R.norm(1000) == "1.000 K"
    assert R.norm(0) == "0.000 "
    assert R.norm(14_880_952, normalize=False) == "14880952 "


def test_report_line_matches_netmap_pattern():
    rep = R.Reporter(avg=True)
    line = R.log_prefix("main_thread", 2781) + rep.line(14_895_000, 14_895_000 * 60, 29_000,
                                                         1_001_023, 99999)
    m = REPORT.match(line)
    assert m and m["pps"] == "14.880" and m["u"] == "M" and m["usec"] == "1001023"
    assert m["avg"] == "[avg/std 14.880 M/0.000 pps]"
    assert m["space"] == "99999" and m["batch"] == "513.62"
    raw = R.Reporter(normalize=False).line(1000, 60000, 10, 1_000_000, 0)
    assert REPORT_RAW.search("main_thread [2781] " + raw)


def test_summary_matches_netmap_pattern():
    text = R.summary(True, 1_000_000, 60_000_000, 1954, 0.07)
    assert SUMMARY.search(text).groups() == ("Sent", "1000000", "60000000", "1954", "60", "0.07")
    s = SPEED.search(text)
    assert s and s.group(1, 2) == ("14.286", "M") and s.group(7) == "511.77"
    framed = R.summary(False, 100, 6000, 1, 1.0, framing=True)
    assert "raw 67.200 Kbps" in framed and framed.startswith("Received")
    assert R.summary(True, 0, 0, 0, 1.0) == "Sent nothing.\n"


def test_hexdump_layout():
    text = R.hexdump(bytes(range(20)), ring=0x10, cur=3, buf_idx=77, flags=0)
    lines = text.splitlines()
    assert lines[0] == "ring 0x10 cur     3 [buf     77 flags 0x0000 len    20]"
    assert lines[1].startswith("    0: 00 01 02") and lines[1][55:] == "." * 16
    assert lines[2][55:] == "...."  # netmap drops this partial ASCII row; we print it


def test_rate_limit_arithmetic():
    assert R.rate_burst(512, 1_000_000) == 512 and R.rate_burst(512, 30_000) == 100
    assert R.rate_burst(512, 10) == 1
    assert R.rate_period_ns(100, 30_000) == 3_333_333
    assert R.rate_start_ns(5_300_000_000) == 7_000_000_000
