"""``pynetmap TOOL ...``: one entry point for the tools.

    pynetmap pkt-gen ARGS     netmap's traffic generator (also the ``pkt-gen`` command)
    pynetmap bridge ARGS      netmap's bridge between two ports (also the ``bridge`` command)
    pynetmap vale-ctl ARGS    netmap's switch control (also the ``vale-ctl`` command)
    pynetmap lb ARGS          netmap's load balancer (also the ``lb`` command)
    pynetmap interfaces       the interfaces, with their netmap names (Windows: names/GUIDs)
    pynetmap list             regions and ports of this user
    pynetmap clean            release what dead processes left behind
"""

from __future__ import annotations

import sys


def _list() -> int:
    from . import osl
    from .registry import rundir, transaction

    with transaction() as state:
        print(f"registry: {rundir()}")
        for mid, reg in sorted(state["regions"].items(), key=lambda x: int(x[0])):
            print(f"region {mid}: shared memory {reg['shm']}")
        for name, rec in sorted(state["ports"].items()):
            opens = [f"{ep}:{o['pid']}{'' if osl.process_alive(o['pid'], o['token']) else '(dead)'}"
                     for ep in rec["endpoints"] for o in rec["endpoints"][ep]["opens"]]
            print(f"  {rec['kind']} {name} (region {rec['mem_id']}): {' '.join(opens)}")
    return 0


def _clean() -> int:
    from .registry import transaction

    with transaction() as state:
        n = state["swept"]
    print(f"released {n} open(s) of dead processes")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    tool, rest = args[0], args[1:]
    if tool == "pkt-gen":
        from .apps.pktgen import main as pktgen

        return pktgen(rest)
    if tool == "bridge":
        from .apps.bridge import main as bridge

        return bridge(rest)
    if tool == "interfaces":
        from .windows.interfaces import main as interfaces

        return interfaces(rest)
    if tool == "lb":
        from .apps.lb import main as lb

        return lb(rest)
    if tool == "vale-ctl":
        from .apps.valectl import main as valectl

        return valectl(rest)
    if tool in ("list", "clean"):
        from .errors import NetmapError

        try:
            return _list() if tool == "list" else _clean()
        except NetmapError as e:
            print(f"pynetmap {tool}: {e.strerror or e}", file=sys.stderr)
            return 1
    print(f"pynetmap: unknown tool {tool!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
