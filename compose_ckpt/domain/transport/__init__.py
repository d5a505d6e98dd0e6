"""Moving snapshots between stores and hosts: archives, registries, migration.

`transfer.py` exports and imports a snapshot as one archive (`archive.py`, the stream format);
`push.py` and `pull.py` move one to and from an OCI registry (`artifact.py`, its OCI manifest);
`migrate.py` and `live_migrate.py` move a running stack to another engine; `hostaccess.py` reviews what
a snapshot made elsewhere would let its containers do to this host before it is stored or created.
The top wing: built on the host, stack and store wings, imported by none of them.
"""
