"""Across a reboot: stop stacks at their checkpoint before Docker stops, bring them back when it is back.

`compose-ckpt host shutdown` and `host boot` (run by the host hook that
`host install` writes) are these two functions. The rule that decides whether
a snapshot may be restored after a reboot is shared with the sidecar's
restore on boot: memory must never go back behind files on disk, so only a
clean stop (taken with --stop) after which no container of the service
started again qualifies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from compose_ckpt.const import LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE
from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.requests import RestoreRequest, SnapshotRequest
from compose_ckpt.domain.stack.labels import compose_project_from_labels
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.domain.stack.restore import restore_snapshot
from compose_ckpt.domain.stack.snapshot import default_snapshot_name, take_snapshot
from compose_ckpt.domain.store.manifest import Manifest
from compose_ckpt.domain.store.names import validate_name
from compose_ckpt.domain.store.retention import to_prune
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.errors import CkptError, NotFoundError

# Why a snapshot is not restored after a reboot (also the sidecar's skip reasons).
LIVE_SNAPSHOT, RAN_AFTER = "live-snapshot", "ran-after-snapshot"
SHUTDOWN_PREFIX = "shutdown-"  # snapshots `host shutdown` takes
SHUTDOWN_KEEP = 2  # of those, per project: the newest is the one to restore, one more to fall back on


@dataclass(frozen=True)
class Hazard:
    """Why restoring a snapshot now could put memory behind newer files on disk."""

    reason: str  # LIVE_SNAPSHOT or RAN_AFTER
    message: str


def reboot_hazard(snapshot: Manifest, last_starts: Iterable[tuple[str, datetime | None]]) -> Hazard | None:
    """None when `snapshot` is safe to restore: a clean stop, and no container in `last_starts`
    (name, when it last started) started after it was taken."""
    if snapshot.kind != "clean-stop":
        return Hazard(LIVE_SNAPSHOT, f"newer state on disk than snapshot {snapshot.name}: it was taken live, "
                                     "and the services ran on after it (only a snapshot taken with --stop qualifies)")
    taken = datetime.fromisoformat(snapshot.created.replace("Z", "+00:00"))
    for name, started in sorted(last_starts, key=lambda item: item[0]):
        if started is not None and started > taken:
            return Hazard(RAN_AFTER, f"newer state on disk than snapshot {snapshot.name}: {name} started again "
                                     f"at {started.isoformat(timespec='seconds')}, after the snapshot")
    return None


@dataclass(frozen=True)
class Outcome:
    """What `host shutdown` or `host boot` did with one project (its fields are the `--json` keys)."""

    project: str
    action: str  # snapshot | restored | skipped | failed
    detail: str
    snapshot: str | None = None

    @property
    def failed(self) -> bool:
        return self.action == "failed"


def project_containers(engine: EnginePort, project_name: str) -> list[ContainerInfo]:
    return [c for c in engine.list_containers({LABEL_PROJECT: validate_name(project_name, "project name")})
            if c.labels.get(LABEL_ONEOFF, "False") != "True"]


def shutdown(engine: EnginePort, project_names: Sequence[str], store: SnapshotStore) -> list[Outcome]:
    """Snapshot each running project with --stop (restart policies held back), so nothing starts fresh at boot."""
    return [_guarded(_shutdown_one, engine, project_name, store) for project_name in project_names]


def _shutdown_one(engine: EnginePort, project_name: str, store: SnapshotStore) -> Outcome:
    containers = project_containers(engine, project_name)
    running = [c for c in containers if c.running or c.paused]
    if not running:
        return Outcome(project_name, "skipped", "not running" if containers else "no containers")
    services = tuple(sorted({c.labels[LABEL_SERVICE] for c in running if LABEL_SERVICE in c.labels}))
    stack = Project(compose_project_from_labels(project_name, containers), engine)
    manifest = take_snapshot(stack, store, SnapshotRequest(
        services=services, name=SHUTDOWN_PREFIX + default_snapshot_name(), stop=True))
    store.remove_chosen(project_name, lambda listed: to_prune(
        [m for m in listed if m.name.startswith(SHUTDOWN_PREFIX)], SHUTDOWN_KEEP, None, datetime.now(UTC)))
    return Outcome(project_name, "snapshot", f"stopped at snapshot {manifest.name}: {', '.join(services)}", manifest.name)


def boot(engine: EnginePort, project_names: Sequence[str], store: SnapshotStore) -> list[Outcome]:
    """Restore each project from its latest complete snapshot when that cannot roll memory back over newer
    files (see `reboot_hazard`); leave the others to Docker, saying why."""
    return [_guarded(_boot_one, engine, project_name, store) for project_name in project_names]


def _boot_one(engine: EnginePort, project_name: str, store: SnapshotStore) -> Outcome:
    containers = project_containers(engine, project_name)
    running = [c.name for c in containers if not c.exited]
    if running:
        return Outcome(project_name, "skipped", f"already running: {', '.join(sorted(running))}")
    try:
        latest = store.latest_complete(project_name)
    except NotFoundError:
        return Outcome(project_name, "skipped", "no complete snapshot")
    held = {r.container_name for r in latest.containers}
    hazard = reboot_hazard(latest, [(c.name, c.last_started) for c in containers if c.name in held])
    if hazard is not None:
        return Outcome(project_name, "skipped", hazard.message, latest.name)
    result = restore_snapshot(engine, project_name, store, RestoreRequest(snapshot=latest.name))
    return Outcome(project_name, "restored", f"{len(result.containers)} containers from snapshot {latest.name}", latest.name)


def _guarded(run: Callable[[EnginePort, str, SnapshotStore], Outcome], engine: EnginePort, project_name: str,
             store: SnapshotStore) -> Outcome:
    """One project's failure is reported and the others go on: a host shutting down waits for no one."""
    try:
        return run(engine, project_name, store)
    except CkptError as exc:
        return Outcome(project_name, "failed", "; ".join([exc.message, *exc.details, *([exc.hint] if exc.hint else [])]))
