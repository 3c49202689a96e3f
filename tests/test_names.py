"""The port-name grammar: every row of spec §3.2 (the nmreq_parsing table),
the §3.4 decision, options, and hypothesis round trips."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynetmap.constants import (
    NR_EXCLUSIVE,
    NR_MONITOR_RX,
    NR_MONITOR_TX,
    NR_REG_ALL_NIC,
    NR_REG_NIC_SW,
    NR_REG_ONE_NIC,
    NR_REG_ONE_SW,
    NR_REG_SW,
    NR_RX_RINGS_ONLY,
    NR_TX_RINGS_ONLY,
    NR_ZCOPY_MON,
)
from pynetmap.names import Conf, PortNameError, disable_option, enable_option, parse

A, ONE, SW, ONESW, NICSW = NR_REG_ALL_NIC, NR_REG_ONE_NIC, NR_REG_SW, NR_REG_ONE_SW, NR_REG_NIC_SW

# spec, nr_name, mode, ringid, flags, mem_id, option text (register stage)
OK = [
    ("netmap:eth0", "eth0", A, 0, 0, 0, ""),
    ("netmap:eth0-1", "eth0", ONE, 1, 0, 0, ""),
    ("netmap:eth0^", "eth0", SW, 0, 0, 0, ""),
    ("netmap:eth0^1", "eth0", ONESW, 1, 0, 0, ""),
    ("netmap:eth0*", "eth0", NICSW, 0, 0, 0, ""),
    ("netmap:eth0/x", "eth0", A, 0, NR_EXCLUSIVE, 0, ""),
    ("netmap:eth0/z", "eth0", A, 0, NR_ZCOPY_MON, 0, ""),
    ("netmap:eth0/r", "eth0", A, 0, NR_MONITOR_RX, 0, ""),
    ("netmap:eth0/t", "eth0", A, 0, NR_MONITOR_TX, 0, ""),
    ("netmap:eth0/rt", "eth0", A, 0, NR_MONITOR_RX | NR_MONITOR_TX, 0, ""),
    ("netmap:eth0-2/Tx", "eth0", ONE, 2, NR_TX_RINGS_ONLY | NR_EXCLUSIVE, 0, ""),
    ("netmap:eth0@2", "eth0", A, 0, 0, 2, ""),
    ("netmap:eth0@2/R@2", "eth0", A, 0, NR_RX_RINGS_ONLY, 2, ""),
    ("netmap:eth0@netmap:lo/R", "eth0", A, 0, 0, 0, "@netmap:lo/R"),
    ("netmap:eth0/R@xxx", "eth0", A, 0, NR_RX_RINGS_ONLY, 0, "@xxx"),
    ("netmap:eth0@conf:rings=4,slots=1024", "eth0", A, 0, 0, 0, "@conf:rings=4,slots=1024"),
    ("netmap:eth0@share=vale0:a", "eth0", A, 0, 0, 0, "@share=vale0:a"),
    ("netmap:14", "14", A, 0, 0, 0, ""),
    ("netmap:pipe{0", "pipe{0", A, 0, 0, 0, ""),
    ("netmap:pipe{in-7", "pipe{in", ONE, 7, 0, 0, ""),
    ("netmap:x}3", "x}3", A, 0, 0, 0, ""),
    ("vale0:0", "vale0:0", A, 0, 0, 0, ""),
    ("vale:0", "vale:0", A, 0, 0, 0, ""),
    ("valeXXX:YYY-4", "valeXXX:YYY", ONE, 4, 0, 0, ""),
    ("vale0:0{0", "vale0:0{0", A, 0, 0, 0, ""),
    ("vale0:0/Tx@opt", "vale0:0", A, 0, NR_TX_RINGS_ONLY | NR_EXCLUSIVE, 0, "@opt"),
    ("vale0:0-3@opt", "vale0:0", ONE, 3, 0, 0, "@opt"),
    # §3.4: flipped rows of the upstream table
    ("netmap:vale0:0", "vale0:0", A, 0, 0, 0, ""),
    ("netmap:eth0&", "eth0&", A, 0, 0, 0, ""),
    ("netmap:em0.123", "em0.123", A, 0, 0, 0, ""),
    ("netmap:eth0/xxTT", "eth0", A, 0, NR_EXCLUSIVE | NR_TX_RINGS_ONLY, 0, ""),
    ("netmap:eth0^/R", "eth0", SW, 0, NR_RX_RINGS_ONLY, 0, ""),
    ("netmap:eth0-4094", "eth0", ONE, 4094, 0, 0, ""),
]


@pytest.mark.parametrize("spec,name,mode,ringid,flags,mem_id,rest", OK)
def test_register_stage(spec, name, mode, ringid, flags, mem_id, rest):
    p = parse(spec, options=False)
    assert (p.name, p.mode, p.ringid, p.flags, p.mem_id) == (name, mode, ringid, flags, mem_id)
    assert p.option_text == rest


# spec, position of the offending character, words of the reason
ERRORS = [
    ("eth0", 0, "prefix"),
    ("", 0, "prefix"),
    ("netmapXXX:eth0", 6, "no identifier"),
    ("vale0", 5, "missing ':'"),
    ("vale-0:a", 4, "invalid identifier '-0'"),
    ("netmap:", 7, "empty port name"),
    ("netmap:^", 7, "empty port name"),
    ("netmap:{", 7, "empty port name"),
    ("netmap:x{", 9, "empty pipe name"),
    ("netmap:pipe{1}2", 13, "invalid pipe name '1}2'"),
    ("netmap:" + "a" * 64, 7, "too long"),
    ("netmap:eth0-", 12, "unexpected end"),
    ("netmap:eth0-x", 12, "got 'x' while expecting a number"),
    ("netmap:eth0-4095", 12, "out of range"),
    ("netmap:eth0*3", 12, "unexpected character"),
    ("netmap:eth0^^", 12, "unexpected character"),
    ("netmap:eth0/q", 12, "unrecognized flag 'q'"),
    ("netmap:eth0/", 12, "unexpected end"),
    ("netmap:eth0-1^", 13, "unexpected character"),
    ("netmap:eth0@2-1", 13, "unexpected character"),
    ("netmap:eth0@", 12, "empty mem_id"),
    ("vale0:0@", 8, "empty mem_id"),
    ("netmap:eth0@0", 12, "mem_id 0"),
    ("netmap:eth0@2/R@3", 16, "already set to 2"),
]


@pytest.mark.parametrize("spec,pos,reason", ERRORS)
def test_register_errors(spec, pos, reason):
    with pytest.raises(PortNameError) as e:
        parse(spec, options=False)
    assert e.value.pos == pos
    assert reason in e.value.reason
    assert isinstance(e.value, ValueError) and spec.__repr__() in str(e.value)


OPTION_ERRORS = [
    ("netmap:eth0@foo", "unknown option 'foo'"),
    ("netmap:eth0@netmap:lo/R", "unknown option 'netmap'"),
    ("netmap:eth0@conf=4", "'=' not valid after 'conf'"),
    ("netmap:eth0@conf:rings", "missing '=value' for key 'rings'"),
    ("netmap:eth0@conf:rings=1,rings=2", "duplicate key"),
    ("netmap:eth0@share", "missing body"),
    ("netmap:eth0@offset=64", "not supported"),
    ("netmap:eth0@conf:colour=2", "unknown key"),
    ("netmap:eth0@share=", "missing value"),
    ("netmap:eth0@conf:rings=1@@", "empty option"),
    ("netmap:eth0@conf:rings=", "missing value"),
]


@pytest.mark.parametrize("spec,reason", OPTION_ERRORS)
def test_option_errors(spec, reason):
    with pytest.raises(PortNameError) as e:
        parse(spec)
    assert reason in e.value.reason


def test_options_parsed():
    p = parse("netmap:eth0@conf:rings=4,slots=1024@share=vale0:a")
    assert p.options == {"conf": {"rings": "4", "slots": "1024"}, "share": {"port": "vale0:a"}}
    assert p.conf() == Conf(tx_rings=4, rx_rings=4, tx_slots=1024, rx_slots=1024)


def test_conf_specific_overrides_generic_in_any_order():
    for s in ("netmap:x@conf:tx-rings=2,rings=4", "netmap:x@conf:rings=4,tx-rings=2"):
        c = parse(s).conf()
        assert (c.tx_rings, c.rx_rings) == (2, 4)
    c = parse("netmap:x@conf:host-rings=3,host-rx-rings=1,rx-slots=7").conf()
    assert (c.host_tx_rings, c.host_rx_rings, c.rx_slots, c.tx_slots) == (3, 1, 7, 0)
    with pytest.raises(PortNameError):
        parse("netmap:x@conf:rings=four").conf()


def test_offset_option_can_be_enabled():
    enable_option("offset")
    try:
        assert parse("netmap:eth0@offset=64").options == {"offset": {"initial": "64"}}
    finally:
        disable_option("offset")


def test_kinds_and_pipes():
    p = parse("netmap:pipe{in-7")
    assert p.is_pipe() and (p.port, p.pipe_id, p.pipe_role) == ("pipe", "in", "master")
    assert parse("netmap:x}3").pipe_role == "slave"
    assert parse("vale0:0").is_vale() and parse("netmap:vale0:0").is_vale()
    assert not parse("netmap:eth0").is_vale()
    assert parse("vale0:0{0").is_pipe() and parse("vale0:0{0").port == "vale0:0"


def test_with_ring():
    p = parse("netmap:eth0*/T").with_ring(NR_REG_ONE_NIC, 3)
    assert (p.mode, p.ringid, p.flags) == (NR_REG_ONE_NIC, 3, NR_TX_RINGS_ONLY)
    assert parse(p.spec) == p


def test_type_error():
    with pytest.raises(TypeError):
        parse(42)  # type: ignore[arg-type]


ident = st.text("abcXYZ019_", min_size=1, max_size=8)
name_chars = st.text("abcdefXYZ0189_.&:", min_size=1, max_size=12)


@st.composite
def valid_specs(draw):
    if draw(st.booleans()):
        s = "netmap:" + draw(name_chars)
    else:
        s = "vale" + draw(st.text("ab01_", max_size=4)) + ":" + draw(name_chars)
    if draw(st.booleans()):
        s += draw(st.sampled_from("{}")) + draw(ident)
    s += draw(st.sampled_from(["", "^", "*", "-0", "-17", "^2"]))
    if draw(st.booleans()):
        s += "/" + draw(st.text("xztrRT", min_size=1, max_size=4))
    if draw(st.booleans()):
        s += f"@{draw(st.integers(1, 99))}"
    if draw(st.booleans()):
        s += f"@conf:rings={draw(st.integers(0, 9))},tx-slots={draw(st.integers(0, 999))}"
    return s


@given(valid_specs())
def test_round_trip(s):
    p = parse(s)
    assert parse(str(p)) == p


@given(st.text(max_size=30))
def test_garbage_never_crashes(s):
    try:
        parse(s)
    except PortNameError:
        pass


@given(st.text("netmap:valeXY{}-*^/@0123456789xzrtRT=,conf", max_size=30))
def test_grammar_soup_never_crashes(s):
    try:
        parse(s)
    except PortNameError as e:
        assert 0 <= e.pos <= len(s)
