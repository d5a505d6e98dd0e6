"""The sidecar: a daemon that snapshots labelled compose stacks on a schedule.

It is a thin loop over the domain calls the CLI makes (`take_snapshot`,
`restore_snapshot`, `SnapshotStore`, `to_prune`) and writes to the same store.
`policy` reads labels into jobs, `schedule` and `timetable` say when they run,
`runner` runs them, `daemon` wires events, files, HTTP and signals together.
"""
