"""The snapshot store on disk and its formats: where snapshots live and what each one records.

`store.py` lays out one folder per project and snapshot, with its lock and the set-aside area;
`manifest.py` is what one snapshot holds (manifest.json); `names.py` checks the names that become
folder and checkpoint names; `safefs.py` makes files and folders another local user cannot change
under us; `retention.py` decides what `prune` removes. The bottom wing: it imports no other wing.
"""
