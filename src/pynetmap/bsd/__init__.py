"""BSD-family capture buffers (macOS, FreeBSD ``/dev/bpf``; Npcap's Packet.dll uses the same).

:mod:`.bpfbuf` parses a buffer of ``bpf_hdr`` records in NumPy passes.
"""
