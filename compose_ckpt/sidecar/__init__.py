"""The sidecar: a daemon that snapshots labelled compose stacks on a schedule.

It is a thin loop over the domain calls the CLI makes (`take_snapshot`,
`restore_snapshot`, `SnapshotStore`, `to_prune`) and writes to the same store.
`policy` reads labels into jobs, `schedule` and `timetable` say when they run,
`runner` runs them (`runs`: each on a thread of its own), `boot` says what to
restore when it starts, `pusher` pushes snapshots to a registry, `daemon` wires
events, files (`config`, `watch`), HTTP and signals together. What it shows:
`http` (`metrics`, `status`), `log`; `cli` is its command, `compose-ckpt-sidecar`.
"""
