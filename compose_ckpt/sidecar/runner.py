"""What the sidecar does to the engine and the store: discover jobs, run one, restore at boot.

The same domain calls as the CLI: `take_snapshot` for a run, `to_prune` (through
`Retention`) over the job's own snapshots, `restore_snapshot` at boot.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from compose_ckpt.compose import ProjectOptions
from compose_ckpt.const import LABEL_PROJECT
from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.requests import RestoreRequest, SnapshotRequest
from compose_ckpt.domain.stack.adopt import drift
from compose_ckpt.domain.stack.labels import compose_project_from_labels
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.domain.stack.restore import RestoreResult, restore_snapshot
from compose_ckpt.domain.stack.snapshot import take_snapshot
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import CkptError, NotFoundError
from compose_ckpt.sidecar.boot import BootRestore
from compose_ckpt.sidecar.policy import (
    ENABLE,
    ContainerPolicy,
    LabelRules,
    Problem,
    StackJob,
    manual_job,
    parse_container,
    plan,
)
from compose_ckpt.sidecar.pusher import Pusher


@dataclass(frozen=True)
class Discovery:
    policies: list[ContainerPolicy]
    jobs: list[StackJob]
    problems: list[Problem]

    def job(self, project_name: str, name: str | None) -> StackJob:
        """The project's job `name`, or with None a manual snapshot of its labelled services."""
        if name is None:
            return manual_job(project_name, self.policies)
        for job in self.jobs:
            if job.key == (project_name, name):
                return job
        known = ", ".join(job.job for job in self.jobs if job.project_name == project_name) or "none"
        raise NotFoundError(f"project {project_name} has no job {name} (jobs: {known})")


def discover(engine: EnginePort, rules: LabelRules) -> Discovery:
    """Read every container labelled `<prefix>.enable` and plan the stack jobs."""
    policies: list[ContainerPolicy] = []
    problems: list[Problem] = []
    for container in engine.containers_with_label(rules.label(ENABLE)):
        policy, found = parse_container(container, rules)
        problems += found
        if policy is not None:
            policies.append(policy)
    jobs, conflicts = plan(policies, rules)
    return Discovery(policies, jobs, problems + conflicts)


@dataclass(frozen=True)
class RunResult:
    snapshot: str
    services: tuple[str, ...]
    pruned: list[str]
    seconds: float
    push_queued: bool = False
    drift: str | None = None  # the project's adoption no longer matches its compose files (adopt.drift)


class Runner:
    def __init__(self, engine: EnginePort, store: SnapshotStore, pusher: Pusher | None = None) -> None:
        self.engine = engine
        self.store = store
        self.pusher = pusher
        self._guard = threading.Lock()
        # Two jobs of one project due together take turns here rather than fail on the store lock's timeout.
        self._projects: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def _project_lock(self, project_name: str) -> threading.Lock:
        with self._guard:
            return self._projects[project_name]

    def run(self, job: StackJob) -> RunResult:
        """One consistent snapshot of the job's services, then the job's retention; a push is only queued."""
        with self._project_lock(job.project_name):
            started = time.monotonic()
            containers = self.engine.list_containers({LABEL_PROJECT: job.project_name})
            project = Project(compose_project_from_labels(job.project_name, containers), self.engine)
            request = SnapshotRequest(services=job.services, name=job.snapshot_name(datetime.now(UTC)),
                                      stop=not job.leave_running, with_volumes=job.with_volumes)
            manifest = take_snapshot(project, self.store, request)
            drifted = self._adoption_drift(project)
            pruned = self._prune(job)
            push_queued = job.push is not None and self.pusher is not None
            if push_queued:
                assert self.pusher is not None
                self.pusher.submit(job, manifest.name)
            return RunResult(manifest.name, job.services, pruned, round(time.monotonic() - started, 3), push_queued,
                             drifted)

    def _adoption_drift(self, project: Project) -> str | None:
        """What of the project's adoption no longer matches its compose files (adopt.drift), when its folder is
        readable here; None when not known (no compose plugin here, say)."""
        from compose_ckpt.compose.docker_compose import ComposeCli

        folder = project.compose.working_dir
        try:
            return drift(project, lambda: ComposeCli(ProjectOptions(cwd=folder), os.environ, folder, self.engine.base_url))
        except (CkptError, OSError):
            return None

    def _prune(self, job: StackJob) -> list[str]:
        retention = job.retention
        if retention is None:
            return []
        _, doomed = self.store.remove_chosen(job.project_name,
                                             lambda listed: retention.select(listed, job.prefix, datetime.now(UTC)))
        return [manifest.name for manifest in doomed]

    def restore(self, plan: BootRestore) -> RestoreResult:
        """Restore the plan's services from its snapshot, dependencies first."""
        with self._project_lock(plan.project_name):
            return restore_snapshot(self.engine, plan.project_name, self.store,
                                    RestoreRequest(snapshot=plan.snapshot, services=plan.services))
