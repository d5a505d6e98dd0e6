"""The operations on a running compose stack: snapshot, restore, recover, adopt.

`snapshot.py` takes a consistent snapshot (and puts the stack back when that fails), `restore.py` brings a
stack back from one, `recovery.py` undoes what a killed snapshot or restore left behind, `overview.py` is
what `ps` shows of a stack. Around them: the stack as it runs (`project.py`, `labels.py` for a stack known
only from its containers' labels), recreating containers (`containers.py`, `ordering.py`), network holders
(`holders.py`, `adopt.py`, `adoptfile.py`), restart policies held while a snapshot runs
(`held_policies.py`), copies of layers and volumes (`filesystem.py`, `tree_changes.py`), and what every
operation shares: bounded parallel work with progress (`parallel.py`), phase timings (`timing.py`),
remedies read from CRIU's logs (`remedies.py`). Imports the store below it, never the host or transport
wings above.
"""
