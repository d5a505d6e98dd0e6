"""Bringing a stack back from a snapshot, dependencies first, and proving it really was restored."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from compose_ckpt.const import CHECKPOINT_PREFIX, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE
from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.requests import RestoreRequest
from compose_ckpt.domain.stack.containers import (
    address_key,
    check_networks,
    connected_containers,
    ensure_holders,
    implicit_dependencies,
    joining_elsewhere,
    network_subnets,
    recorded_endpoints,
    recorded_image,
    recreate_containers,
    start_order,
)
from compose_ckpt.domain.stack.filesystem import FilesystemRestore
from compose_ckpt.domain.stack.held_policies import put_back_on_running, release
from compose_ckpt.domain.stack.holders import refuse_unrestorable
from compose_ckpt.domain.stack.ordering import dependency_levels
from compose_ckpt.domain.stack.parallel import (
    ProgressCallback,
    ProgressEvent,
    bytes_reporter,
    describe_failures,
    run_parallel,
)
from compose_ckpt.domain.stack.recovery import put_back_set_aside, recover_interrupted
from compose_ckpt.domain.stack.remedies import remedies_for
from compose_ckpt.domain.stack.timing import Phases
from compose_ckpt.domain.store.manifest import (
    ContainerRecord,
    Manifest,
    RestoreRecord,
    SnapshotStatus,
    now_iso,
    parse_time,
)
from compose_ckpt.domain.store.notes import SetAside
from compose_ckpt.domain.store.safety import new_safety_dir, remove_safety_checkpoints
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import ContainerInfo, DumpPath, ProcessFingerprint
from compose_ckpt.errors import CkptError, ConflictError, NotFoundError, RestoreFailed, UsageError

# The verdict on a container restored onto another image than the one it was checkpointed on.
OTHER_IMAGE = "running, on another image"
# CRIU's words when a socket's address is not the container's any more.
_REBIND_FAILED = "Can't bind inet socket back"
# A restored process that cannot carry on (a socket or file that did not come back) dies at once:
# by this long after the last start it shows.
SETTLE_SECONDS = 0.3
PLACING_PAGES = "placing pages"  # the phase of copying page images into a container's root, with its bytes
SAVING = "saving current state"  # the phase of a safety checkpoint, with its bytes when dumped into the store


@dataclass(frozen=True)
class RestoredContainer:
    service: str
    container: str
    recreated: bool
    verified: str  # "memory layout" when the fingerprint matched, else "running" (fingerprint unreadable)
    seconds: dict[str, float]  # copy_in, restore, clean_up, verify: this container's share of the work
    pages: str  # how its page images reached CRIU: a PagesRoute value
    page_bytes: int  # bytes of page images placed in its root (0 when they went through containerd)


@dataclass(frozen=True)
class NotInSnapshot:
    """A container of a restored service that the snapshot does not hold (a replica scaled up since): left as is."""
    service: str
    container: str
    state: str


@dataclass(frozen=True)
class RestoreResult:
    snapshot: Manifest
    containers: list[RestoredContainer]
    phases: dict[str, float]  # prepare, restore, verify (after the caller's own, such as startup)
    warnings: list[str] = field(default_factory=list)
    not_in_snapshot: list[NotInSnapshot] = field(default_factory=list)


def restore_snapshot(engine: EnginePort, project_name: str, store: SnapshotStore, request: RestoreRequest, *,
                     progress: ProgressCallback = lambda name, phase: None, phases: Phases | None = None) -> RestoreResult:
    phases = phases or Phases()
    began = time.monotonic()
    with store.locked(project_name):
        recover_interrupted(engine, project_name, store)
        put_back_on_running(engine, store, project_name, progress=progress)
        manifest = store.load(project_name, request.snapshot) if request.snapshot else store.latest_complete(project_name)
        if manifest.status is not SnapshotStatus.COMPLETE:
            raise ConflictError(f"snapshot {manifest.name} is {manifest.status.value} and cannot be restored",
                                hint="`compose-ckpt ls` shows which snapshots are complete.")
        return _Restore(engine, store, manifest, request, progress, phases, began).execute()


class _Restore:
    def __init__(self, engine: EnginePort, store: SnapshotStore, manifest: Manifest, request: RestoreRequest,
                 progress: ProgressCallback, phases: Phases, began: float) -> None:
        self.engine = engine
        self.store = store
        self.manifest = manifest
        self.request = request
        self.progress = progress
        self.phases = phases
        self.began = began  # the command's start: preparing counts from there, lock and recovery included
        self.services = self._select(request.services)
        self.records = [r for r in manifest.containers if r.service in self.services]
        # Whose checkpoints hold TCP connections: they need their recorded addresses back.
        self.connected = connected_containers(store, manifest) & {r.container_name for r in self.records}
        self.targets: dict[str, ContainerInfo] = {}  # container name -> the container to restore into
        self.recreated: set[str] = set()
        self.answers: list[float] = []  # when the engine answered each restore: its processes run from then on
        self.attempt = str(time.time_ns() // 1_000_000)
        self.safety = f"{CHECKPOINT_PREFIX}before-restore-{self.attempt}"
        self.set_aside: dict[str, str] = {}  # container name -> id: killed by --force, its safety checkpoint taken
        self.locked: list[int] = []  # pids of the new network holders kept from answering with resets
        self.unlocked: list[str] = []  # why the connections through a new holder were lost
        self.files = FilesystemRestore(engine, store, manifest, self.records, ignore_volumes=request.ignore_volumes,
                                       parallel=request.parallel, progress=progress)

    def _select(self, requested: Sequence[str]) -> list[str]:
        skipped = [name for name in requested if name in self.manifest.skipped]
        if skipped:
            raise UsageError(f"snapshot {self.manifest.name} holds no state of {', '.join(skipped)}: "
                             + "; ".join(f"{name} was skipped ({self.manifest.skipped[name]})" for name in skipped),
                             hint="Restore leaves skipped services alone; start them with `docker compose up`.")
        unknown = [name for name in requested if name not in self.manifest.services]
        if unknown:
            raise UsageError(f"snapshot {self.manifest.name} holds no service {', '.join(unknown)} "
                             f"(it holds: {', '.join(self.manifest.services)})")
        return list(dict.fromkeys(requested)) or list(self.manifest.services)

    def execute(self) -> RestoreResult:
        try:
            self._prepare_containers()
            warnings = self.files.put_back(self.targets, self.recreated, keep_before=set(self.set_aside))
            self.phases.add("prepare", time.monotonic() - self.began)
            self.store.note_restoring(self.manifest.project, [target.id for target in self.targets.values()])
            restored: list[RestoredContainer] = []
            with self.phases.timed("restore"):
                for level in dependency_levels(implicit_dependencies(self.manifest), self.services):
                    names = [r.container_name for r in self.records if r.service in level]
                    parallel = self.request.parallel
                    if self.connected.intersection(names):
                        names, parallel = sorted(names, key=self._recorded_address), 1
                    outcome = run_parallel(names, self._restore_one, parallel)
                    restored.extend(outcome.results[name] for name in names if name in outcome.results)
                    if outcome.failures:
                        raise self._failure(outcome.failures, restored)
            with self.phases.timed("verify"):
                self._check_still_running(restored)
            self._put_policies_back(restored)
        except BaseException as exc:
            self._remove_placed_pages()
            if self.set_aside:
                self.files.undo_layers()  # the safety checkpoints need the files they had open
                self._put_back_set_aside(exc)
            raise
        finally:
            self.files.discard()
            for pid in self.locked:
                with contextlib.suppress(CkptError):
                    self.engine.release_resets(pid)
        self.store.done_restoring(self.manifest.project)  # each restore removed its own page images
        self._record(restored)
        self.store.note_set_aside(self.manifest.project, [
            entry for entry in self.store.set_aside(self.manifest.project)
            if entry.container_id not in {target.id for target in self.targets.values()}])  # restored over: moot
        self._drop_safety_checkpoints(list(self.set_aside.values()))
        warnings += [f"{c.container} was restored onto another image than the one it was checkpointed on "
                     "(--allow-other-image): old memory over new files" for c in restored if c.verified == OTHER_IMAGE]
        warnings += self.unlocked
        return RestoreResult(self.manifest, restored, self.phases.seconds, warnings, self._not_in_snapshot())

    def _lock_new_holders(self) -> None:
        """Keep the network holders started after the snapshot (recreated after `docker compose down`, or restarted)
        from answering with resets while their containers' TCP connections are restored, as CRIU's lock keeps the
        namespace they were dumped in: a new namespace, made before its containers are restored, would answer
        their peers (restored first) with resets and the connections would be lost. Without holders a
        namespace is made by the restore itself. Where that cannot be done (an engine on another host), the
        restore warns that those connections are lost."""
        taken = parse_time(self.manifest.created)
        joined: dict[str, list[str]] = {}
        for record in self.records:
            if record.holder and record.container_name in self.connected:
                joined.setdefault(str(record.holder["Name"]).lstrip("/"), []).append(record.container_name)
        for name, containers in joined.items():
            holder = self.engine.inspect(name)
            started = holder.last_started if holder else None
            if holder is None or started is None or started <= taken or not holder.pid:
                continue
            if self.engine.hold_resets(holder.pid):
                self.locked.append(holder.pid)
            else:
                self.unlocked.append(
                    f"the TCP connections of {', '.join(containers)} were lost (reset): their network holder {name} "
                    "was started after the snapshot (recreated or restarted), a new namespace that answered their "
                    "peers before they were restored, as this engine's host cannot be reached to stop it; they must "
                    "reconnect (docs/limits.md)")

    def _not_in_snapshot(self) -> list[NotInSnapshot]:
        """The restored services' containers the snapshot does not hold (replicas scaled up after it): the
        restore leaves them as they are, running their own fresh state, and the caller says so."""
        held = {record.container_name for record in self.records}
        listed = self.engine.list_containers({LABEL_PROJECT: self.manifest.project, LABEL_ONEOFF: "False"})
        return [NotInSnapshot(service, container.name, container.status)
                for container in sorted(listed, key=lambda c: c.name)
                if (service := container.labels.get(LABEL_SERVICE, "")) in self.services and container.name not in held]

    def _record(self, restored: list[RestoredContainer]) -> None:
        """Note in the snapshot how each container's pages came back and how fast (`inspect` shows it)."""
        at = now_iso()
        for container in restored:
            record = next(r for r in self.records if r.container_name == container.container)
            record.last_restore = RestoreRecord(at=at, pages=container.pages, page_bytes=container.page_bytes,
                                                place_seconds=round(container.seconds.get("copy_in", 0.0), 3),
                                                restore_seconds=round(container.seconds.get("restore", 0.0), 3))
        self.store.write(self.manifest)

    def _remove_placed_pages(self) -> None:
        """After a failure, whatever stopped a restore before it removed the page images it placed (an error
        of the engine, an interrupt): removed here, else left noted for the next command's recovery."""
        try:
            for target in self.targets.values():
                with contextlib.suppress(NotFoundError):
                    self.engine.remove_placed_pages(target.id)
        except CkptError:
            return
        self.store.done_restoring(self.manifest.project)

    def _recorded_address(self, container_name: str) -> tuple[int, int]:
        """Sort key: the container's IPv4 address at snapshot time (see `address_key`).

        A connection comes back only at the address it was made from. Docker gives each starting container
        the lowest free address of its network, so a level that holds connections is started one by one in
        the order of the recorded addresses: each container gets its own back (as compose starts services
        in dependency order, the lower addresses belong to the levels already restored)."""
        return address_key(next(r for r in self.records if r.container_name == container_name).inspect)

    def _check_still_running(self, restored: list[RestoredContainer]) -> None:
        """A process that dies right after its restore shows it within a moment: look once, for all. The moment
        counts from the engine's last answer, so the clean-up after a big restore (removing its page images)
        is part of it."""
        time.sleep(max(0.0, max(self.answers, default=0.0) + SETTLE_SECONDS - time.monotonic()))
        failures: dict[str, Exception] = {}
        for container in restored:
            try:
                _require_running(container.container, self.engine.inspect(self.targets[container.container].id))
            except RestoreFailed as exc:
                failures[container.container] = exc
        if failures:
            raise self._failure(failures, [c for c in restored if c.container not in failures])

    def _put_policies_back(self, verified: list[RestoredContainer]) -> None:
        """The restart policies a --stop snapshot held back, once every container runs restored.

        Not before: a policy on a container that died after its restore would have Docker start it fresh."""
        back = []
        for container in verified:
            record = next(r for r in self.records if r.container_name == container.container)
            if record.held_policy is not None:
                self.progress(record.container_name, f"restart policy {record.held_policy.as_text()} put back")
                self.engine.set_restart_policy(self.targets[record.container_name].id, record.held_policy)
                back += [record.container_id, self.targets[record.container_name].id]
        release(self.store, self.manifest.project, back)

    def _prepare_containers(self) -> None:
        """Find each container; refuse running ones unless forced; recreate missing ones (holders first)."""
        refuse_unrestorable(self.engine, [(r.service, r.container_name, r.inspect) for r in self.records], "restore")
        check_networks(self.engine, self.manifest, self.connected)  # refuses before anything is killed
        in_the_way: list[ContainerInfo] = []
        for record in self.records:
            current = self.engine.inspect(record.container_name)
            if current is None:
                continue
            if current.image_id != record.image_id and not self.request.allow_other_image:
                raise ConflictError(
                    f"container {current.name} now runs image {current.image_id[:19]}, "
                    f"the snapshot was taken from {record.image_id[:19]}",
                    hint=f"Remove it (`docker rm -f {current.name}`) and restore will recreate it as it was, or pass "
                         "--allow-other-image to restore into it as it is (old memory over new files).",
                )
            if current.exited and self.engine.clear_stale_runtime(current.id):
                # A daemon killed during an earlier restore of it left runc's state and a mount behind, and
                # restoring into it keeps failing: a new container (same name and configuration) has none.
                self.progress(current.name, "removing (runtime state left by a killed daemon)")
                self.engine.remove(current.id)
                continue
            if not current.exited:
                in_the_way.append(current)
            self.targets[record.container_name] = current
        for record in self.records:  # before anything is killed: the images to recreate from are here
            if record.container_name not in self.targets:
                recorded_image(self.engine, record, self.request.allow_other_image)
        if in_the_way and not self.request.force:
            names = ", ".join(f"{c.name} ({c.status})" for c in in_the_way)
            raise ConflictError(f"these containers are running: {names}",
                                hint="Stop them first, or pass --force to kill them and restore over their state.")
        if in_the_way and self.request.safety_checkpoint:
            self._take_safety_checkpoints(in_the_way)
        names_by_id = {c.id: c.name for c in in_the_way}
        if self.set_aside:  # noted before any is killed: a `recover` after a kill puts them back
            before = {c.name: c.attrs for c in in_the_way}  # the addresses they have now
            ours = [SetAside(name, self.set_aside[name], self.safety) for name in start_order(self.manifest, before)]
            earlier = [e for e in self.store.set_aside(self.manifest.project)
                       if e.container_id not in self.set_aside.values()]
            self.store.note_set_aside(self.manifest.project, earlier + ours)
            self.store.done_freezing(self.manifest.project)  # from here the set-aside note covers them
        run_parallel(list(names_by_id), lambda cid: self._discard_running(cid, names_by_id[cid]),
                     self.request.parallel).raise_first()
        for stale in ensure_holders(self.engine, self.manifest, self.records, self.progress, self.connected):
            del self.targets[stale]
        kept = {name: target for name, target in self.targets.items() if name not in self.set_aside}
        for stale in joining_elsewhere(self.engine, self.manifest, self.records, kept):
            self.progress(stale, "removing (it joins a container since replaced; recreated joined to the new one)")
            self.engine.remove(self.targets.pop(stale).id)
        missing = [r for r in self.records if r.container_name not in self.targets]
        created = recreate_containers(self.engine, self.manifest, missing, self.progress, self.connected,
                                      allow_other_image=self.request.allow_other_image)
        self.targets.update(created)
        self.recreated.update(created)
        self._lock_new_holders()

    def _take_safety_checkpoints(self, running: list[ContainerInfo]) -> None:
        """Freeze every container in the way and checkpoint it (leave-running): the way back if the
        restore fails. One that cannot be checkpointed stops the restore before anything is killed."""
        by_id = {container.id: container for container in running}
        # A kill from here until they are set aside would leave them frozen: `recover` thaws what is noted.
        self.store.note_freezing(self.manifest.project, self.safety, time.time(),
                                 [c.id for c in running if c.running])

        def save(container_id: str) -> None:
            container = by_id[container_id]
            self.progress(container.name, SAVING)
            if container.running:
                self.engine.pause(container_id)
            into = new_safety_dir(self.store, self.manifest.project, self.safety, container.name)
            written = bytes_reporter(self.progress, container.name, SAVING, self.engine.memory_estimate(container),
                                     estimated=True)
            # No CRIU options of the service's label: the way back must restore with the host's own options.
            result = self.engine.checkpoint_create(container_id, self.safety, leave_running=True, into=into,
                                                   on_bytes=written)
            if result.path is DumpPath.RUNTIME:
                written(result.size)  # the final count: the display's last line of the phase shows it
            else:
                into.rmdir()  # the daemon keeps it, as checkpoint `self.safety` of the container
            self.set_aside[container.name] = container_id

        outcome = run_parallel(list(by_id), save, self.request.parallel)
        if not outcome.failures:
            return
        for container in running:  # nothing killed yet: thaw what was frozen, drop what was saved
            if container.running:
                with contextlib.suppress(CkptError):
                    self.engine.unpause(container.id)
        self.store.done_freezing(self.manifest.project)
        self._drop_safety_checkpoints(list(self.set_aside.values()))
        self.set_aside.clear()
        failures = {by_id[cid].name: exc for cid, exc in outcome.failures.items()}
        details = describe_failures(failures)
        raise RestoreFailed(
            f"cannot save the current state of {', '.join(sorted(failures))} before replacing it; "
            "nothing was changed, every service runs as before",
            details=details,
            hint=(remedies_for(failures) or "") + " To discard the current state instead, "
                 "pass --no-safety-checkpoint with --force.",
        )

    def _discard_running(self, container_id: str, name: str) -> None:
        """--force: kill rather than stop, so no shutdown hook writes state newer than the snapshot
        (a frozen container is killed before it runs again: nothing happens after its safety checkpoint)."""
        self.progress(name, "stopping")
        self.engine.kill(container_id)
        self.engine.wait_exited(container_id, timeout=60)

    def _put_back_set_aside(self, failure: BaseException) -> None:
        """The restore failed: bring back what ran before it, from the safety checkpoints, dependencies first and
        each at its address of before (see `put_back_set_aside`), and say so."""
        lines, left = put_back_set_aside(self.engine, self.store, self.manifest.project, self.progress,
                                         only=set(self.set_aside.values()))
        if isinstance(failure, CkptError):
            failure.details = [*failure.details, *lines]
            if left:
                failure.hint = (failure.hint or "") + (" `compose-ckpt recover` tries again to put back "
                                                       f"{', '.join(left)} with its state from before the restore.")

    def _drop_safety_checkpoints(self, container_ids: list[str]) -> None:
        """Those the daemon keeps, and every one of this attempt in the store (a dump cut short's files too)."""
        for container_id in container_ids:
            with contextlib.suppress(CkptError):
                self.engine.checkpoint_delete(container_id, self.safety)
        remove_safety_checkpoints(self.store, self.manifest.project, self.safety)

    def _restore_one(self, container_name: str) -> RestoredContainer:
        record = next(r for r in self.records if r.container_name == container_name)
        target = self.targets[record.container_name]
        seconds = Phases()
        self.progress(record.container_name, "restoring")
        source = self.store.checkpoint_dir(self.manifest.project, self.manifest.name, record.container_name)
        # A name of its own per attempt: the daemon uploads the folder into containerd under an ingest
        # reference made from its path, and a daemon killed during an earlier upload leaves that ingest
        # half written; the same path again would resume it and fail with `invalid tar header`.
        placed = f"{record.checkpoint}.{self.attempt}"
        with seconds.timed("copy_in"):
            placement = self.engine.place_checkpoint(target.id, placed, source, lambda done, total: self.progress(
                record.container_name, ProgressEvent(PLACING_PAGES, done, total)))
        if placement.why_containerd:
            self.progress(record.container_name, f"page images through containerd: {placement.why_containerd}")
        if placement.fitted:
            self.progress(record.container_name,
                          f"mounts restored private, as this host has them: {', '.join(sorted(placement.fitted))}")
        began = time.monotonic()
        try:
            answered = self.engine.start_from_checkpoint(target.id, placed)
        finally:
            # The store keeps the snapshot; Docker's copy is only in the way. Best effort: a failure
            # here (the daemon gone) must not hide the restore's own error.
            with contextlib.suppress(CkptError):
                self.engine.checkpoint_delete(target.id, placed)
        self.answers.append(answered)
        seconds.add("restore", answered - began)
        seconds.add("clean_up", time.monotonic() - answered)  # page images out of its root, Docker's copy gone
        with seconds.timed("verify"):
            verified = self._verify(record, target)
        self.progress(record.container_name, "restored")
        return RestoredContainer(record.service, record.container_name, record.container_name in self.recreated,
                                 verified, seconds.seconds, placement.pages.value, placement.page_bytes)

    def _verify(self, record: ContainerRecord, target: ContainerInfo) -> str:
        """Fail loudly when the container is not running, or was started fresh instead of restored. The memory
        layout says nothing about the files: on another image (--allow-other-image) it is not a proof."""
        now = _require_running(record.container_name, self.engine.inspect(target.id))
        fingerprint = self.engine.fingerprint(now)
        if record.fingerprint is None or fingerprint is None:
            return "running" if now.image_id == record.image_id else OTHER_IMAGE
        if fingerprint != ProcessFingerprint.from_text(record.fingerprint):
            raise RestoreFailed(f"{record.container_name} was started fresh, not restored: its memory layout "
                                "differs from the checkpoint's", hint="Its in-memory state is lost; restore again with --force.")
        return "memory layout" if now.image_id == record.image_id else OTHER_IMAGE

    def _failure(self, failures: dict[str, Exception], restored: list[RestoredContainer]) -> RestoreFailed:
        done = ", ".join(r.container for r in restored) or "none"
        if len(failures) == 1:
            (name, exc), = failures.items()
            message, details = f"restore of {name} failed: {exc}", list(getattr(exc, "details", []))
        else:
            message, details = f"restore of {', '.join(sorted(failures))} failed", describe_failures(failures)
        hint = next((exc.hint for exc in failures.values() if isinstance(exc, CkptError) and exc.hint), None)
        hint = hint or remedies_for(failures)
        if _REBIND_FAILED in " ".join([message, *details]):
            details += self._address_notes(failures)
        details.append(f"restored before the failure: {done}; services that depend on them were not started")
        return RestoreFailed(message, details=details, hint=hint)

    def _address_notes(self, names: Iterable[str]) -> list[str]:
        """Why containers whose TCP sockets could not be bound back did not get their recorded addresses:
        their network has other subnets now (recreated since), or another container holds the address."""
        notes = []
        try:
            networks = {network["Name"]: network for network in self.engine.list_networks()}
            for name in sorted(names):
                record = next(r for r in self.records if r.container_name == name)
                for network, endpoint in recorded_endpoints(record).items():
                    address = endpoint.get("IPAddress")
                    if not address or network not in networks:
                        continue
                    subnets = network_subnets(networks[network])
                    if not any(ipaddress.ip_address(address) in subnet for subnet in subnets):
                        notes.append(f"{name} had address {address} on network {network}, which has subnet "
                                     f"{', '.join(map(str, subnets))} now: the network was recreated since the snapshot")
                        continue
                    attached = (self.engine.inspect_network(network).get("Containers") or {}).values()
                    holder = next((e.get("Name") for e in attached
                                   if str(e.get("IPv4Address") or "").split("/")[0] == address), None)
                    if holder and holder != name:
                        notes.append(f"{name} had address {address} on network {network}: container {holder} holds it now")
        except (CkptError, ValueError):
            pass  # what could be read is said; the failure itself is reported either way
        return notes


def _require_running(name: str, container: ContainerInfo | None) -> ContainerInfo:
    if container is not None and container.running:
        return container
    state = f"{container.status} (exit code {container.exit_code})" if container else "gone"
    raise RestoreFailed(f"{name} is {state} right after its restore", hint=f"See `docker logs {name}`.")
