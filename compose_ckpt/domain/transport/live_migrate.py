"""`migrate --live --to HOST`: move a running stack with a downtime that does not grow with its volumes.

The order, and what is sent to the target when:
1. Before the downtime, while the stack serves: the images the target lacks (`docker save` into `docker
   load`), and each named volume, pre-copied on this host (`VolumePreCopies`, domain/stack/filesystem.py) and
   streamed from that copy into a volume created on the target. Memory is not pre-copied: that needs
   the kernel's dirty-memory tracking (CRIU pre-dumps); where it is missing, as on the machine this was
   built on, that is detected and said, never faked; where it is present it is not used yet either.
2. The downtime, from the first container frozen on the source to the last one running on the target:
   a snapshot with --stop and without volume copies (freeze, dump, each container ends at its checkpoint,
   the checkpoints go to the local store). Its containers are made on the target just before the freeze,
   and their page images sent there while CRIU writes them (`PagesAhead`, early_pages.py). Then only the
   volume entries changed since their pre-copy (the rule of domain/stack/tree_changes.py) go to the
   target's volumes; then the stack is restored on the target in dependency order and verified
   (restore_snapshot, which places the rest of each checkpoint through the target's API). A volume that
   could not be pre-copied (a remote source engine) is copied whole here.
3. The source containers are removed (with --keep-source: kept stopped).

A failure before the target runs: what was created on the target (its containers, the volumes this run
created) is removed, and the stack is put back on the source with its state, from the snapshot when the
freeze had begun (as `migrate` does). The downtime and the bytes sent before and during it are returned
and recorded in the snapshot's phases (`migrate pre-copy`, `migrate downtime`).

A killed move cannot clean up after itself, so each step is noted first in the project's `.moving`
record (the store's): the target, the volumes and containers created there, the snapshot's name and which
of its containers the target had before. The next `migrate --live` to that target finds the record and, before
anything else, puts the source back (a freeze left behind through `recover_interrupted`; containers the
snapshot ended, restored from it), removes what the killed move created on the target and its
pre-copies, and only then starts its own move.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from compose_ckpt.const import LABEL_NETWORK_HOLDER
from compose_ckpt.domain.host.compat import check_target
from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.requests import MigrateRequest, RestoreRequest, SnapshotRequest
from compose_ckpt.domain.stack.containers import connected_containers
from compose_ckpt.domain.stack.filesystem import Tally, VolumePreCopies, named_volumes, remove_stale_precopies
from compose_ckpt.domain.stack.parallel import ProgressCallback, bytes_reporter, counted
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.domain.stack.recovery import recover_interrupted
from compose_ckpt.domain.stack.restore import RestoredContainer, restore_snapshot
from compose_ckpt.domain.stack.snapshot import default_snapshot_name, engine_facts, take_snapshot
from compose_ckpt.domain.store.manifest import Manifest, SnapshotStatus
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.early_pages import PagesAhead
from compose_ckpt.domain.transport.migrate import (
    Clock,
    MigrateFailed,
    check_bind_mounts,
    copy_images,
    finish_on_source,
    names_with_holders,
    raise_after_putting_back,
    remove_from_target,
    restart_source,
)
from compose_ckpt.errors import CkptError, ConflictError, UsageError

NO_DIRTY_TRACKING = ("skipped: this kernel does not track dirty memory (`criu check --feature mem_dirty_track` "
                     "fails), so memory is copied only during the downtime")


@dataclass
class LiveMigrateResult:
    snapshot: Manifest
    restored: list[RestoredContainer]
    downtime: float  # seconds from the first container frozen on the source to the last one running on the target
    bytes_before: int  # sent while the stack ran: images, volume pre-copies
    bytes_during: int  # sent during the downtime: checkpoints, layer copies, volume changes
    memory_precopy: str  # what happened to memory pre-copy, and why
    seconds: dict[str, float] = field(default_factory=dict)  # pre-copy, freeze and dump, volume changes, restore
    warnings: list[str] = field(default_factory=list)
    volume_entries: int = 0  # volume entries sent again during the downtime
    pages_while_dumping: int = 0  # bytes of page images sent to the target while CRIU wrote them
    source_removed: bool = False


def migrate_live(project: Project, store: SnapshotStore, target: EnginePort, request: MigrateRequest, *,
                 progress: ProgressCallback = lambda name, phase: None) -> LiveMigrateResult:
    if request.snapshot is not None:
        raise UsageError("migrate --live takes its own snapshot while the stack runs: give no SNAPSHOT")
    return _LiveMove(project, store, target, request, progress).execute()


class _LiveMove:
    """One live move: records what it created on the target, so that a failure removes exactly that."""

    def __init__(self, project: Project, store: SnapshotStore, target: EnginePort, request: MigrateRequest,
                 progress: ProgressCallback) -> None:
        self.project = project
        self.source: EnginePort = project.engine
        self.store = store
        self.target = target
        self.request = request
        self.progress = progress
        self.clock = Clock()
        self.seconds: dict[str, float] = {}
        self.created_volumes: list[str] = []
        self.images: dict[str, str] = {}  # volume -> the image of a service mounting it (for helpers)
        self.precopies = VolumePreCopies(self.source, store, project.name, "migrate")
        self.bytes_before = 0
        self.bytes_during = 0
        # Makes the target's containers before the freeze and sends page images as CRIU writes them.
        self.ahead = PagesAhead(target, progress, self._note_created)
        # What a kill would leave behind, kept in the store as it grows (see the module's contract).
        self.journal: dict[str, Any] = {"target": target.base_url, "created_volumes": self.created_volumes,
                                        "created_networks": [], "created_containers": [],
                                        "snapshot": None, "existing_on_target": []}

    def execute(self) -> LiveMigrateResult:
        self._finish_interrupted()
        warnings = check_bind_mounts(self.project, self.store, self.target, self.request)  # nothing stopped yet
        memory = _memory_precopy(self.source)
        self._note()
        try:
            warnings += self._before_downtime()
            self.seconds["pre-copy"] = self.clock.lap()
        except CkptError as exc:
            left = self._undo_before_downtime()
            raise MigrateFailed(f"live migration to {self.target.base_url} failed before the stack was stopped: "
                                f"{exc.message}; the stack runs on the source as before",
                                details=exc.details + left, hint=exc.hint) from exc
        try:
            manifest, frozen_at = self._freeze_and_dump()
        except CkptError as exc:  # the snapshot put the source back itself, and its message says how it ended
            left = self._undo_before_downtime()
            raise MigrateFailed(f"live migration to {self.target.base_url} failed while freezing and dumping: "
                                f"{exc.message}", details=exc.details + left, hint=exc.hint) from exc
        existing_on_target = set(self.journal["existing_on_target"])
        try:
            left = self.ahead.readdress_for_connections(manifest, connected_containers(self.store, manifest),
                                                        self.journal["created_networks"])
            if left:
                raise MigrateFailed("the containers made on the target before the freeze could not be removed",
                                    details=left)
            entries = self._send_volume_changes(manifest)
            self.seconds["volume changes"] = self.clock.lap()
            restored = restore_snapshot(self.target, self.project.name, self.store,
                                        RestoreRequest(snapshot=manifest.name, parallel=self.request.parallel,
                                                       ignore_volumes=True), progress=self.progress)
            downtime = round(time.monotonic() - frozen_at, 3)
            self.seconds["restore"] = self.clock.lap()
        except CkptError as exc:
            self.precopies.discard()
            self.ahead.wait()
            left = remove_from_target(self.target, [n for n in names_with_holders(manifest)
                                                    if n not in existing_on_target], self.created_volumes, self.progress,
                                      self.journal["created_networks"])
            try:
                raise_after_putting_back(exc, self.source, self.target, self.store, manifest,
                                         set(names_with_holders(manifest)), self.request, self.progress)
            finally:
                if left:  # the target keeps something: the next move to it removes that first
                    self._note()
                else:
                    self.store.done_moving(self.project.name)
        self.precopies.discard()
        self.ahead.wait()  # ended already (each restore waited for its container's): says what failed
        self.store.done_moving(self.project.name)  # the target runs the stack: nothing to undo from here on
        manifest = restored.snapshot  # as the restore left it in the store: with how each container came back
        self.bytes_during += sum(r.size + (r.layer.size if r.layer else 0) for r in manifest.containers)
        self._record(manifest, downtime)
        finish_on_source(self.source, manifest, self.request, self.progress)
        return LiveMigrateResult(manifest, restored.containers, downtime, self.bytes_before, self.bytes_during,
                                 memory_precopy=memory, seconds=self.seconds,
                                 warnings=warnings + restored.warnings, volume_entries=entries,
                                 pages_while_dumping=sum(self.ahead.sent.values()),
                                 source_removed=not self.request.keep_source)

    def _undo_before_downtime(self) -> list[str]:
        """Remove what this move created on the target before its restore began (the containers made for the
        early page images, their networks, the volumes); return a line for each thing left there."""
        self.precopies.discard()
        left = remove_from_target(self.target, self.journal["created_containers"], self.created_volumes, self.progress,
                                  self.journal["created_networks"])
        if not left:
            self.store.done_moving(self.project.name)
        return left

    def _note(self) -> None:
        self.store.note_moving(self.project.name, self.journal)

    def _finish_interrupted(self) -> None:
        """Undo what a killed live move of this project left (its `.moving` record), before starting anew."""
        record = self.store.moving(self.project.name)
        if record is None:
            return
        if record.get("target") != self.target.base_url:
            raise ConflictError(
                f"a live migration of {self.project.name} to {record.get('target')} was interrupted",
                hint=f"Run `compose-ckpt migrate --live --to {record.get('target')}` first: it removes what the "
                     "interrupted one left there and puts the stack back on this engine before moving it.")
        self.progress(self.project.name, "undoing an interrupted live migration")
        with self.store.locked(self.project.name):
            recover_interrupted(self.source, self.project.name, self.store)  # a freeze or dump it left
        remove_stale_precopies(self.store, self.project.name, "migrate")
        name = record.get("snapshot")
        manifest = None
        if isinstance(name, str) and self.store.exists(self.project.name, name):
            loaded = self.store.load(self.project.name, name)
            manifest = loaded if loaded.status is SnapshotStatus.COMPLETE else None
        existing = {n for n in record.get("existing_on_target") or [] if isinstance(n, str)}
        containers = [n for n in names_with_holders(manifest) if n not in existing] if manifest else []
        containers += [n for n in record.get("created_containers") or [] if isinstance(n, str) and n not in containers]
        volumes = [v for v in record.get("created_volumes") or [] if isinstance(v, str)]
        networks = [n for n in record.get("created_networks") or [] if isinstance(n, str)]
        left = remove_from_target(self.target, containers, volumes, self.progress, networks)
        if manifest is not None:  # it had stopped the stack: the snapshot brings it back, with its state
            restart_source(self.source, self.store, manifest, self.request, self.progress)
        if left:
            raise MigrateFailed(f"an interrupted live migration left things on {self.target.base_url} that cannot "
                                "be removed now", details=left, hint="Run the command again once the target answers.")
        self.store.done_moving(self.project.name)

    def _before_downtime(self) -> list[str]:
        """Everything that can be sent while the stack serves; returns the target's warnings."""
        resolved, _ = self.project.running_containers(self.project.select(()))
        containers = [c for entry in resolved for c in entry.containers]
        compatibility = check_target(engine_facts(self.source), self.target)
        if compatibility.blockers:
            raise MigrateFailed("the target engine cannot restore this stack: " + "; ".join(compatibility.blockers))
        self.bytes_before += copy_images(self.source, self.target, {(c.image, c.image_id) for c in containers},
                                         self.progress)
        if not self.request.ignore_volumes:
            self.images = {v: c.image_id for c in containers for v in named_volumes(c.attrs)}
        for name in sorted(self.images):
            if not self.target.volume_exists(name):
                self.created_volumes.append(name)
                self._note()  # before it exists: a kill right after creating it still finds it noted
                self.target.create_volume(self.source.inspect_volume(name))
        self.precopies.take(sorted(self.images), self.request.parallel, self.progress)
        for name, precopy in sorted(self.precopies.copies.items()):
            self.progress(name, "sending volume")
            tally = Tally(bytes_reporter(self.progress, name, "sending volume"))
            self.target.trees.replace_volume(name, self.images[name],
                                             counted(self.source.trees.read_folder(precopy.root), tally))
            self.bytes_before += tally.done
        return compatibility.warnings

    def _freeze_and_dump(self) -> tuple[Manifest, float]:
        """Snapshot with --stop, no volume copies; returns it and the moment (monotonic) its freeze began."""
        name = default_snapshot_name()
        self.journal["snapshot"] = name
        self.journal["existing_on_target"] = sorted(self._names_on_target())
        self.journal["created_networks"] = sorted(self._networks_the_target_lacks())  # the restore makes them
        self._note()
        called = time.monotonic()
        try:
            manifest = take_snapshot(self.project, self.store,
                                     SnapshotRequest(name=name, stop=True, parallel=self.request.parallel),
                                     progress=self.progress, watcher=self.ahead)
        except BaseException:
            self.ahead.wait()  # each sending ends with its dump: then nothing writes to the target any more
            raise
        # The page images still on their way: each container's restore waits for its own (the engine's
        # place_checkpoint), while the volume changes and the restore's preparation run.
        before_freeze = 0.0
        for phase, seconds in manifest.phases.items():  # in the order they ran: resolve, record, ..., pause
            if phase == "pause":
                break
            before_freeze += seconds
        self.seconds["freeze and dump"] = self.clock.lap()
        return manifest, called + before_freeze

    def _note_created(self, names: list[str]) -> None:
        self.journal["created_containers"].extend(names)
        self._note()

    def _names_on_target(self) -> set[str]:
        """The stack's container and holder names the target has before the move: never ours to remove."""
        resolved, _ = self.project.running_containers(self.project.select(()))
        names = {c.name for entry in resolved for c in entry.containers}
        names |= {c.labels[LABEL_NETWORK_HOLDER] for entry in resolved for c in entry.containers
                  if LABEL_NETWORK_HOLDER in c.labels}
        return {name for name in names if self.target.inspect(name) is not None}

    def _networks_the_target_lacks(self) -> set[str]:
        resolved, _ = self.project.running_containers(self.project.select(()))
        holders = [self.source.inspect(c.labels[LABEL_NETWORK_HOLDER]) for entry in resolved
                   for c in entry.containers if LABEL_NETWORK_HOLDER in c.labels]
        attached = [c for entry in resolved for c in entry.containers] + [h for h in holders if h is not None]
        names = {n for c in attached for n in c.network_names if n not in ("bridge", "host", "none")}
        return {name for name in names if not self.target.network_exists(name)}

    def _send_volume_changes(self, manifest: Manifest) -> int:
        """The downtime's share of the volumes: what changed since each pre-copy; a volume that could not
        be pre-copied, whole. Returns the entries sent again."""
        entries = 0
        for name in sorted(self.images):
            tally = Tally(bytes_reporter(self.progress, name, "sending volume changes"))
            if name in self.precopies.copies:
                self.progress(name, "sending volume changes")
                changes = self.precopies.changes(name)
                entries += len(changes.changed)
                if not changes.empty:
                    chunks = self.source.trees.read_folder(self.precopies.copies[name].folder, changes.changed)
                    self.target.trees.update_volume(name, self.images[name], changes.removed, counted(chunks, tally))
            else:
                self.progress(name, "sending volume")
                self.target.trees.replace_volume(name, self.images[name],
                                                 counted(self.source.trees.read_volume(name, self.images[name]), tally))
            self.bytes_during += tally.done
        return entries

    def _record(self, manifest: Manifest, downtime: float) -> None:
        """Keep the move's timings in the snapshot it took (`inspect` shows them)."""
        manifest.phases = {**manifest.phases, "migrate pre-copy": self.seconds["pre-copy"],
                           "migrate downtime": downtime}
        with self.store.locked(self.project.name):
            self.store.write(manifest)


def _memory_precopy(engine: EnginePort) -> str:
    tracking = engine.dirty_memory_tracking()
    if tracking is False:
        return NO_DIRTY_TRACKING
    if tracking is None:
        return "skipped: whether the source's kernel tracks dirty memory cannot be checked from here"
    return "skipped: memory pre-copy (CRIU pre-dumps) is not implemented yet; memory is copied during the downtime"
