"""The domain: what snapshot, restore, migrate and the rest do, over the engine adapter and the store.

Four wings, each importing only the ones below it: `transport/` (export, import, push, pull, migrate:
moving snapshots between stores and hosts) over `host/` (the reboot hook, host setup, doctor, engine
compatibility) over `stack/` (snapshot, restore, recovery, adopt: the operations on a running stack)
over `store/` (the snapshot store, manifests, names, safe files). Beside them, used by all: `ports.py`,
what the domain asks of an engine and of a registry, and `requests.py`, what the front ends ask of the
domain.

Names: a `Project` (stack/project.py) is a compose project bound to an engine; `ComposeProject` (compose/)
is the parsed compose model it wraps; a compose project's name, as a `str`, is `project_name`.
(`Manifest.project` and the `--json` keys keep `project`: they are the documented formats.)
The host is the machine compose-ckpt runs on (the `host/` wing, the `host` commands, host access); a
Docker daemon is an engine, reached at its address (`-H`, `--to`), as a registry is at its own; Docker's
`HostConfig` keeps Docker's name.

Entry points take, in this order: the stack (a `Project`, or an engine and a `project_name`), the
store, any other place involved (a target engine, a registry client), the request; progress
callbacks and timings are keyword-only. Those that work on stored snapshots only (export, import,
push, pull) take the store first.

A name is checked once where it enters: CLI arguments while parsing (or by the request object they
build: `SnapshotRequest`, `RestoreRequest`, `MigrateRequest` in requests.py), manifests (and so archives and
pulled artifacts) when loaded. The store checks every name again where it becomes a path: that is
its guard against a name nothing else checked (a label the sidecar read), not a second opinion.
"""
