"""Moving a running stack to another Docker engine, with the source kept safe until the target runs.

Both engines are reachable from here and the store is local, so nothing is
written to an intermediate archive: images stream from `docker save` on the
source straight into `docker load` on the target, and the restore on the
target places each checkpoint from the store through the target's API.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NoReturn

from compose_ckpt.domain.host.compat import check_target
from compose_ckpt.domain.ports import EnginePort, RegistryPort
from compose_ckpt.domain.requests import MigrateRequest, RestoreRequest, SnapshotRequest
from compose_ckpt.domain.stack.containers import recorded_holders
from compose_ckpt.domain.stack.filesystem import Tally, bind_mounts
from compose_ckpt.domain.stack.parallel import ProgressCallback, bytes_reporter, counted
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.domain.stack.restore import RestoredContainer, restore_snapshot
from compose_ckpt.domain.stack.snapshot import take_snapshot
from compose_ckpt.domain.store.manifest import Manifest, SnapshotStatus
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.push import PushResult, push_snapshot
from compose_ckpt.domain.transport.transfer import saved_as
from compose_ckpt.errors import CkptError, ConflictError, EngineError


class MigrateFailed(CkptError):
    """The target could not take the stack; the source was put back."""


@dataclass
class MigrateResult:
    snapshot: Manifest
    restored: list[RestoredContainer]
    seconds: dict[str, float] = field(default_factory=dict)  # snapshot, transfer, restore
    warnings: list[str] = field(default_factory=list)
    source_removed: bool = False


def migrate(project: Project, store: SnapshotStore, target: EnginePort, request: MigrateRequest, *,
            progress: ProgressCallback = lambda name, phase: None) -> MigrateResult:
    source = project.engine
    clock = Clock()
    bind_warnings = check_bind_mounts(project, store, target, request)  # before anything is stopped
    manifest = _snapshot_to_move(project, store, request, progress)
    result = MigrateResult(snapshot=manifest, restored=[])
    result.seconds["snapshot"] = clock.lap()
    existing_on_target = containers_on(target, manifest)
    try:
        compatibility = check_target(manifest.engine, target)
        if compatibility.blockers:
            raise MigrateFailed("the target engine cannot restore this snapshot: " + "; ".join(compatibility.blockers))
        result.warnings = compatibility.warnings + bind_warnings
        copy_images(source, target, {(r.image, r.image_id) for r in manifest.containers}, progress)
        result.seconds["transfer"] = clock.lap()
        restored = restore_snapshot(target, project.name, store,
                                    RestoreRequest(snapshot=manifest.name, parallel=request.parallel,
                                                   ignore_volumes=request.ignore_volumes), progress=progress)
        result.restored = restored.containers
        result.seconds["restore"] = clock.lap()
    except CkptError as exc:
        raise_after_putting_back(exc, source, target, store, manifest, existing_on_target, request, progress)
    finish_on_source(source, manifest, request, progress)
    result.source_removed = not request.keep_source
    return result


def containers_on(target: EnginePort, manifest: Manifest) -> set[str]:
    """The snapshot's container (and holder) names the target already has: not ours to remove on failure."""
    return {name for name in names_with_holders(manifest) if target.inspect(name)}


def raise_after_putting_back(exc: CkptError, source: EnginePort, target: EnginePort, store: SnapshotStore,
                             manifest: Manifest, existing_on_target: set[str], request: MigrateRequest,
                             progress: ProgressCallback, created_volumes: Collection[str] = ()) -> NoReturn:
    """The move failed after the source was stopped: put the stack back on the source, then raise."""
    try:
        left = _put_source_back(source, target, store, manifest, existing_on_target, request, progress,
                                created_volumes)
    except CkptError as undo:
        raise MigrateFailed(
            f"migration to {target.base_url} failed: {exc.message}; putting the stack back on the source "
            f"failed too: {undo.message}",
            details=exc.details + undo.details,
            hint=f"Snapshot {manifest.name} holds the stack's state: `compose-ckpt restore {manifest.name}`.",
        ) from exc
    raise MigrateFailed(
        f"migration to {target.base_url} failed: {exc.message}; the stack runs on the source again",
        details=exc.details + left, hint=exc.hint,
    ) from exc


def finish_on_source(source: EnginePort, manifest: Manifest, request: MigrateRequest,
                     progress: ProgressCallback) -> None:
    """The target runs: remove the source containers (or, with --keep-source, make sure they are stopped)."""
    for record in manifest.containers:
        progress(record.container_name, "kept stopped on the source" if request.keep_source else "removing from the source")
        if request.keep_source:
            _ensure_stopped(source, record.container_name)
        elif (found := source.inspect(record.container_name)) is not None:
            source.remove(found.id)
    if not request.keep_source:  # the holders after the containers that joined them
        for holder in recorded_holders(manifest.containers):
            if (found := source.inspect(holder)) is not None:
                source.remove(found.id)


@dataclass
class MigrateViaResult:
    snapshot: Manifest
    pushed: PushResult
    seconds: dict[str, float] = field(default_factory=dict)  # snapshot, transfer


def migrate_via_registry(project: Project, store: SnapshotStore, client: RegistryPort, request: MigrateRequest, *,
                         progress: ProgressCallback = lambda name, phase: None) -> MigrateViaResult:
    """The source half of a move through a registry: snapshot (with --stop), push, leave the source stopped.

    No engine connection to the target is needed; the target pulls and restores. The source containers
    are kept, stopped, since nothing here can verify the target. If the push fails, the stack is
    restored on the source and the error raised."""
    clock = Clock()
    manifest = _snapshot_to_move(project, store, request, progress)
    seconds = {"snapshot": clock.lap()}
    tag = client.reference.tag or manifest.name
    try:
        pushed = push_snapshot(store, project.name, manifest.name, client, [tag], progress=progress)
    except CkptError as exc:
        try:
            restart_source(project.engine, store, manifest, request, progress)
        except CkptError as undo:
            raise MigrateFailed(
                f"push to {client.reference} failed: {exc.message}; restoring the stack on the source failed too: "
                f"{undo.message}", details=exc.details + undo.details,
                hint=f"Snapshot {manifest.name} holds the stack's state: `compose-ckpt restore {manifest.name}`.",
            ) from exc
        raise MigrateFailed(f"push to {client.reference} failed: {exc.message}; the stack runs on the source again",
                            details=exc.details, hint=exc.hint) from exc
    seconds["transfer"] = clock.lap()
    for record in manifest.containers:
        progress(record.container_name, "kept stopped on the source")
        _ensure_stopped(project.engine, record.container_name)
    return MigrateViaResult(manifest, pushed, seconds)


def check_bind_mounts(project: Project, store: SnapshotStore, target: EnginePort, request: MigrateRequest) -> list[str]:
    """Bind mounts are never copied: refuse to start when the target lacks a host path the stack mounts."""
    if request.snapshot is None:
        containers = [c for entry in project.resolve(project.select(())) for c in entry.containers]
        binds = [b for c in containers for b in bind_mounts(c.name, c.attrs)]
    else:
        binds = store.load(project.name, request.snapshot).binds
    sources = sorted({b.source for b in binds})
    if not sources:
        return []
    found = {path: target.trees.host_path_exists(path) for path in sources}
    missing = [path for path, exists in found.items() if exists is False]
    if missing:
        raise MigrateFailed(
            f"the target engine lacks host paths the stack bind-mounts: {', '.join(missing)}; nothing was stopped",
            hint="Bind mounts are not copied: create these paths (with the content the services expect) on the "
                 "target host first, or use named volumes, which migrate carries.")
    unchecked = [path for path, exists in found.items() if exists is None]
    notes = [f"bind mounts are not copied: the target's own {', '.join(sources)} are used as they are"]
    if unchecked:
        notes.append(f"could not check on the target (it has no image yet): {', '.join(unchecked)}")
    return notes


def _snapshot_to_move(project: Project, store: SnapshotStore, request: MigrateRequest,
                      progress: ProgressCallback) -> Manifest:
    if request.snapshot is None:
        return take_snapshot(project, store, SnapshotRequest(stop=True, parallel=request.parallel,
                                                             with_volumes=not request.ignore_volumes),
                             progress=progress)
    manifest = store.load(project.name, request.snapshot)
    if manifest.status is not SnapshotStatus.COMPLETE:
        raise ConflictError(f"snapshot {manifest.name} is {manifest.status.value} and cannot be migrated")
    return manifest


def copy_images(source: EnginePort, target: EnginePort, images: Collection[tuple[str, str]],
                progress: ProgressCallback) -> int:
    """Stream every image of `images` (reference, id) the target lacks (by id: restore recreates from the very
    image), tag included; return the bytes sent."""
    sent = 0
    for reference, image_id in sorted(images):
        if target.image_id(image_id) is not None:
            continue
        progress(reference, "copying image")
        tally = Tally(bytes_reporter(progress, reference, "copying image"))
        target.load_image(counted(source.save_image(saved_as(source, reference, image_id)), tally))
        sent += tally.done
        if target.image_id(image_id) is None:
            raise EngineError(f"image {reference} on the target is not {image_id[:19]} after loading it")
    return sent


def _put_source_back(source: EnginePort, target: EnginePort, store: SnapshotStore, manifest: Manifest,
                     existing_on_target: set[str], request: MigrateRequest, progress: ProgressCallback,
                     created_volumes: Collection[str] = ()) -> list[str]:
    """Undo the target side, then make sure the stack runs on the source with its state. The target may be
    what failed (its daemon gone): the source is put back whatever happens there; returns what could not
    be removed from the target."""
    left = remove_from_target(target, [n for n in names_with_holders(manifest) if n not in existing_on_target],
                              created_volumes, progress)
    restart_source(source, store, manifest, request, progress)
    return left


def remove_from_target(target: EnginePort, containers: list[str], volumes: Collection[str],
                       progress: ProgressCallback, networks: Collection[str] = ()) -> list[str]:
    """Remove what a failed move created on the target (containers first, then the holders they joined,
    then volumes), best effort; return a line for each thing left there."""
    left: list[str] = []
    for name in containers:
        try:
            if (found := target.inspect(name)) is not None:
                progress(name, "removing from the target")
                target.remove(found.id)
        except CkptError as exc:
            left.append(f"container {name} may remain on the target: {exc.message}")
    for volume in volumes:
        try:
            progress(volume, "removing volume from the target")
            target.remove_volume(volume)
        except CkptError as exc:
            left.append(f"volume {volume} may remain on the target: {exc.message}")
    for network in networks:  # after the containers attached to them
        try:
            progress(network, "removing network from the target")
            target.remove_network(network)
        except CkptError as exc:
            left.append(f"network {network} may remain on the target: {exc.message}")
    return left


def restart_source(source: EnginePort, store: SnapshotStore, manifest: Manifest, request: MigrateRequest,
                    progress: ProgressCallback) -> None:
    """Restore, from the snapshot, the stack's containers that the move left stopped on the source."""
    stopped = [r for r in manifest.containers if (c := source.inspect(r.container_name)) is not None and c.exited]
    if stopped:
        services = tuple(sorted({r.service for r in stopped}))
        restore_snapshot(source, manifest.project, store,
                         # the source's volumes were only read: they still hold what the memory expects
                         RestoreRequest(snapshot=manifest.name, services=services, parallel=request.parallel,
                                        ignore_volumes=True), progress=progress)


def names_with_holders(manifest: Manifest) -> list[str]:
    return [*(r.container_name for r in manifest.containers), *recorded_holders(manifest.containers)]


def _ensure_stopped(engine: EnginePort, name: str) -> None:
    container = engine.inspect(name)
    if container is not None and not container.exited:
        engine.kill(container.id)
        engine.wait_exited(container.id)


class Clock:
    def __init__(self) -> None:
        self._last = time.monotonic()

    def lap(self) -> float:
        now = time.monotonic()
        seconds, self._last = round(now - self._last, 3), now
        return seconds
