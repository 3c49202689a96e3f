"""netmap port names (libnetmap's ``nmport_parse`` grammar, spec §3), with no I/O.

``parse("netmap:eth0-2/T@conf:slots=512")`` returns a :class:`PortSpec`
saying what netmap's kernel would be asked for: the name it sees
(``nr_name``), the ring selection (``mode``, ``ringid``), the ``NR_*``
flags, the memory region and the ``@`` options.  Every error is a
:class:`PortNameError` (a ``ValueError``) naming the 0-based position of
the offending character and the reason.

Grammar::

    portspec := prefix ':' name [pipe] [mode] ['/' flags] ['@' memid] {'@' option}
    prefix   := 'netmap' | 'vale' ident        (netmap: is stripped from nr_name,
                                                 valeX: is kept)
    pipe     := ('{' | '}') ident               master / slave end
    mode     := '^' | '^' N | '*' | '-' N       host rings, one host pair, NIC+host,
                                                 one NIC pair (N < 4095)
    flags    := one or more of x z t r R T
    option   := key | key '=' value | key ':' k=v[,k=v...]

Decision on spec §3.4: a name may hold any character except the separators
``- * ^ / @ { }`` (netmap's current behaviour, so VLAN names like
``em0.123`` work); hence ``netmap:vale0:0`` (name ``vale0:0``) and
``netmap:eth0&`` are accepted, unlike netmap's old test table.  Option keys
are returned with ``_`` for ``-`` (``host_rings``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .constants import (
    NETMAP_REQ_IFNAMSIZ,
    NETMAP_RING_MASK,
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

SEPARATORS = "-*^/@{}"
FLAG_BITS = {"x": NR_EXCLUSIVE, "z": NR_ZCOPY_MON, "t": NR_MONITOR_TX, "r": NR_MONITOR_RX,
             "R": NR_RX_RINGS_ONLY, "T": NR_TX_RINGS_ONLY}
_IDENT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_DIGITS = set("0123456789")

#: option name -> (default key or None, allowed keys, mandatory keys)
OPTIONS: dict[str, tuple[str | None, tuple[str, ...], tuple[str, ...]]] = {
    "share": ("port", ("port",), ("port",)),
    "conf": (None, ("rings", "host_rings", "slots", "tx_rings", "rx_rings", "host_tx_rings",
                    "host_rx_rings", "tx_slots", "rx_slots"), ()),
    "extmem": ("file", ("file", "if_num", "if_size", "ring_num", "ring_size", "buf_num",
                        "buf_size"), ("file",)),
    "offset": ("initial", ("initial", "bits"), ("initial",)),
}
_enabled = {"share", "conf", "extmem"}


def enable_option(name: str) -> None:
    """Allow an option that is off by default (netmap's ``offset``)."""
    if name not in OPTIONS:
        raise KeyError(name)
    _enabled.add(name)


def disable_option(name: str) -> None:
    _enabled.discard(name)


class PortNameError(ValueError):
    """A port name that netmap would refuse (EINVAL)."""

    def __init__(self, spec: str, pos: int, reason: str) -> None:
        super().__init__(f"bad port name {spec!r} at position {pos}: {reason}")
        self.spec = spec
        self.pos = pos
        self.reason = reason


@dataclass(frozen=True)
class Conf:
    """``@conf:`` resolved: 0 means "not given, use the port's default"."""

    tx_rings: int = 0
    rx_rings: int = 0
    host_tx_rings: int = 0
    host_rx_rings: int = 0
    tx_slots: int = 0
    rx_slots: int = 0


@dataclass(frozen=True)
class PortSpec:
    """What a port name asks netmap for (equal when they ask for the same thing)."""

    spec: str = field(compare=False)
    prefix: str
    name: str
    port: str
    pipe_id: str | None = None
    pipe_role: str | None = None
    mode: int = NR_REG_ALL_NIC
    ringid: int = 0
    flags: int = 0
    mem_id: int = 0
    options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: the option text as written, from its first '@' ("" if none)
    option_text: str = field(default="", compare=False)

    def is_pipe(self) -> bool:
        return self.pipe_id is not None

    def is_vale(self) -> bool:
        """A VALE port: netmap's kernel dispatches on the name starting with "vale"."""
        return self.name.startswith("vale")

    def conf(self) -> Conf:
        """The ``@conf:`` counts; specific keys win over generic ones in any order."""
        raw = self.options.get("conf", {})
        vals: dict[str, int] = {}
        for k, v in raw.items():
            if not v.isdigit():
                raise PortNameError(self.spec, self.spec.find(f"{k.replace('_', '-')}="),
                                    f"conf key '{k}' needs a non-negative integer, got {v!r}")
            vals[k] = int(v)
        out = {}
        for generic, specific in (("rings", ("tx_rings", "rx_rings")),
                                  ("host_rings", ("host_tx_rings", "host_rx_rings")),
                                  ("slots", ("tx_slots", "rx_slots"))):
            for s in specific:
                out[s] = vals.get(s, vals.get(generic, 0))
        return Conf(**out)

    def with_ring(self, mode: int, ringid: int) -> PortSpec:
        """The same port with another ring selection (pkt-gen ``-p``: one ring each)."""
        s = replace(self, mode=mode, ringid=ringid, spec="")
        return replace(s, spec=str(s))

    def __str__(self) -> str:
        out = self.name if self.prefix != "netmap" else f"netmap:{self.name}"
        out += {NR_REG_SW: "^", NR_REG_NIC_SW: "*", NR_REG_ONE_NIC: f"-{self.ringid}",
                NR_REG_ONE_SW: f"^{self.ringid}"}.get(self.mode, "")
        letters = "".join(c for c, bit in FLAG_BITS.items() if self.flags & bit)
        if letters:
            out += "/" + letters
        if self.mem_id:
            out += f"@{self.mem_id}"
        for opt, kv in self.options.items():
            body = ",".join(f"{k.replace('_', '-')}={v}" for k, v in kv.items())
            out += f"@{opt}:{body}" if body else f"@{opt}"
        return out


def parse(spec: str, options: bool = True) -> PortSpec:
    """Parse a netmap port name; raises :class:`PortNameError`.

    With ``options=False`` the ``@`` option list is kept as text
    (``option_text``) and not checked, as netmap's register stage does.
    """
    if not isinstance(spec, str):
        raise TypeError(f"port name must be a str, not {type(spec).__name__}")

    def fail(pos: int, reason: str) -> PortNameError:
        return PortNameError(spec, pos, reason)

    # -- prefix ------------------------------------------------------------
    if spec.startswith("netmap"):
        if len(spec) == 6 or spec[6] != ":":
            raise fail(6, "no identifier allowed between 'netmap' and ':'")
        prefix, start, keep = "netmap", 7, ""
    elif spec.startswith("vale"):
        colon = spec.find(":")
        if colon < 0:
            raise fail(len(spec), "missing ':' after the VALE switch name")
        for i in range(4, colon):
            if spec[i] not in _IDENT:
                raise fail(i, f"invalid identifier '{spec[4:colon]}'")
        prefix, start, keep = spec[:colon], colon + 1, spec[: colon + 1]
    else:
        raise fail(0, "prefix unknown or missing (want 'netmap:' or 'valeX:')")

    # -- name and pipe -----------------------------------------------------
    i = start
    while i < len(spec) and spec[i] not in SEPARATORS:
        i += 1
    port = spec[start:i]
    if not port:
        raise fail(start, "invalid empty port name")
    pipe_id = pipe_role = None
    if i < len(spec) and spec[i] in "{}":
        pipe_role = "master" if spec[i] == "{" else "slave"
        j = i + 1
        while j < len(spec) and spec[j] not in "-*^/@":
            j += 1
        pipe_id = spec[i + 1 : j]
        if not pipe_id:
            raise fail(i + 1, "invalid empty pipe name")
        bad = next((k for k, c in enumerate(pipe_id) if c not in _IDENT), None)
        if bad is not None:
            raise fail(i + 1 + bad, f"invalid pipe name '{pipe_id}'")
        name = keep + port + spec[i] + pipe_id
        i = j
    else:
        name = keep + port
    if len(name) >= NETMAP_REQ_IFNAMSIZ:
        raise fail(start, f"name too long ({len(name)} chars, at most "
                          f"{NETMAP_REQ_IFNAMSIZ - 1})")

    # -- ring selection, flags, mem id (a small state machine) ----------------
    mode, ringid, flags, mem_id = NR_REG_ALL_NIC, 0, 0, 0
    state = "START"
    opt_at = -1
    n = len(spec)
    while True:
        c = spec[i] if i < n else ""
        if state == "START":
            if c == "":
                break
            if c == "^":
                mode, state, i = NR_REG_SW, "ONESW", i + 1
            elif c == "*":
                mode, state, i = NR_REG_NIC_SW, "RNGSFXOK", i + 1
            elif c == "-":
                mode, state, i = NR_REG_ONE_NIC, "GETNUM", i + 1
            elif c == "/":
                state, i = "FLAGS", i + 1
            elif c == "@":
                state, i = "MEMID", i + 1
            else:
                raise fail(i, f"unexpected character '{c}'")
        elif state == "ONESW":
            if c in _DIGITS and c:
                mode, state = NR_REG_ONE_SW, "GETNUM"
            else:
                state = "RNGSFXOK"
        elif state == "GETNUM":
            if c == "":
                raise fail(i, "unexpected end of request")
            if c not in _DIGITS:
                raise fail(i, f"got '{c}' while expecting a number")
            j = i
            while j < n and spec[j] in _DIGITS:
                j += 1
            ringid = int(spec[i:j])
            if ringid >= NETMAP_RING_MASK:
                raise fail(i, f"ring number {ringid} out of range [0, {NETMAP_RING_MASK})")
            state, i = "RNGSFXOK", j
        elif state == "RNGSFXOK":
            if c == "":
                break
            if c == "/":
                state, i = "FLAGS", i + 1
            elif c == "@":
                state, i = "MEMID", i + 1
            else:
                raise fail(i, f"unexpected character '{c}'")
        elif state in ("FLAGS", "FLAGSOK"):
            if c == "":
                if state == "FLAGS":
                    raise fail(i, "unexpected end of request ('/' needs at least one flag)")
                break
            if c == "@" and state == "FLAGSOK":
                state, i = "MEMID", i + 1
            elif c in FLAG_BITS:
                flags |= FLAG_BITS[c]
                state, i = "FLAGSOK", i + 1
            else:
                raise fail(i, f"unrecognized flag '{c}'")
        elif state == "MEMID":
            if c == "":
                raise fail(i, "invalid empty mem_id")
            if c in _DIGITS:
                j = i
                while j < n and spec[j] in _DIGITS:
                    j += 1
                m = int(spec[i:j])
                if m == 0:
                    raise fail(i, "invalid mem_id 0 (must be > 0)")
                if mem_id and m != mem_id:
                    raise fail(i, f"mem_id already set to {mem_id}")
                mem_id, state, i = m, "RNGSFXOK", j
            else:
                opt_at = i - 1  # the options start at this '@'
                break
    text = spec[opt_at:] if opt_at >= 0 else ""
    opts = _parse_options(spec, opt_at) if text and options else {}
    return PortSpec(spec, prefix, name, keep + port, pipe_id, pipe_role, mode, ringid, flags,
                    mem_id, opts, text)


def _parse_options(spec: str, at: int) -> dict[str, dict[str, str]]:
    """``@opt`` ``@opt=value`` ``@opt:k=v,k=v`` ... from position ``at`` (an '@')."""
    out: dict[str, dict[str, str]] = {}
    pos = at
    for text in spec[at + 1 :].split("@"):
        pos += 1
        if not text:
            raise PortNameError(spec, pos, "empty option")
        cut = min((k for k in (text.find(":"), text.find("=")) if k >= 0), default=len(text))
        name = text[:cut]
        if name not in OPTIONS:
            raise PortNameError(spec, pos, f"unknown option '{name}'")
        if name not in _enabled:
            raise PortNameError(spec, pos, f"option '{name}' is not supported")
        default, allowed, mandatory = OPTIONS[name]
        body: dict[str, str] = {}
        if cut < len(text) and text[cut] == "=":
            if default is None:
                raise PortNameError(spec, pos + cut, f"'=' not valid after '{name}'")
            value = text[cut + 1 :]
            if not value:
                raise PortNameError(spec, pos + cut + 1, f"missing value for '{name}'")
            body[default] = value
        elif cut < len(text):  # ':' k=v list
            kpos = pos + cut + 1
            for item in text[cut + 1 :].split(","):
                if "=" not in item:
                    raise PortNameError(spec, kpos, f"missing '=value' for key '{item}'")
                k, v = item.split("=", 1)
                k = k.replace("-", "_")
                if k not in allowed:
                    raise PortNameError(spec, kpos, f"unknown key '{k}' for option '{name}'")
                if k in body:
                    raise PortNameError(spec, kpos, f"duplicate key '{k}'")
                if not v:
                    raise PortNameError(spec, kpos + len(k) + 1, f"missing value for key '{k}'")
                body[k] = v
                kpos += len(item) + 1
        for k in mandatory:
            if k not in body:
                raise PortNameError(spec, pos, f"option '{name}' needs '{k}' (missing body)")
        if name in out:
            raise PortNameError(spec, pos, f"option '{name}' given twice")
        out[name] = body
        pos += len(text)
    return out
