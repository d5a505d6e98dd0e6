"""Filesystem state in a snapshot: writable-layer changes, named volumes, bind mounts.

The contract:
- Everything is copied as it is while the stack is frozen (after the dumps,
  before the resume; with --stop the dumps have ended the containers), so each
  file a checkpoint holds open has the content and size CRIU recorded, and the
  files agree with the memory.
- A volume on this host (local engine, local driver) is pre-copied before the
  freeze, while the stack runs, into a private folder of the store; inside the
  frozen window only the entries that changed since are read again (the rule
  of `tree_changes`, which a write within the same second cannot slip past),
  so the window does not grow with the volume's size. The copy is compressed
  into the store after the window. A volume that cannot be pre-copied (remote
  engine, no GNU tar, the store's disk full) is copied whole inside the window.
- By default each container's writable-layer changes (added and changed files,
  whiteouts for deleted ones) go to `layers/<container>.tar.zst`;
  `--ignore-rootfs` leaves them out. With `--with-volumes`, every named volume
  the selected containers mount goes to `volumes/<volume>.tar.zst`. Both are
  zstd-compressed tars of the tree (members under `ckpt-tree/`).
- A copy whose tar has the sha256 of one another snapshot of the project holds
  is a hard link to that file: an unchanged volume takes no more disk, and
  `rm`/`prune` free only what no other snapshot still links.
- Bind mounts are never copied: they are listed, the host must provide them.
- Restore puts a layer back into a recreated container before the CRIU
  restore, and into an existing one unless its layer is intact (the same
  container, stopped by this snapshot, not started since). Volume copies
  replace the volume's content unless `ignore_volumes`. Without them, a volume
  that changed since the snapshot (its fingerprint differs) gets a warning:
  the memory restored may not agree with its content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import stat
import tarfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zstandard

from compose_ckpt.domain.stack.parallel import ProgressCallback, bytes_reporter, counted, run_parallel
from compose_ckpt.domain.stack.tree_changes import TreeChanges, TreeIndex, changes_since, index_tree
from compose_ckpt.domain.store import safefs
from compose_ckpt.domain.store.manifest import (
    BindMount,
    ContainerRecord,
    Manifest,
    SnapshotStatus,
    TreeCopy,
    VolumeRecord,
)
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import ArchiveError, CkptError

if TYPE_CHECKING:  # export and import read the copies without the Docker SDK
    from compose_ckpt.domain.ports import EnginePort
    from compose_ckpt.engine import ContainerInfo

LAYERS = "layers"
VOLUMES = "volumes"
SUFFIX = ".tar.zst"
ZSTD_LEVEL = 1  # the speed of `zstd -1`: the copy happens while the stack is frozen
_IO_SIZE = 1024**2


def layer_path(store: SnapshotStore, project_name: str, snapshot: str, container: str) -> Path:
    return store.snapshot_dir(project_name, snapshot) / LAYERS / f"{container}{SUFFIX}"


def volume_path(store: SnapshotStore, project_name: str, snapshot: str, volume: str) -> Path:
    return store.snapshot_dir(project_name, snapshot) / VOLUMES / f"{volume}{SUFFIX}"


def named_volumes(inspect: dict[str, Any]) -> list[str]:
    return sorted({m["Name"] for m in inspect.get("Mounts") or [] if m.get("Type") == "volume" and m.get("Name")})


def bind_mounts(container: str, inspect: dict[str, Any]) -> list[BindMount]:
    return [BindMount(container=container, source=str(m.get("Source", "")), destination=str(m.get("Destination", "")),
                      read_only=not m.get("RW", True))
            for m in inspect.get("Mounts") or [] if m.get("Type") == "bind"]


def layer_intact(manifest: Manifest, record: ContainerRecord, current: ContainerInfo) -> bool:
    """The container's writable layer is the one the snapshot copied: same container, stopped by the
    snapshot and not started since (a start, or running on after the snapshot, changes it)."""
    recorded_start = (record.inspect.get("State") or {}).get("StartedAt")
    return manifest.stopped and current.id == record.container_id and current.started_at == recorded_start


@dataclasses.dataclass
class PreCopy:
    """A volume copied while the stack ran: `root` (ckpt-tree inside a private folder) holds the copy."""

    folder: Path  # the volume's own folder
    root: Path
    before: TreeIndex  # the volume's entries when the copy began, at `began_ns` (wall clock)
    copied: TreeIndex  # the copy's entries once written
    began_ns: int
    size: int  # bytes of the tar that made it
    reread: int = 0  # entries read again inside the frozen window, in `seconds`
    seconds: float = 0.0


class VolumePreCopies:
    """Volumes on this host copied into a private folder of the store while the stack runs (`take`), then
    brought up to the moment of the freeze (`catch_up`): see the module's contract and tree_changes."""

    def __init__(self, engine: EnginePort, store: SnapshotStore, project_name: str, user: str) -> None:
        """`user`: the command making them (`snapshot`, `migrate`), part of the folder's name, so that each
        removes only the stale ones of its own kind (see `remove_stale_precopies`)."""
        self.engine = engine
        self.store = store
        self.copies: dict[str, PreCopy] = {}  # by volume name
        self.scratch = store.home / "tmp" / f"precopy-{user}-{project_name}-{uuid.uuid4().hex}"

    def take(self, names: list[str], parallel: int, progress: ProgressCallback) -> None:
        """Pre-copy the volumes readable on this host. One that cannot be pre-copied is not an error: it is
        left out of `copies` (the caller copies it whole once frozen), with a progress note saying why."""
        if not self.engine.trees.copies_here():
            return
        folders = {name: folder for name in names if (folder := self.engine.trees.volume_folder(name)) is not None}
        if not folders:
            return
        safefs.private_folder(self.store.staging_dir() / self.scratch.name)

        def precopy(name: str) -> PreCopy:
            progress(name, "pre-copying volume")
            destination = safefs.private_folder(self.scratch / name)
            began_ns = time.time_ns()
            before = index_tree(folders[name])  # before any byte is read: see tree_changes
            tally = Tally(bytes_reporter(progress, name, "pre-copying volume"))
            self.engine.trees.unpack_copy(destination,
                                          counted(self.engine.trees.read_folder(folders[name], live=True), tally))
            root = destination / TREE_TOP
            return PreCopy(folders[name], root, before, index_tree(root), began_ns, tally.done)

        outcome = run_parallel(sorted(folders), precopy, parallel)
        self.copies = outcome.results
        for name, exc in outcome.failures.items():
            progress(name, f"pre-copy failed ({exc}): copying it whole while frozen")
            shutil.rmtree(self.scratch / name, ignore_errors=True)

    def changes(self, name: str) -> TreeChanges:
        """While frozen: what changed in the volume since its pre-copy."""
        precopy = self.copies[name]
        return changes_since(precopy.before, precopy.copied, index_tree(precopy.folder), precopy.began_ns)

    def catch_up(self, name: str) -> None:
        """While frozen: read again into the copy what changed in the volume since its pre-copy."""
        precopy = self.copies[name]
        began = time.monotonic()
        changes = self.changes(name)
        for entry in changes.removed:
            safefs.remove_inside(precopy.root, entry)
        if changes.changed:
            self.engine.trees.unpack_copy(precopy.root.parent,
                                          self.engine.trees.read_folder(precopy.folder, changes.changed))
        precopy.reread = len(changes.changed)
        precopy.seconds = round(time.monotonic() - began, 3)

    def discard(self) -> None:
        """Remove the pre-copies (they may hold a volume's whole content)."""
        shutil.rmtree(self.scratch, ignore_errors=True)


def remove_stale_precopies(store: SnapshotStore, project_name: str, user: str) -> None:
    """Remove the pre-copies (they may hold a volume's whole content) a killed `user` command of this
    project left; called only where no other such command of the project can be making one."""
    stale = re.compile(re.escape(f"precopy-{user}-{project_name}-") + "[0-9a-f]{32}")
    with contextlib.suppress(FileNotFoundError):
        for entry in (store.home / "tmp").iterdir():
            if stale.fullmatch(entry.name) and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)


class Tally:
    """The bytes one stream moved so far (give it to `counted`), each count also reported on."""

    def __init__(self, report: Callable[[int], None]) -> None:
        self.report = report
        self.done = 0

    def __call__(self, done: int) -> None:
        self.done = done
        self.report(done)


class FilesystemCapture:
    """The filesystem side of one snapshot run; `_SnapshotRun` calls it before, inside and after the
    frozen window."""

    def __init__(self, engine: EnginePort, store: SnapshotStore, manifest: Manifest,
                 containers: dict[str, ContainerInfo], *, layers: bool, volumes: bool) -> None:
        self.engine = engine
        self.store = store
        self.manifest = manifest
        self.containers = containers  # id -> container
        self.layers = layers
        self.volumes = volumes
        self.shared: dict[str, Path] = {}  # copies other snapshots hold, by sha256 (see `describe`)
        self.precopies = VolumePreCopies(engine, store, manifest.project, "snapshot")

    def describe(self) -> None:
        """Record the volumes and bind mounts of the containers (before the freeze)."""
        names = sorted({v for c in self.containers.values() for v in named_volumes(c.attrs)})
        self.manifest.volume_records = [VolumeRecord(name) for name in names]
        self.manifest.binds = [b for c in self.containers.values() for b in bind_mounts(c.name, c.attrs)]
        self.shared = stored_copies(self.store, self.manifest.project)

    def capture_layer(self, container_id: str, progress: ProgressCallback) -> None:
        if not self.layers:
            return
        container = self.containers[container_id]
        record = next(r for r in self.manifest.containers if r.container_id == container_id)
        target = layer_path(self.store, self.manifest.project, self.manifest.name, container.name)
        chunks = counted(self.engine.trees.read_layer(container), bytes_reporter(progress, container.name, "copying layer"))
        record.layer = store_tree(target, chunks, self.shared)

    def precopy_volumes(self, parallel: int, progress: ProgressCallback) -> None:
        """With --with-volumes, before the freeze: pre-copy each volume readable on this host."""
        if self.volumes:
            self.precopies.take([v.name for v in self.manifest.volume_records], parallel, progress)

    def capture_volumes(self, parallel: int, progress: ProgressCallback) -> dict[str, Exception]:
        """With --with-volumes, inside the frozen window: bring each pre-copy up to date, copy every other
        volume whole; return the failures by volume."""
        if not self.volumes:
            return {}
        volumes = {volume.name: volume for volume in self.manifest.volume_records}

        def capture(name: str) -> None:
            if name in self.precopies.copies:
                progress(name, "copying volume changes")
                self.precopies.catch_up(name)
                return
            progress(name, "copying volume")
            target = volume_path(self.store, self.manifest.project, self.manifest.name, name)
            chunks = counted(self.engine.trees.read_volume(name, self._image_mounting(name)),
                             bytes_reporter(progress, name, "copying volume"))
            volumes[name].copy = store_tree(target, chunks, self.shared)

        return run_parallel(list(volumes), capture, parallel).failures

    def store_precopies(self, parallel: int, progress: ProgressCallback) -> None:
        """After the frozen window: compress each pre-copy, as it was at the freeze, into the store."""
        volumes = {volume.name: volume for volume in self.manifest.volume_records}

        def store(name: str) -> None:
            progress(name, "storing volume copy")
            target = volume_path(self.store, self.manifest.project, self.manifest.name, name)
            precopy = self.precopies.copies[name]
            chunks = counted(self.engine.trees.read_folder(precopy.root), bytes_reporter(progress, name, "storing volume copy"))
            stored = store_tree(target, chunks, self.shared)
            volumes[name].copy = dataclasses.replace(stored, seconds=precopy.seconds, reread=precopy.reread)

        try:
            run_parallel(sorted(self.precopies.copies), store, parallel).raise_first()
        finally:
            self.precopies.discard()

    def discard(self) -> None:
        self.precopies.discard()

    def fingerprint_volumes(self) -> None:
        """Note what each volume looks like, for the warning of a later restore without its copy.

        After the frozen window: walking a large volume must not lengthen the freeze. With --stop
        nothing writes in between; a stack left running may have written a little more already."""
        for volume in self.manifest.volume_records:
            with contextlib.suppress(CkptError, OSError):
                folder = self.engine.trees.volume_folder(volume.name)
                volume.fingerprint = fingerprint(folder) if folder else None

    def _image_mounting(self, volume: str) -> str:
        return next(c.image_id for c in self.containers.values() if volume in named_volumes(c.attrs))


class FilesystemRestore:
    """The filesystem side of one restore: called once the containers exist and none of them runs."""

    def __init__(self, engine: EnginePort, store: SnapshotStore, manifest: Manifest, records: list[ContainerRecord],
                 *, ignore_volumes: bool, parallel: int, progress: ProgressCallback) -> None:
        self.engine = engine
        self.store = store
        self.manifest = manifest
        self.records = records
        self.ignore_volumes = ignore_volumes
        self.parallel = parallel
        self.progress = progress
        self.saved: dict[str, tuple[ContainerInfo, Path]] = {}  # layers as they were before, see `keep_before`
        self.scratch = store.home / "tmp" / f"restore-{uuid.uuid4().hex}"

    def put_back(self, targets: dict[str, ContainerInfo], recreated: set[str], keep_before: set[str]) -> list[str]:
        """Write layers and volumes into place; return warnings for the user.

        The layers of the containers in `keep_before` (set aside by --force, with a safety checkpoint) are
        saved first, so that `undo_layers` can give those checkpoints back the files they hold open."""
        layers = {r.container_name: r for r in self.records if r.layer is not None
                  and (r.container_name in recreated or not layer_intact(self.manifest, r, targets[r.container_name]))}

        def put_layer(name: str) -> None:
            record = layers[name]
            self.progress(record.container_name, "writing layer")
            target = self.engine.inspect(targets[record.container_name].id) or targets[record.container_name]
            if name in keep_before:
                safefs.private_folder(self.store.staging_dir() / self.scratch.name)
                before = self.scratch / f"{name}{SUFFIX}"
                store_tree(before, self.engine.trees.read_layer(target))
                self.saved[name] = (target, before)
            source = layer_path(self.store, self.manifest.project, self.manifest.name, record.container_name)
            self.engine.trees.write_layer(target, read_tree(source))

        run_parallel(list(layers), put_layer, self.parallel).raise_first()
        images = {v: r.image_id for r in self.records for v in named_volumes(r.inspect)}
        volumes = {v.name: v for v in self.manifest.volume_records if v.name in images}
        copied = [name for name, v in volumes.items() if v.copy is not None and not self.ignore_volumes]

        def put_volume(name: str) -> None:
            volume = volumes[name]
            self.progress(volume.name, "writing volume")
            source = volume_path(self.store, self.manifest.project, self.manifest.name, volume.name)
            self.engine.trees.replace_volume(volume.name, images[volume.name], read_tree(source))

        run_parallel(copied, put_volume, self.parallel).raise_first()
        return [warning for name, v in volumes.items() if name not in copied and (warning := self._drift(v))]

    def undo_layers(self) -> None:
        """Put back the layers saved by `put_back` (best effort: the restore's own failure is what counts)."""
        for name, (target, before) in self.saved.items():
            self.progress(name, "putting its layer back")
            with contextlib.suppress(CkptError):
                self.engine.trees.write_layer(target, read_tree(before))

    def discard(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _drift(self, volume: VolumeRecord) -> str | None:
        if volume.fingerprint is None:
            return None
        folder = self.engine.trees.volume_folder(volume.name)
        if folder is None or fingerprint(folder) == volume.fingerprint:
            return None
        carried = "its copy was left out (--ignore-volumes)" if volume.copy else "the snapshot holds no copy of it"
        return (f"volume {volume.name} changed since snapshot {self.manifest.name} and {carried}: the restored "
                "memory may not agree with the volume's content (snapshot with --with-volumes to carry it)")


def fingerprint(folder: Path) -> str:
    """Entries, bytes and newest change time of a tree, links not followed: differs once anything changed."""
    entries = size = newest = 0
    pending = [folder]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                info = entry.stat(follow_symlinks=False)
                entries += 1
                size += info.st_size
                newest = max(newest, info.st_mtime_ns, info.st_ctime_ns)
                if stat.S_ISDIR(info.st_mode):
                    pending.append(Path(entry.path))
    return f"{entries}:{size}:{newest}"


def store_tree(target: Path, chunks: Iterable[bytes], shared: dict[str, Path] | None = None) -> TreeCopy:
    """Compress a tar stream into `target` (0600, created exclusively), or link the equal copy that
    `shared` names (see `stored_copies`)."""
    began = time.monotonic()
    safefs.private_folder(target.parent)  # layers/ or volumes/ inside a trusted snapshot folder
    partial = target.with_name(f".{target.name}.partial")
    digest = hashlib.sha256()
    size = 0
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1, write_checksum=True)
            # The hash runs on its own thread (hashlib and zstd release the GIL), beside the compression.
            with compressor.stream_writer(raw, closefd=False) as sink, ThreadPoolExecutor(1) as hasher:
                hashed: Future[None] | None = None
                for chunk in chunks:
                    if hashed is not None:
                        hashed.result()
                    hashed = hasher.submit(digest.update, chunk)
                    sink.write(chunk)
                    size += len(chunk)
                if hashed is not None:
                    hashed.result()
        sha256 = digest.hexdigest()
        same = (shared or {}).get(sha256)
        if same is not None and _regular(same) and same.stat().st_dev == target.parent.stat().st_dev:
            os.link(same, target)
            os.unlink(partial)
        else:
            os.rename(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return TreeCopy(size=size, stored=target.stat().st_size, seconds=round(time.monotonic() - began, 3), sha256=sha256)


def stored_copies(store: SnapshotStore, project_name: str) -> dict[str, Path]:
    """The layer and volume copies the project's complete snapshots hold, by sha256: a new copy equal to
    one of them becomes a hard link to it. Read once per snapshot, before the freeze."""
    copies: dict[str, Path] = {}
    for other in store.list(project_name):
        if other.status is not SnapshotStatus.COMPLETE:
            continue
        for volume in other.volume_records:
            if volume.copy is not None:
                copies[volume.copy.sha256] = volume_path(store, other.project, other.name, volume.name)
        for record in other.containers:
            if record.layer is not None:
                copies[record.layer.sha256] = layer_path(store, other.project, other.name, record.container_name)
    return copies


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def read_tree(path: Path) -> Iterator[bytes]:
    """The tar stream of a stored copy, decompressed as it is read."""
    with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as source:
        while chunk := source.read(_IO_SIZE):
            yield chunk


def remove_files(store: SnapshotStore, project_name: str, snapshot: str) -> None:
    """Drop the copied files of a snapshot that did not complete (shared copies stay for the others)."""
    folder = store.snapshot_dir(project_name, snapshot)
    for part in (LAYERS, VOLUMES):
        shutil.rmtree(folder / part, ignore_errors=True)




TREE_TOP = "ckpt-tree"  # the folder every member of a copy sits in (engine/trees.py)


def check_tree(path: Path, *, layer: bool) -> None:
    """Refuse a copy from an archive whose tar could write outside its tree or plant a device.

    It is unpacked as root (by the daemon in a helper container, or by tar on a local engine's host):
    members stay under `ckpt-tree/` without '..', hard links point inside it, no member lies below a
    symbolic link an earlier member made (tar would write through it), and the only device allowed is
    a layer's whiteout (a character device 0/0). Symbolic links are content like any other."""
    what = f"{'layer' if layer else 'volume'} copy {path.name}"
    try:
        with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as source, \
                tarfile.open(fileobj=source, mode="r|") as tar:
            links: set[str] = set()
            for member in tar:
                problem = _tree_member_problem(member, layer, links)
                if problem:
                    raise ArchiveError(f"unsafe member {member.name!r} in {what}: {problem}")
    except (zstandard.ZstdError, tarfile.TarError, EOFError, ValueError) as exc:
        raise ArchiveError(f"damaged {what}: {exc}") from exc


def _tree_member_problem(member: tarfile.TarInfo, layer: bool, links: set[str]) -> str | None:
    """What is wrong with one member; `links` holds the symbolic links made so far (kept up to date)."""
    for name, kind in ((member.name, "path"), (member.linkname if member.islnk() else TREE_TOP, "hard link target")):
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if name.startswith("/") or not parts or parts[0] != TREE_TOP or ".." in parts:
            return f"{kind} {name!r} is outside {TREE_TOP}/"
        below = next((link for link in ("/".join(parts[:i]) for i in range(1, len(parts))) if link in links), None)
        if below:
            return f"{kind} {name!r} lies below the symbolic link {below!r}"
    own = "/".join(part for part in member.name.split("/") if part not in ("", "."))
    if member.issym():
        links.add(own)
    else:
        links.discard(own)
    if member.ischr() or member.isblk():
        if not (layer and member.ischr() and member.devmajor == 0 and member.devminor == 0):
            return "a device node"
    return None
