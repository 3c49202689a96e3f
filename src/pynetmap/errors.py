"""Errors raised by pynetmap.

netmap reports failures as errno values from ioctl(); we raise
:class:`NetmapError`, an :class:`OSError` carrying the same errno, so code
can test ``e.errno == errno.EBUSY`` as it would in C.  Bad port names raise
:class:`ValueError` (see :mod:`pynetmap.names`).
"""


class NetmapError(OSError):
    """A netmap operation failed; ``errno`` is what netmap's kernel returns."""


class PeerGoneError(NetmapError):
    """The other end of a shared-memory port died or closed while in use."""
