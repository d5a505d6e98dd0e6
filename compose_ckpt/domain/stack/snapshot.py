"""Taking a consistent snapshot of a stack, and putting the stack back when that fails.

Consistency: every selected container is paused (cgroup freezer) before the
first dump and stays frozen until the last one is done, so no service can see
another move on in between. Dumps run with leave-running while frozen, and
the containers are resumed afterwards.

Each dump is written straight into the store by the daemon's own runtime where
the engine can (see engine/runtime.py: a local engine with runc), else by the
Docker API into the daemon's folder and copied into the store after the window;
each container's record says which (`dump_path`). A full dump either way: no
pre-copy rounds (they need the kernel's dirty-memory tracking; see `doctor`).

With `stop`, each container's restart policy is held back first: recorded in
the manifest, then set to `no`, so neither the end of the dump nor a reboot
lets Docker start the container fresh over its checkpoint (Docker starts
`always` containers when the daemon starts, even after a manual stop). Then
every container is dumped with exit (CRIU ends it). `restore` puts each
policy back once its container runs restored; a failed snapshot puts them
back in its rollback, a killed one in `recover_interrupted`. The store keeps
them too, per container, until they are back (see held_policies.py): a stack
started without `restore` gets them back from the next command.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from compose_ckpt.const import (
    CHECKPOINT_PREFIX,
    LABEL_CONTAINER_NUMBER,
    LABEL_CRIU_OPTIONS,
    LABEL_SERVICE,
)
from compose_ckpt.domain.ports import DumpWatcher, EnginePort
from compose_ckpt.domain.requests import SnapshotRequest
from compose_ckpt.domain.stack.containers import start_order
from compose_ckpt.domain.stack.dump_diagnostics import peers_outside, unix_socket_ends
from compose_ckpt.domain.stack.filesystem import FilesystemCapture, remove_files, remove_stale_precopies
from compose_ckpt.domain.stack.held_policies import HeldPolicy, held_policies, hold, put_back_on_running, release
from compose_ckpt.domain.stack.holders import NetworkForm, network_form, refuse_stale_joins, refuse_unrestorable
from compose_ckpt.domain.stack.parallel import ProgressCallback, ProgressEvent, describe_failures, run_parallel
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.domain.stack.recovery import recover_interrupted
from compose_ckpt.domain.stack.remedies import TCP_REMEDY, UNIX_SOCKET_REMEDY, remedies_for
from compose_ckpt.domain.stack.timing import Phases
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, ManifestError, SnapshotStatus, now_iso
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import NO_RESTART, ContainerInfo, CriuOptions, DumpPath
from compose_ckpt.engine.specs import joined_container
from compose_ckpt.engine.types import DumpProgress
from compose_ckpt.errors import CkptError, SnapshotFailed, UnsafePathError, UsageError


def default_snapshot_name() -> str:
    """Sortable by time, to the millisecond."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]


def take_snapshot(project: Project, store: SnapshotStore, request: SnapshotRequest, *,
                  progress: ProgressCallback = lambda name, phase: None, phases: Phases | None = None,
                  watcher: DumpWatcher | None = None) -> Manifest:
    """`phases`: the caller's timings so far (the CLI's start-up), continued here and kept in the manifest."""
    if request.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    name = request.name or default_snapshot_name()
    services = project.select(request.services)
    phases = phases or Phases()
    began = time.monotonic()
    with store.locked(project.name):
        recover_interrupted(project.engine, project.name, store)
        remove_stale_precopies(store, project.name, "snapshot")  # under the lock: no other snapshot makes one
        if store.exists(project.name, name):
            _take_over_failed(store, project.name, name)
        put_back_on_running(project.engine, store, project.name, progress=progress)  # before the policies are read
        resolved, skipped = project.running_containers(services)
        for service, reason in skipped.items():
            progress(service, f"skipped: {reason}")
        refuse_unrestorable(project.engine, [(e.service, c.name, c.attrs) for e in resolved for c in e.containers],
                            "snapshot")
        refuse_stale_joins(project.engine, [(e.service, c) for e in resolved for c in e.containers], "snapshot")
        phases.add("resolve", time.monotonic() - began)
        run = _SnapshotRun(project, store, name, [s for s in services if s not in skipped],
                           [(e.service, c) for e in resolved for c in e.containers], request, progress, phases,
                           watcher)
        run.manifest.skipped = skipped
        return run.execute()


# Docker's interval between health probes when the healthcheck sets none (moby daemon/health.go).
DEFAULT_PROBE_INTERVAL_SECONDS = 30.0


def unhealthy_after_resume(manifest: Manifest) -> list[tuple[str, float]]:
    """The containers a live snapshot leaves `unhealthy` in Docker's eyes, with the seconds until their next probe.

    Docker marks a container unhealthy when it is paused (moby container/health.go, CloseMonitorChannel) and
    probes it again only one interval after the unpause; no API call resets the status or runs a probe (only a
    start does). A snapshot --stop ends them anyway, and a restore starts them over at `starting`."""
    if manifest.stopped:
        return []
    found = []
    for record in manifest.containers:
        healthcheck = (record.inspect.get("Config") or {}).get("Healthcheck") or {}
        test, interval = healthcheck.get("Test") or [], healthcheck.get("Interval") or 0  # nanoseconds
        if test and test[0] != "NONE":
            found.append((record.container_name, interval / 1e9 if interval else DEFAULT_PROBE_INTERVAL_SECONDS))
    return found


def _take_over_failed(store: SnapshotStore, project_name: str, name: str) -> None:
    """A retry may reuse the name of a snapshot that failed: it holds no checkpoint, only its error, and is
    removed (under the project's lock). Any other one keeps its name: a complete one, an invalid one (its
    files cannot be trusted: `rm` looks at it, never a snapshot), and an incomplete one whose checkpoints
    `recover` may still need."""
    try:
        status = store.load(project_name, name).status
    except (ManifestError, UnsafePathError):
        status = SnapshotStatus.INVALID
    if status is SnapshotStatus.FAILED:
        store.remove(project_name, name)
        return
    hint = {
        SnapshotStatus.INCOMPLETE: "It is incomplete: its command was killed and the containers it left could not "
                                   "all be put back yet, so its checkpoints are kept. Run `compose-ckpt recover`; "
                                   "once it is settled (failed), the name can be reused.",
        SnapshotStatus.INVALID: "Its files cannot be trusted (`compose-ckpt ls` says why); remove it with "
                                "`compose-ckpt rm` or choose another --name.",
    }.get(status, "Choose another --name, or remove the old one with `compose-ckpt rm`.")
    raise UsageError(f"snapshot {name!r} of project {project_name} already exists ({status.value})", hint=hint)


def engine_facts(engine: EnginePort) -> dict[str, str]:
    """What a manifest records of the engine a snapshot was taken on (compared with a target's)."""
    info = engine.info()
    facts = {"docker": info.server_version, "api": info.api_version, "kernel": info.kernel_version,
             "architecture": info.architecture, "containerd": info.containerd_version, "runc": info.runc_version}
    facts["criu"] = engine.criu_version() or ""  # "" when not known here
    return facts


class _SnapshotRun:
    """One snapshot attempt: holds what has been done so that a failure can undo exactly that."""

    def __init__(self, project: Project, store: SnapshotStore, name: str, services: list[str],
                 members: list[tuple[str, ContainerInfo]], request: SnapshotRequest,
                 progress: ProgressCallback, phases: Phases, watcher: DumpWatcher | None) -> None:
        self.project = project
        self.watcher = watcher
        self.engine: EnginePort = project.engine
        self.store = store
        self.request = request
        self.progress = progress
        self.phases = phases
        self.members = {container.id: (service, container) for service, container in members}
        self.checkpoint = f"{CHECKPOINT_PREFIX}{name}"
        self.paused: set[str] = set()
        self.dumped: set[str] = set()  # their checkpoint is in the daemon's folder (the Docker API path)
        self.direct: set[str] = set()  # dumped straight into the store by the daemon's runtime
        self.stopped: set[str] = set()  # ended by their dump
        self.held: set[str] = set()  # restart policy set to `no` (the manifest records the old one)
        self.held_before = held_policies(store, project.name)  # by earlier snapshots, not put back yet
        self.manifest = Manifest(
            name=name, project=project.name, created=now_iso(), status=SnapshotStatus.INCOMPLETE,
            stopped=request.stop, compose_files=[str(p) for p in project.compose.config_files],
            compose_hash=project.compose.config_hash(), services=services,
            dependencies=project.dependencies(),
        )
        self.files = FilesystemCapture(self.engine, store, self.manifest, {c.id: c for _, c in members},
                                       layers=not request.ignore_rootfs, volumes=request.with_volumes)

    def execute(self) -> Manifest:
        started = time.monotonic()
        with self.phases.timed("record"):
            self.manifest.engine = engine_facts(self.engine)
            self.manifest.networks, self.manifest.volumes = self._record_networks_and_volumes()
            self.manifest.ipam_given = sorted({n["Name"] for n in self.manifest.networks} & self.project.compose.ipam_given)
            self.manifest.containers = [self._record(service, c) for service, c in self.members.values()]
            self.files.describe()
            self.store.write(self.manifest)  # `incomplete` until the end: a killed run is never restorable
            self.store.save_compose_files(self.project.name, self.manifest.name,
                                          zip(self.project.compose.config_files, self.project.compose.file_contents))
        try:
            if self.watcher:
                with self.phases.timed("prepare target"):
                    self.watcher.recorded(self.manifest)
            if self.request.with_volumes and self.request.precopy:
                with self.phases.timed("pre-copy volumes"):  # while the stack runs: see domain/stack/filesystem.py
                    self.files.precopy_volumes(self.request.parallel, self.progress)
            if self.request.stop:
                with self.phases.timed("hold policies"):
                    hold(self.store, self.project.name, [
                        HeldPolicy(r.container_id, r.container_name, r.held_policy, self.manifest.name)
                        for r in self.manifest.containers if r.held_policy])
                    self._each([r.container_id for r in self.manifest.containers if r.held_policy],
                               "holding restart policy", self._hold_restart_policy)
            self.manifest.freeze_seconds = self._freeze_dump_release()
            with self.phases.timed("save"):
                self._move_checkpoints_to_store()
                self.files.store_precopies(self.request.parallel, self.progress)
                self.files.fingerprint_volumes()
        except BaseException as exc:
            self.files.discard()
            self._roll_back()
            left = self._not_running_again()
            self.manifest.error = str(exc)
            self.manifest.phases = self.phases.seconds
            if left:
                # Not all back: stay `incomplete`, checkpoints kept, so `recover` finishes the job.
                self._report_left(exc, left)
            else:
                self.manifest.status = SnapshotStatus.FAILED
                shutil.rmtree(self.store.snapshot_dir(self.project.name, self.manifest.name) / "checkpoints",
                              ignore_errors=True)
                remove_files(self.store, self.project.name, self.manifest.name)
                if isinstance(exc, CkptError):
                    exc.message += "; every service was left running as before"
            self.store.write(self.manifest)
            raise
        self.manifest.total_seconds = round(time.monotonic() - started, 3)
        self.manifest.phases = self.phases.seconds
        self.manifest.status = SnapshotStatus.COMPLETE
        self.store.write(self.manifest)
        return self.manifest

    def _record(self, service: str, container: ContainerInfo) -> ContainerRecord:
        try:
            CriuOptions.from_words(container.labels.get(LABEL_CRIU_OPTIONS, ""))
        except ValueError as exc:
            raise UsageError(f"service {service}: label {LABEL_CRIU_OPTIONS}: {exc}") from None
        fingerprint = self.engine.fingerprint(container)
        policy = container.restart_policy
        if not policy.restarts and container.id in self.held_before:
            policy = self.held_before[container.id].policy  # still held back by an earlier snapshot: not `no`
        return ContainerRecord(
            service=service, container_id=container.id, container_name=container.name,
            number=int(container.labels.get(LABEL_CONTAINER_NUMBER, "1") or 1),
            image=container.image, image_id=container.image_id, checkpoint=self.checkpoint,
            fingerprint=fingerprint.as_text() if fingerprint else None, inspect=container.attrs,
            holder=holder.attrs if (holder := self._holder_of(container)) else None,
            restart_policy=policy.as_text() if self.request.stop and policy.restarts else None,
        )

    def _holder_of(self, container: ContainerInfo) -> ContainerInfo | None:
        """The network holder an adopted container joins (its inspect document is recorded to recreate it)."""
        if network_form(container.attrs) is not NetworkForm.ADOPTED:
            return None
        holder = self.engine.inspect(joined_container(container.network_mode) or "")
        if holder is None or not holder.running:
            raise SnapshotFailed(f"the network holder of {container.name} is not running",
                                 hint=f"Adopt the service again: `compose-ckpt adopt {container.labels.get(LABEL_SERVICE, '')}`.")
        return holder

    def _record_networks_and_volumes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What a restore needs to recreate around a removed container."""
        networks: set[str] = set()
        volumes: set[str] = set()
        for _, container in self.members.values():
            holder = self._holder_of(container)  # an adopted container's networks are its holder's
            for attached in (container, *([holder] if holder else [])):
                networks.update(n for n in attached.network_names if n not in ("bridge", "host", "none"))
            volumes.update(container.volume_names)
        return ([self.engine.inspect_network(n) for n in sorted(networks)],
                [self.engine.inspect_volume(v) for v in sorted(volumes)])

    # --- the frozen window -------------------------------------------------------

    def _freeze_dump_release(self) -> float:
        ids = list(self.members)
        frozen_at = time.monotonic()
        with self.phases.timed("pause"):
            self._each(ids, "pausing", self._pause)
        with self.phases.timed("dump"):
            self._each(ids, "dumping", self._dump)
        with self.phases.timed("copy files"):
            self._copy_files(ids)  # still frozen, or (--stop) ended by the dump: the files agree with the memory
        if not self.request.stop:
            with self.phases.timed("resume"):
                self._each(ids, "resuming", self._unpause)
        frozen = round(time.monotonic() - frozen_at, 3)
        if self.request.stop:
            with self.phases.timed("stop"):
                self._each(ids, "waiting for exit", lambda cid: self.engine.wait_exited(cid, timeout=60))
        return frozen

    def _copy_files(self, ids: list[str]) -> None:
        if self.files.layers:
            self._each(ids, "copying layer", lambda container_id: self.files.capture_layer(container_id, self.progress))
        failures = self.files.capture_volumes(self.request.parallel, self.progress)
        if failures:
            raise _phase_failure("copying volume", failures)

    def _pause(self, container_id: str) -> None:
        self.engine.pause(container_id)
        self.paused.add(container_id)

    def _hold_restart_policy(self, container_id: str) -> None:
        self.held.add(container_id)  # before the call: a call that fails half-way is undone too
        self.engine.set_restart_policy(container_id, NO_RESTART)

    def _put_policy_back(self, container_id: str) -> None:
        policy = self._record_for(container_id).held_policy
        assert policy is not None  # only containers with a held policy are in self.held
        self.engine.set_restart_policy(container_id, policy)
        self.held.discard(container_id)

    def _dump(self, container_id: str) -> None:
        record = self._record_for(container_id)
        began = time.monotonic()

        estimate = self.engine.memory_estimate(self.members[container_id][1])

        def written(done: int) -> None:
            self.progress(record.container_name, ProgressEvent("dumping", done, estimate, estimated=True))

        into = self.store.new_checkpoint_dir(self.project.name, self.manifest.name, record.container_name)
        dump = DumpProgress()
        if self.watcher:
            self.watcher.dump_started(record, into, estimate, dump)
        try:
            result = self.engine.checkpoint_create(container_id, self.checkpoint, leave_running=not self.request.stop,
                                                   into=into, options=self._criu_options(container_id), on_bytes=written)
        except BaseException:
            dump.end(ok=False)
            raise
        dump.end(ok=result.path is DumpPath.RUNTIME)  # the API path leaves its files in the daemon's folder
        if result.path is DumpPath.RUNTIME:
            self.direct.add(container_id)
            written(result.size)  # the final count: the display's last line of the phase shows it
        else:
            self.dumped.add(container_id)
            into.rmdir()  # the files are the daemon's until they are saved after the window
        if self.request.stop:
            self.stopped.add(container_id)
            self.paused.discard(container_id)
        record.dump_seconds = round(time.monotonic() - began, 3)
        record.dump_path, record.dump_fallback, record.size = result.path.value, result.fallback, result.size

    def _criu_options(self, container_id: str) -> CriuOptions:
        """The service's own CRIU options (label compose-ckpt.criu-options); checked when the snapshot began."""
        return CriuOptions.from_words(self.members[container_id][1].labels.get(LABEL_CRIU_OPTIONS, ""))

    def _unpause(self, container_id: str) -> None:
        self.engine.unpause(container_id)
        self.paused.discard(container_id)

    def _each(self, ids: list[str], phase: str, call: Callable[[str], object]) -> None:
        """Run `call` on every container in parallel; one failure fails the phase, naming all that failed."""

        def step(container_id: str) -> object:
            self.progress(self.members[container_id][1].name, phase)
            return call(container_id)

        outcome = run_parallel(ids, step, self.request.parallel)
        if outcome.failures:
            failure = _phase_failure(phase, {self.members[cid][1].name: exc for cid, exc in outcome.failures.items()})
            if TCP_REMEDY in (failure.hint or ""):
                failure.details += peers_outside(self.engine, self.members)
            if UNIX_SOCKET_REMEDY in (failure.hint or ""):
                failure.details += unix_socket_ends(self.engine, self.members, failure.details)
            raise failure

    # --- after the window ------------------------------------------------------

    def _move_checkpoints_to_store(self) -> None:
        """Copy each checkpoint the Docker API made into the store (hard links where possible), then drop
        Docker's copy. Those the runtime dumped are there already."""

        def move(container_id: str) -> None:
            record = self._record_for(container_id)
            target = self.store.new_checkpoint_dir(self.project.name, self.manifest.name, record.container_name)
            record.size = self.engine.copy_checkpoint_out(container_id, self.checkpoint, target)

        self._each([cid for cid in self.members if cid not in self.direct], "saving", move)
        # The store now holds every file, so the snapshot is good whatever happens next: Docker's
        # copies are dropped best effort (a leftover one only takes disk space, in Docker's folder).
        run_parallel(list(self.dumped), self._delete_checkpoint, self.request.parallel)
        self.dumped.clear()

    def _record_for(self, container_id: str) -> ContainerRecord:
        return next(r for r in self.manifest.containers if r.container_id == container_id)

    def _roll_back(self) -> None:
        """Leave every container as it was before: running, with its state. Best effort, all of it.

        One its dump ended that cannot be started again keeps its state for `recover`: the checkpoint in
        the daemon's folder when that is the only copy (the store's, when the runtime wrote it there), and
        its held policy (`always` back on it would let Docker start it fresh over that state)."""
        stopped = {self.members[cid][1].name: cid for cid in self.stopped}
        order = start_order(self.manifest, {name: self.members[cid][1].attrs for name, cid in stopped.items()})
        # dependencies first, each at its address: their connections come back
        stuck = {stopped[name] for name in order if not self._quietly(self._resume_stopped, stopped[name])}
        for container_id in list(self.paused):
            self._quietly(self.engine.unpause, container_id)
        for container_id in list(self.dumped - (stuck - self.direct)):
            self._quietly(self._delete_checkpoint, container_id)
        held = self.held - stuck
        for container_id in held:
            self._quietly(self._put_policy_back, container_id)
        with contextlib.suppress(CkptError):
            release(self.store, self.project.name, held - self.held)

    def _not_running_again(self) -> dict[str, str]:
        """After the rollback, looked up rather than assumed: container name -> state, for each one
        that is not running (`unknown` when the daemon cannot say)."""
        left: dict[str, str] = {}
        for _, container in self.members.values():
            try:
                now = self.engine.inspect(container.id)
            except CkptError:
                left[container.name] = "unknown (the Docker daemon does not answer)"
                continue
            if now is None or not now.running:
                left[container.name] = now.status if now else "removed"
        return left

    def _report_left(self, failure: BaseException, left: dict[str, str]) -> None:
        states = [f"{name}: {state}" for name, state in sorted(left.items())]
        if isinstance(failure, CkptError):
            running = len(self.members) - len(left)
            failure.message += (f"; {running} of {len(self.members)} containers are running again, "
                                f"not: {', '.join(sorted(left))}")
            failure.details = [*failure.details, *states]
            failure.hint = ("Once the Docker daemon answers, `compose-ckpt recover` puts back what it can (from the "
                            "checkpoints this snapshot kept) and says what is lost.")
        self.manifest.error = f"{self.manifest.error}; left: {'; '.join(states)}"

    def _delete_checkpoint(self, container_id: str) -> None:
        self.engine.checkpoint_delete(container_id, self.checkpoint)

    def _resume_stopped(self, container_id: str) -> None:
        """A container that ended after its dump: bring it back from that very checkpoint (one the runtime
        wrote into the store is placed in the daemon's folder for that, and removed from there after)."""
        self.engine.wait_exited(container_id, timeout=60)
        if container_id in self.direct:
            record = self._record_for(container_id)
            self.engine.place_checkpoint(container_id, self.checkpoint, self.store.checkpoint_dir(
                self.project.name, self.manifest.name, record.container_name))
            self.dumped.add(container_id)  # deleted from the daemon's folder by the rest of the rollback
        self.engine.start_from_checkpoint(container_id, self.checkpoint)

    @staticmethod
    def _quietly(action: Callable[[str], object], container_id: str) -> bool:
        """Whether `action` succeeded; rollback goes on with the others, the original failure is what gets reported."""
        try:
            action(container_id)
        except CkptError:
            return False
        return True


def _phase_failure(phase: str, failures: dict[str, Exception]) -> SnapshotFailed:
    failed = ", ".join(sorted(failures))
    return SnapshotFailed(f"snapshot failed while {phase} {failed}", details=describe_failures(failures),
                          hint=remedies_for(failures))
