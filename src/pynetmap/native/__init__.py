"""Native netmap (``/dev/netmap``): the kernel registers ports and runs their rings.

:mod:`.abi` holds the control structs and ioctl numbers, :mod:`.adapter`
the port type.  Imported only when a port is opened this way.
"""
