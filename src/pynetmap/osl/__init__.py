"""The OS layer: everything the core needs from the operating system.

The core is OS-independent; what differs per OS family sits behind these
names, implemented once for POSIX (Linux, macOS, FreeBSD: :mod:`.posix`)
and once for Windows (:mod:`.windows`), chosen here at import.  The rest of
pynetmap imports only from this package, never from an OS module.

- shared memory: ``shm_create``, ``shm_attach``, ``shm_unlink``, ``shm_close``
  -- regions that unrelated processes map, private to the user;
- ``locked(path)``: the cross-process lock around registry transactions;
  ``RangeLock``: many small cross-process locks in one file (switch rings);
- ``process_token``, ``process_alive``: is a peer still there?  A process
  killed with SIGKILL never closes its ports;
- ``user_tag``, ``check_private_dir``: the per-user run-time directory;
- ``Doorbell``, ``ring``: cross-process wake-ups through a waitable socket.
"""

import sys

# The OS modules share one API (``__all__``, checked by tests/test_osl.py).
if sys.platform == "win32":
    from .windows import *  # noqa: F403
else:
    from .posix import *  # noqa: F403

__all__ = [  # noqa: F405 - defined by the star import above
    "Doorbell", "RangeLock", "check_private_dir", "locked", "process_alive", "process_token",
    "ring", "shm_attach", "shm_close", "shm_create", "shm_unlink", "user_tag",
]
