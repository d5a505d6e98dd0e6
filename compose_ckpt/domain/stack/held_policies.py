"""Restart policies a `snapshot --stop` held back, kept per container until they are on it again.

The manifest records each held-back policy, but only `restore` read it there: a stack started with
`docker compose up -d` instead ran with `no` for good, and the next `snapshot --stop` recorded that. So the
store also keeps them per project, keyed by container id, in `projects/<project>/.held-policies.json`
(private, like the rest of the store):

    {"<container id>": {"container": "<name>", "policy": "always", "snapshot": "<name>"}, ...}

An entry is written before the policy is set to `no`, and dropped once the policy is back: by `restore`,
by a failed snapshot's rollback, by `recover`, or by `put_back_on_running`, which every command that
looks at the project (snapshot, restore, recover, ps; the sidecar through its snapshots) runs under the
project's lock: a container found running has its policy put back. A container that is gone drops its
entry (a recreated one gets its policy from the snapshot's manifest, or from compose).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.stack.parallel import ProgressCallback
from compose_ckpt.domain.store.manifest import ManifestError
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import RestartPolicy
from compose_ckpt.errors import CkptError, ConflictError

FILE = ".held-policies.json"
MAX_BYTES = 4 * 1024**2


@dataclass(frozen=True)
class HeldPolicy:
    container_id: str
    container: str
    policy: RestartPolicy
    snapshot: str


def held_policies(store: SnapshotStore, project_name: str) -> dict[str, HeldPolicy]:
    """The policies held back in this project, by container id."""
    data = store.read_project_file(project_name, FILE, MAX_BYTES)
    if data is None:
        return {}
    try:
        document = json.loads(data)
        return {container_id: HeldPolicy(container_id, str(entry["container"]), RestartPolicy.from_text(entry["policy"]),
                                         str(entry["snapshot"]))
                for container_id, entry in document.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ManifestError(f"the held-back restart policies of project {project_name} cannot be read ({exc})",
                            hint=f"Remove {store.project_dir(project_name) / FILE}, then put each policy back with "
                                 "`docker update --restart POLICY CONTAINER`.") from exc


def hold(store: SnapshotStore, project_name: str, entries: Iterable[HeldPolicy]) -> None:
    """Keep these policies; called before each is set to `no`, so none is ever known only to Docker."""
    held = held_policies(store, project_name)
    held.update((entry.container_id, entry) for entry in entries)
    _write(store, project_name, held)


def release(store: SnapshotStore, project_name: str, container_ids: Iterable[str]) -> None:
    """Forget these containers' policies: they are back on them (or the containers are gone)."""
    held = held_policies(store, project_name)
    dropped = [held.pop(container_id) for container_id in set(container_ids) if container_id in held]
    if dropped:
        _write(store, project_name, held)


def put_back_on_running(engine: EnginePort, store: SnapshotStore, project_name: str, *,
                        progress: ProgressCallback = lambda name, phase: None) -> list[str]:
    """Put each held-back policy back on its container when it runs again without `restore` (started by
    `docker compose up`, `docker start`): the caller holds the project's lock. One line per policy put back."""
    lines = []
    done = []
    for entry in held_policies(store, project_name).values():
        container = engine.inspect(entry.container_id)
        if container is None:
            done.append(entry.container_id)
            continue
        if not (container.running or container.paused):
            continue  # stopped at its checkpoint: `restore` puts the policy back once it runs restored
        if not container.restart_policy.restarts:  # else someone set one since: theirs stays
            try:
                engine.set_restart_policy(container.id, entry.policy)
            except CkptError:
                continue  # kept: the next command tries again
            progress(container.name, f"restart policy {entry.policy.as_text()} put back (started without restore)")
            lines.append(f"{container.name}: restart policy {entry.policy.as_text()}, held back by snapshot "
                         f"{entry.snapshot}, put back (it runs again, started without `compose-ckpt restore`)")
        done.append(entry.container_id)
    release(store, project_name, done)
    return lines


def still_held(engine: EnginePort, store: SnapshotStore, project_name: str) -> dict[str, HeldPolicy]:
    """For commands that only look (ps): put back what can be, unless another command holds the project's
    lock (it puts them back itself); then the policies still held back, by container id."""
    if held_policies(store, project_name):
        with contextlib.suppress(ConflictError), store.locked(project_name, wait=0):
            put_back_on_running(engine, store, project_name)
    return held_policies(store, project_name)


def _write(store: SnapshotStore, project_name: str, held: dict[str, HeldPolicy]) -> None:
    document = {entry.container_id: {"container": entry.container, "policy": entry.policy.as_text(),
                                     "snapshot": entry.snapshot} for entry in held.values()}
    store.write_project_file(project_name, FILE, json.dumps(document, indent=2).encode())
