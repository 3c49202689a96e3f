"""Windows: Npcap as the NIC engine, and Windows interface names as netmap names.

:mod:`.npcap` (DLLs and the ring-pair engine), :mod:`.sendqueue` (TX
batches as one send queue), :mod:`.names` (friendly names and GUIDs),
:mod:`.interfaces` (the ``pynetmap interfaces`` command).  Imported only
when used, so ``import pynetmap`` loads none of it.
"""
