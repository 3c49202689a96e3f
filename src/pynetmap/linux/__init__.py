"""Linux OS glue for real interfaces: AF_XDP sockets, the XDP program that feeds them,
AF_PACKET TPACKET_V2 rings and interface facts.

Low-level modules with NumPy views over the kernel's rings; the netmap adapters for
``netmap:IFNAME`` are built on top of them.  Nothing here is imported by ``import
pynetmap``; pyroute2 is imported only when an XDP program is attached or queried.
"""
