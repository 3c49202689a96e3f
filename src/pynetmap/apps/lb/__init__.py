"""lb: netmap's load balancer (spec §6.7).

``lb -i netmap:eth0 -p 4`` reads the input port in batches, hashes each
packet's 4-tuple symmetrically (both directions of a connection alike) and
moves it, zero copy, into one of 4 pipes ``netmap:eth0{0..3``; workers
open ``netmap:eth0}k``.  ``main(argv)`` runs it from Python.
"""

from .main import main

__all__ = ["main"]
