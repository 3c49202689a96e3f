"""pkt-gen: netmap's traffic generator (spec §6.1-§6.5), same options, same output.

``pkt-gen -f tx -i netmap:p{0`` in one shell, ``pkt-gen -f rx -i netmap:p}0``
in another; ``main(argv)`` runs it from Python.
"""

from .main import main

__all__ = ["main"]
