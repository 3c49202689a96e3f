"""Port types.  Each adapter plays netmap's kernel for one kind of port:
what a txsync or rxsync of its rings does, and how it is set up and torn
down.  The ring protocol itself lives in :mod:`pynetmap.port`.
"""
