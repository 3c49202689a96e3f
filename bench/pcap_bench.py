"""The pcap engine against the AF_PACKET engine and scapy, on one veth pair, 60-byte frames.

Same topology, frames and counting as ``bench/nic_bench.py`` (whose helpers this
uses): namespaces A and B, veth ``pnm0`` (A) <-> ``pnm1`` (B), always deleted.

TX (sender in A on ``--cpu``): pynetmap ``pkt-gen -f tx`` with ``PYNETMAP_ENGINE=pcap``
and ``=packet``, counted at pnm1's ``rx_packets`` over a ``--seconds`` window after the
first frame; scapy ``sendp`` of ``--scapy-count`` frames (its own send time is the
window).  Ratios are against scapy.

RX (receiver in A on the other core, A's stack work steered there by RPS): B offers
``--rx-count`` frames at ``--rx-rate`` pps (pynetmap pkt-gen tx over AF_XDP, bounded in
time) to each receiver in turn: ``pkt-gen -f rx`` on pcap and on packet, and scapy
``sniff`` (``store=False``, counting in its callback) offered ``--scapy-rx-count``
frames at ``--scapy-rx-rate`` (scapy cannot take the others' rate).  Offered = pnm1's
``tx_packets`` delta; drops = offered - received.

    python bench/pcap_bench.py [--seconds 5] [--rx-rate 200000] [--skip scapy] [--json PATH]

Needs root (namespaces) and libpcap (Debian: libpcap0.8).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys

import nic_bench as N
from _common import machine, table, write_json

netns = N.netns
TX_PEERS = ("pcap", "packet", "scapy")
RX_PEERS = ("pcap", "packet", "scapy")


def worker_sniff(ifname: str, count: int, seconds: float) -> None:
    """scapy ``sniff`` counting frames until SIGINT, ``count`` or ``seconds``."""
    from scapy.all import sniff

    got = 0

    def seen(_: object) -> None:
        nonlocal got
        got += 1

    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sniff(iface=ifname, count=count, timeout=seconds, store=False, prn=seen)
    print(json.dumps({"received": got}), flush=True)


def run_tx(peer: str, pair: netns.VethPair, a: argparse.Namespace, frame: bytes) -> dict:
    if peer == "scapy":
        return N.run_tx_scapy(pair, a, frame)
    return N.run_tx(peer, pair, a, frame, None)  # pkt-gen on the peer's engine


def _sniff_count(out: str) -> tuple[int, dict] | None:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return (int(json.loads(lines[-1])["received"]), {}) if lines else None


def run_rx(peer: str, pair: netns.VethPair, a: argparse.Namespace) -> dict:
    """One receiver, then the offered load (N.offer), then the receiver's own count."""
    rx_cpu = N.rx_cpus(a)[1]
    if peer == "scapy":
        load = argparse.Namespace(**{**vars(a), "rx_count": a.scapy_rx_count,
                                     "rx_rate": a.scapy_rx_rate})
        proc = N.Proc(N.in_ns(pair.ns_a, rx_cpu, sys.executable, os.path.abspath(__file__),
                              "_worker", "sniff", pair.if_a, str(2 * load.rx_count),
                              str(a.rx_limit + 30)), env=N.child_env())
        ready, count = "ready", _sniff_count
    else:
        load = a
        proc = N.Proc(N.pktgen_argv(pair, rx_cpu, "rx", 2 * a.rx_count, a_to_b=False),
                      env=N.child_env(PYNETMAP_ENGINE=peer))
        ready, count = "Receiving from", N.pktgen_rx_count
    # opened: 0.5 s more to reach the receive loop
    r = N.measure_rx(proc, pair, load, b"", None, a.rx_warmup, ready, 0.5, count)
    return {**r, "rate": load.rx_rate}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        kind, ifname, count, seconds = argv[1:]
        if kind != "sniff":
            raise SystemExit(f"unknown worker {kind}")
        worker_sniff(ifname, int(count), float(seconds))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="TX window per row")
    ap.add_argument("--json", default=None, help="results file (default "
                    "bench/results/pcap_bench.json)")
    ap.add_argument("--skip", action="append", default=[],
                    help="peers to leave out (pcap, packet, scapy), or tx, rx")
    ap.add_argument("--cpu", type=int, default=1 if (os.cpu_count() or 1) > 1 else 0,
                    help="core of every sender (default 1)")
    ap.add_argument("--rx-rate", type=int, default=200_000,
                    help="offered pps (default 2e5; 0: as fast as the sender goes)")
    ap.add_argument("--rx-count", type=int, default=None,
                    help="frames offered (default rate, or 1e6, x --seconds)")
    ap.add_argument("--scapy-count", type=int, default=20000, help="frames scapy sendp sends")
    ap.add_argument("--scapy-rx-rate", type=int, default=5000,
                    help="pps offered to scapy sniff (default 5000)")
    ap.add_argument("--scapy-rx-count", type=int, default=20000)
    ap.add_argument("--rx-warmup", type=float, default=6.0,
                    help="s a receiver may take to open before the load starts")
    a = ap.parse_args(argv)
    a.rx_count = a.rx_count or int((a.rx_rate or 1_000_000) * a.seconds)
    a.rx_sender = "pktgen"
    a.rx_limit = max(30.0, 10 * a.seconds)
    skip = {s.strip() for x in a.skip for s in x.split(",") if s.strip()}
    why = netns.missing_privileges()
    if why or not shutil.which("taskset"):
        print(f"pcap_bench: {why or 'needs taskset (util-linux)'}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, N._sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    netns.sweep_stale()
    tx: dict[str, dict] = {}
    rx: dict[str, dict] = {}
    try:
        with netns.veth_pair() as pair:
            fwd = N.udp_frame(N.SINK_MAC, pair.mac_a, pair.addr_a, pair.addr_b)
            try:
                for peer in TX_PEERS if "tx" not in skip else ():
                    if peer not in skip:
                        print(f"tx {peer} ...", flush=True)
                        try:
                            tx[peer] = run_tx(peer, pair, a, fwd)
                        except (RuntimeError, OSError, ValueError) as e:
                            tx[peer] = {"error": str(e)}
                if "rx" not in skip:
                    N.steer_rx(pair, N.rx_cpus(a)[1])
                for peer in RX_PEERS if "rx" not in skip else ():
                    if peer not in skip:
                        print(f"rx {peer} ...", flush=True)
                        try:
                            rx[peer] = run_rx(peer, pair, a)
                        except (RuntimeError, OSError, ValueError) as e:
                            rx[peer] = {"error": str(e)}
            finally:
                N.Proc.stop_all()
    except KeyboardInterrupt:
        print("interrupted; namespaces deleted", file=sys.stderr)
        return 130
    finally:
        N.Proc.stop_all()
    report(a, tx, rx)
    return 0


def report(a: argparse.Namespace, tx: dict, rx: dict) -> None:
    base = tx.get("scapy", {}).get("mpps")
    names = {"pcap": "pkt-gen, pcap engine (libpcap)", "packet": "pkt-gen, packet engine",
             "scapy": "scapy sendp / sniff"}
    if tx:
        print(f"\nTX: {N.FRAME}-byte frames pnm0 (A) -> pnm1 (B), sender on cpu {a.cpu}, "
              f"counted at pnm1 rx_packets")
        rows = []
        for peer, r in tx.items():
            if "mpps" in r:
                r["ratio_vs_scapy"] = r["mpps"] / base if base else None
                rows.append([names[peer], r["counted"], r["window_s"],
                             f"{r['mpps'] * 1000:.1f}", f"{r['ratio_vs_scapy']:.1f}"
                             if base else "-"])
            else:
                rows.append([names[peer], "-", "-", "-", "FAILED: " + r["error"]])
        print(table(["sender", "counted", "s", "kpps", "x scapy"], rows))
    if rx:
        print(f"\nRX: pnm1 (B) -> pnm0 (A), paced by pkt-gen tx (xdp) in B; receiver on cpu "
              f"{N.rx_cpus(a)[1]}; offered = pnm1 tx_packets delta")
        rows = []
        for peer, r in rx.items():
            if "mpps" in r:
                rows.append([names[peer], r["rate"], r["offered"], r["received"], r["drops"],
                             f"{r['mpps'] * 1000:.1f}"])
            else:
                rows.append([names[peer], "-", "-", "-", "-", "FAILED: " + r["error"]])
        print(table(["receiver", "rate pps", "offered", "received", "drops", "kpps"], rows))
    data = {"seconds": a.seconds, "frame": N.FRAME, "cpu": a.cpu, "rx_rate": a.rx_rate,
            "rx_count": a.rx_count, "scapy_rx_rate": a.scapy_rx_rate, "tx": tx, "rx": rx}
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine(), **data}, f, indent=2)
        print(f"results: {a.json}")
    else:
        print(f"results: {write_json('pcap_bench', data)}")


if __name__ == "__main__":
    sys.exit(main())
