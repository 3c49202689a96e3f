"""Two hosts through a switch: VALE with vale-ctl's agents vs the Linux bridge.

Topology (fresh namespaces from ``tests/netns.py``, always deleted): host A
(``pnm0``, 192.0.2.1) and host B (``pnm0``, 192.0.2.3) each reach namespace S
over a veth pair, whose S ends are ``pnm1`` and ``pnm2``.  In S the two ends
are joined, in turn, by

- the Linux bridge (``ip link add br0 type bridge``), the OS's own anchor;
- VALE switch ``vale0`` with ``vale-ctl -a vale0:pnm1`` and ``-a vale0:pnm2``:
  two switch agents, each forwarding its interface to a switch port, with
  the AF_XDP engine and then with AF_PACKET (``PYNETMAP_ENGINE``).

Per switch: pynetmap ``pkt-gen -f tx`` over AF_XDP in A (pinned to ``--cpu``)
sends 60-byte frames to a MAC no interface has, so both switches flood them
to B, whose kernel counts them (``rx_packets`` of B's ``pnm0``) and drops
them; Mpps = the count over a ``--seconds`` window (``nic_bench.tx_window``).
Then ``ping -c 200 -i 0.01`` from A to B: the average round trip.  Only
ratios within one run mean anything on a shared machine.

    python bench/vale_attach_bench.py [--seconds 5] [--cpu 0] [--json PATH]

Needs root (namespaces, AF_XDP).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import nic_bench as nb  # noqa: E402  (Proc, counters, the pkt-gen command)
from _common import table, write_json  # noqa: E402
from nic_bench import netns  # noqa: E402  (tests/netns.py, imported the way nic_bench can)

SWITCHES = ("linux-bridge", "vale-xdp", "vale-packet")


def vale_ctl(ns: str, engine: str, *args: str) -> None:
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m",
                        "pynetmap.apps.valectl", *args], capture_output=True, text=True,
                       timeout=90, env=nb.child_env(PYNETMAP_ENGINE=engine))
    if r.returncode:
        raise RuntimeError(f"vale-ctl {' '.join(args)}: {r.stderr.strip()}")


@contextlib.contextmanager
def switch(kind: str, s: str, ports: tuple[str, str]) -> Iterator[None]:
    """Join ``ports`` in namespace ``s`` with ``kind``; undo it on exit."""
    if kind == "linux-bridge":
        netns.run(s, "ip", "link", "add", "br0", "type", "bridge")
        for p in ports:
            netns.run(s, "ip", "link", "set", p, "master", "br0")
        netns.run(s, "ip", "link", "set", "br0", "up")
        try:
            yield
        finally:
            netns.run(s, "ip", "link", "del", "br0", check=False)
        return
    engine = kind.split("-")[1]
    attached = []
    try:
        for p in ports:
            vale_ctl(s, engine, "-a", f"vale0:{p}")
            attached.append(p)
        yield
    finally:
        for p in attached:
            vale_ctl(s, engine, "-d", f"vale0:{p}")


def ping_avg_us(a: str, addr: str) -> float:
    out = netns.run(a, "ping", "-q", "-c", "200", "-i", "0.01", "-W", "2", addr,
                    timeout=60).stdout
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    if not m:
        raise RuntimeError(f"no ping summary: {out!r}")
    return float(m.group(1)) * 1000


def measure(kind: str, a_args: argparse.Namespace, view: netns.VethPair, s: str) -> dict:
    with switch(kind, s, ("pnm1", "pnm2")):
        rtt = ping_avg_us(view.ns_a, view.addr_b)  # also warms ARP and the learning tables
        count = int(nb.MAX_PPS * (a_args.seconds + 25))
        proc = nb.Proc(nb.pktgen_argv(view, a_args.cpu, "tx", count),
                       env=nb.child_env(PYNETMAP_ENGINE="xdp"))
        try:
            row = nb.tx_window(view, proc, a_args.seconds)
        finally:
            proc.stop()
    row["ping_avg_us"] = rtt
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--cpu", type=int, default=0, help="core of the sender in A")
    ap.add_argument("--json", default="", help="results file (default bench/results/)")
    a = ap.parse_args(argv)
    why = netns.missing_privileges(bpf=True)
    if why:
        print(f"vale_attach_bench: {why}", file=sys.stderr)
        return 1
    rows: dict[str, dict] = {}
    with netns.veth_pair() as p, netns.veth_pair() as q:
        s = p.ns_b
        netns.run(q.ns_a, "ip", "addr", "flush", "dev", q.if_a)
        netns.run(q.ns_a, "ip", "addr", "add", "192.0.2.3/24", "dev", q.if_a)
        netns.run(q.ns_b, "ip", "link", "set", q.if_b, "down")
        netns.run(q.ns_b, "ip", "link", "set", q.if_b, "name", "pnm2", "netns", s)
        netns.run(s, "ip", "addr", "flush", "dev", p.if_b)
        netns.run(s, "ip", "link", "set", "pnm2", "up")
        # the sender's view: A's pnm0 -> B's pnm0, counted at B
        view = netns.VethPair(p.ns_a, q.ns_a, "pnm0", "pnm0", p.addr_a, "192.0.2.3",
                              p.mac_a, q.mac_a)
        for kind in SWITCHES:
            try:
                rows[kind] = measure(kind, a, view, s)
            except Exception as e:  # noqa: BLE001 - a failed row says why, the others run
                rows[kind] = {"error": str(e)[:200]}
            finally:
                nb.Proc.stop_all()
    base = rows["linux-bridge"].get("mpps")
    lines = []
    for kind, r in rows.items():
        if "error" in r:
            lines.append([kind, "-", "-", "-", r["error"]])
        else:
            ratio = r["mpps"] / base if base else float("nan")
            lines.append([kind, f"{r['mpps']:.3f}", f"{ratio:.2f}",
                          f"{r['ping_avg_us']:.1f}", ""])
    print(table(["switch", "Mpps A->B", "x Linux bridge", "ping avg us", "note"], lines))
    path = write_json("vale_attach", {"seconds": a.seconds, "frame": nb.FRAME, "rows": rows})
    if a.json:
        os.replace(path, a.json)
        path = a.json
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
