"""Small helpers the ring tests share (a module, as ``netns``, so tests import it)."""

from __future__ import annotations

import pynetmap


def drain(port: pynetmap.Port) -> list[tuple[int, bytes, int]]:
    """(rx ring, frame, flags) of everything waiting, released."""
    port.rxsync()
    out = []
    for r in port.rx_rings:
        while not r.empty():
            i = r.cur
            out.append((r.ringid, r.read(i), int(r.slot_flags[i])))
            r.advance(1)
    port.rxsync()
    return out
