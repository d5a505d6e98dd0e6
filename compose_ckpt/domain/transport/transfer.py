"""export and import: a snapshot as one self-checking archive, to carry to another engine.

export streams the manifest, compose files, checkpoint files and (optionally)
images into a zstd-compressed tar. import verifies every member's sha256 in
a private staging folder before it touches the engine, then loads images,
moves the checkpoints into the store and creates the project's containers,
so `compose-ckpt restore` works there.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

if TYPE_CHECKING:  # export without images never talks to Docker: it need not load the SDK (0.1 s)
    from compose_ckpt.domain.ports import EnginePort
from collections.abc import Callable

from compose_ckpt.const import HOLDER_IMAGE
from compose_ckpt.domain.stack.filesystem import LAYERS, SUFFIX, VOLUMES, check_tree, layer_path, volume_path
from compose_ckpt.domain.stack.parallel import ProgressCallback, bytes_reporter
from compose_ckpt.domain.store import safefs
from compose_ckpt.domain.store.manifest import Manifest, ManifestError, SnapshotStatus, now_iso, parse_time
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.archive import MANIFEST, ArchiveWriter, MemberWriter, StagedArchive, read_archive
from compose_ckpt.domain.transport.hostaccess import (
    HostAccessConsent,
    pinned_subnets,
    require_consent,
    review_host_access,
    this_hosts_own,
)
from compose_ckpt.errors import ArchiveError, CkptError, ConflictError, NotFoundError, UsageError

ByteProgress = Callable[[int], None]
MAX_CLOCK_AHEAD = timedelta(days=1)  # how far ahead of ours another host's clock may be
# Archive member names allow letters, digits, '_', '.', '-' only.


@dataclass(frozen=True)
class ExportResult:
    manifest: Manifest
    bytes_in: int  # uncompressed bytes archived
    images: list[str]


def refuse_host_access(findings: list[str]) -> bool:
    """The default answer of the host-access review (domain/transport/hostaccess.py): no."""
    return False


@dataclass
class ImportResult:
    manifest: Manifest
    warnings: list[str] = field(default_factory=list)
    host_access: list[str] = field(default_factory=list)  # reviewed and accepted before anything was created
    loaded_images: list[str] = field(default_factory=list)
    created_containers: list[str] = field(default_factory=list)


def image_key(image_id: str) -> str:
    """The archive folder of an image: its id without the `sha256:` prefix."""
    return image_id.split(":")[-1]


def export_snapshot(store: SnapshotStore, project_name: str, name: str, out: BinaryIO, *,
                    images_from: EnginePort | None = None, progress: ProgressCallback = lambda item, phase: None) -> ExportResult:
    """Write snapshot `name` to `out`. With `images_from`, include `docker save` of every image it uses."""
    manifest = exportable(store, project_name, name)
    try:
        with ArchiveWriter(out, moved=bytes_reporter(progress, name, "writing archive")) as writer:
            images = write_members(writer, store, manifest, images_from, progress)
    except OSError as exc:  # a full disk or a closed pipe: say so, not a traceback
        raise CkptError(f"export of {name} failed: {exc}") from exc
    return ExportResult(manifest, writer.bytes_in, images)


def exportable(store: SnapshotStore, project_name: str, name: str) -> Manifest:
    """The manifest of a snapshot that may leave this host: complete ones only."""
    manifest = store.load(project_name, name)
    if manifest.status is not SnapshotStatus.COMPLETE:
        raise ConflictError(f"snapshot {name} is {manifest.status.value}; only complete snapshots can be exported")
    return manifest


def write_members(writer: MemberWriter, store: SnapshotStore, manifest: Manifest, images_from: EnginePort | None,
                  progress: ProgressCallback) -> list[str]:
    """Hand every member of the snapshot to `writer` (the layout is in domain/transport/archive.py); return the images added.

    The one list of what a snapshot carries off its host, for archives and registries alike."""
    project_name, name = manifest.project, manifest.name
    writer.add_bytes(MANIFEST, json.dumps(manifest.to_dict(), indent=2).encode())
    for path in store.compose_copies(project_name, name):  # the copies kept in the store, never the host's files
        writer.add_file(f"compose/{path.name}", path)
    for record in manifest.containers:
        progress(record.container_name, "archiving checkpoint")
        writer.add_tree(f"checkpoints/{record.container_name}", store.checkpoint_dir(project_name, name, record.container_name))
        if record.layer is not None:
            writer.add_file(f"{LAYERS}/{record.container_name}{SUFFIX}", layer_path(store, project_name, name, record.container_name))
    for volume in manifest.volume_records:
        if volume.copy is not None:
            progress(volume.name, "archiving volume")
            writer.add_file(f"{VOLUMES}/{volume.name}{SUFFIX}", volume_path(store, project_name, name, volume.name))
    if images_from is None:
        return []
    images = _images(manifest)
    for reference, image_id in images:
        progress(reference, "archiving image")
        writer.add_stream(f"images/{image_key(image_id)}", images_from.save_image(saved_as(images_from, reference, image_id)))
    return [reference for reference, _ in images]


def import_snapshot(store: SnapshotStore, engine: EnginePort, source: BinaryIO, *, rename: str | None = None,
                    expected_project: str | None = None, progress: ProgressCallback = lambda item, phase: None,
                    byte_progress: ByteProgress | None = None,
                    consent: HostAccessConsent = refuse_host_access, origin: str = "an archive") -> ImportResult:
    with store.using_staging(staging_name("import")) as staging:
        store.staging_leftovers(remove=True, resumable=False)  # what killed imports and pulls left, unused
        try:
            staged = read_archive(source, staging, progress=byte_progress)  # every checksum verified here
        except OSError as exc:  # the archive is fine, but writing the staged copy failed (disk full)
            raise CkptError(f"cannot stage the archive under {staging.parent}: {exc}") from exc
        return install_staged(store, engine, staged, rename=rename, expected_project=expected_project,
                              progress=progress, consent=consent, origin=origin)


def staging_name(purpose: str) -> str:
    """A fresh name for a private staging folder in the store's tmp/ (same filesystem: moved in by rename)."""
    return f"{purpose}-{uuid.uuid4().hex}"


def install_staged(store: SnapshotStore, engine: EnginePort, staged: StagedArchive, *, rename: str | None,
                   expected_project: str | None, progress: ProgressCallback,
                   consent: HostAccessConsent, origin: str) -> ImportResult:
    """Store a verified, staged snapshot and prepare `engine` to restore it; the staging folder is removed.

    Its recorded configuration is untrusted: what it would reach of this host is reviewed and must be
    accepted by `consent` before anything is stored or created; containers and holders are created, never
    started (restore starts them)."""
    from compose_ckpt.domain.host.compat import check_target  # the engine side, loaded only for import
    from compose_ckpt.domain.stack.containers import connected_containers, holders_as_built, recreate_containers

    try:
        manifest = checked_manifest(staged.manifest, staged.checkpoints.keys(), staged.images.keys())
        _check_staged_trees(manifest, staged)
        if expected_project and expected_project != manifest.project:
            raise UsageError(f"the archive holds project {manifest.project}, not {expected_project}",
                             hint="Leave out -p, or give the archive's project name.")
        manifest.files = {}  # it described the artifact the snapshot came in, not the store's files
        manifest.received, manifest.imported_from = now_iso(), origin
        if rename:
            manifest.name = rename  # checked where it was given (the CLI), and by the store just below
        if store.exists(manifest.project, manifest.name):
            raise ConflictError(f"project {manifest.project} already has a snapshot {manifest.name}",
                                hint="Import it under another name with --name.")
        compatibility = check_target(manifest.engine, engine)
        if compatibility.blockers:
            raise ConflictError("this engine cannot restore the snapshot: " + "; ".join(compatibility.blockers))
        holders = holders_as_built(manifest)
        findings = review_host_access(manifest, holders)
        findings += _image_replacements(engine, manifest, staged.images)
        findings += pinned_subnets(engine, manifest, staged.checkpoints) + this_hosts_own(engine, manifest, holders)
        require_consent(findings, consent)
        result = ImportResult(manifest, warnings=compatibility.warnings, host_access=findings)
        result.loaded_images = _load_images(engine, manifest, staged.images, progress)
        with store.locked(manifest.project):
            if store.exists(manifest.project, manifest.name):
                raise ConflictError(f"project {manifest.project} already has a snapshot {manifest.name}")
            trees = [(path, layer_path(store, manifest.project, manifest.name, name)) for name, path in staged.layers.items()]
            trees += [(path, volume_path(store, manifest.project, manifest.name, name))
                      for name, path in staged.volumes.items()]
            _move_into_store(store, manifest, staged.checkpoints, staged.compose_files, trees)
            missing = [r for r in manifest.containers if engine.inspect(r.container_name) is None]
            result.created_containers = list(recreate_containers(engine, manifest, missing, progress,
                                                                 connected_containers(store, manifest),
                                                                 start_holders=False))
        return result
    finally:
        shutil.rmtree(staged.root, ignore_errors=True)


def checked_manifest(document: bytes, checkpoints: Collection[str], images: Collection[str]) -> Manifest:
    try:
        manifest = Manifest.from_dict(json.loads(document), "in the archive")
    except (ValueError, RecursionError, ManifestError) as exc:
        raise ArchiveError(f"the archive's manifest is invalid: {exc}") from exc
    if manifest.status is not SnapshotStatus.COMPLETE:
        raise ArchiveError(f"the archive holds a {manifest.status.value} snapshot")
    if parse_time(manifest.created) > datetime.now(UTC) + MAX_CLOCK_AHEAD:
        raise ArchiveError(f"the snapshot says it was taken at {manifest.created}, more than a day from now: its "
                           "maker's clock, or its maker, cannot be trusted")
    recorded = {r.container_name for r in manifest.containers}
    if set(checkpoints) != recorded:
        raise ArchiveError(f"the archive's checkpoints ({', '.join(sorted(checkpoints))}) do not match its "
                           f"manifest ({', '.join(sorted(recorded))})")
    unknown_images = set(images) - {image_key(image_id) for _, image_id in _images(manifest)}
    if unknown_images:
        raise ArchiveError(f"the archive holds images its manifest does not use: {', '.join(sorted(unknown_images))}")
    return manifest


def _check_staged_trees(manifest: Manifest, staged: StagedArchive) -> None:
    """The layer and volume copies are exactly those the manifest names, and each is safe to unpack."""
    for kind, found, recorded in (
        ("layer", staged.layers, {r.container_name for r in manifest.containers if r.layer is not None}),
        ("volume", staged.volumes, {v.name for v in manifest.volume_records if v.copy is not None}),
    ):
        if set(found) != recorded:
            raise ArchiveError(f"the archive's {kind} copies ({', '.join(sorted(found)) or 'none'}) do not match "
                               f"its manifest ({', '.join(sorted(recorded)) or 'none'})")
        for path in found.values():
            check_tree(path, layer=kind == "layer")


def _images(manifest: Manifest) -> list[tuple[str, str]]:
    return sorted({(r.image, r.image_id) for r in manifest.containers})


def _load_images(engine: EnginePort, manifest: Manifest, staged: dict[str, list[Path]],
                 progress: ProgressCallback) -> list[str]:
    loaded, missing = [], []
    for reference, image_id in _images(manifest):
        chunks = staged.get(image_key(image_id))
        # By id: restore recreates from the very image, whatever the tag names on this engine.
        if chunks is not None and engine.image_id(image_id) is None:
            progress(reference, "loading image")
            engine.load_image(_read_chunks(chunks))
            loaded.append(reference)
        if engine.image_id(image_id) is None:
            missing.append(f"{reference} ({image_id[:19]})")
    if missing:
        raise NotFoundError(f"images missing on the target engine: {', '.join(missing)}",
                            hint="Export with --with-images, or `docker load` these images on the target first.")
    return loaded


def _image_replacements(engine: EnginePort, manifest: Manifest, staged: dict[str, list[Path]]) -> list[str]:
    """The images the snapshot carries that would take a name this engine gives another image (host access:
    every container of this host started from that name afterwards runs the snapshot's image). An image
    archive naming anything but its own reference is refused: `docker load` would tag all of it."""
    found = []
    for reference, image_id in _images(manifest):
        chunks = staged.get(image_key(image_id))
        if chunks is None:
            continue
        if _familiar(reference).startswith(_OUR_IMAGES):
            raise ArchiveError(f"the archive carries an image named {reference}, a name of compose-ckpt's own images "
                               "(every network holder of this host would run it): tampered with")
        names = _saved_names(chunks)
        if names - {_familiar(reference)}:
            raise ArchiveError(f"the archive's image for {reference} would also be tagged "
                               f"{', '.join(sorted(names - {_familiar(reference)}))[:500]}: tampered with")
        current = engine.image_id(reference)
        if current is not None and current != image_id:
            found.append(f"image {reference}: the snapshot's {image_id[:19]} replaces this host's {current[:19]} "
                         "under that name")
    return found


def _familiar(reference: str) -> str:
    """An image reference as `docker save` names it: no docker.io/library/ prefix, a tag (`latest` by default)."""
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/", "index.docker.io/"):
        reference = reference.removeprefix(prefix)
    last = reference.rsplit("/", 1)[-1]
    return reference if ":" in last or "@" in last else f"{reference}:latest"


_OUR_IMAGES = HOLDER_IMAGE.split("/")[0] + "/"  # compose-ckpt/: made on this host only (engine/holder_image.py)
_SAVED_INDEXES = ("manifest.json", "repositories", "index.json")  # where `docker save` writes the names


def _saved_names(chunks: list[Path]) -> set[str]:
    """Every name `docker load` could give the images of this `docker save` archive: manifest.json's
    RepoTags, the legacy repositories file, and the OCI index's image names."""
    names: set[str] = set()
    try:
        with tarfile.open(fileobj=cast(IO[bytes], _ChunkReader(chunks)), mode="r|") as tar:
            for member in tar:
                if member.name.lstrip("./") not in _SAVED_INDEXES or not member.isfile():
                    continue
                if member.size > 16 * 1024**2:
                    raise ArchiveError(f"the image archive's {member.name} is {member.size} bytes: not docker save's")
                data = tar.extractfile(member)
                names |= _names_in(member.name.lstrip("./"), json.loads(data.read() if data else b"null"))
    except (tarfile.TarError, ValueError, TypeError, AttributeError) as exc:
        raise ArchiveError(f"an image in the archive is not a `docker save` archive: {exc}") from exc
    return names


def _names_in(index: str, document: Any) -> set[str]:
    if index == "manifest.json":
        return {str(tag) for entry in document or [] for tag in entry.get("RepoTags") or []}
    if index == "repositories":
        return {f"{repository}:{tag}" for repository, tags in (document or {}).items() for tag in tags}
    annotations = [(entry.get("annotations") or {}) for entry in (document or {}).get("manifests") or []]
    return {_familiar(str(note["io.containerd.image.name"])) for note in annotations if "io.containerd.image.name" in note}


class _ChunkReader:
    """The chunk files of a staged image, read as one stream (tarfile's stream mode wants only read)."""

    def __init__(self, chunks: list[Path]) -> None:
        self._pieces = _read_chunks(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        data, self._buffer = (self._buffer, b"") if size < 0 else (self._buffer[:size], self._buffer[size:])
        return data


def saved_as(engine: EnginePort, reference: str, image_id: str) -> str:
    """What to `docker save` of the recorded image: its tag while that names it (so the tag travels with it),
    else its id (the tag moved to another build since)."""
    return reference if engine.image_id(reference) == image_id else image_id


def _read_chunks(chunks: list[Path]) -> Iterator[bytes]:
    for chunk in chunks:
        with chunk.open("rb") as handle:
            while piece := handle.read(1024**2):
                yield piece


def _move_into_store(store: SnapshotStore, manifest: Manifest, checkpoints: dict[str, Path],
                     compose_files: dict[str, Path], trees: list[tuple[Path, Path]]) -> None:
    """Rename the verified files into place (same filesystem as the staging folder), manifest last."""
    folder = store.new_snapshot_folder(manifest.project, manifest.name)
    try:
        for container, staged in checkpoints.items():
            safefs.seal_tree(staged)
            os.replace(staged, store.private_folder(manifest.project, manifest.name, "checkpoints") / container)
        for name, staged in compose_files.items():
            safefs.seal_tree(staged)
            os.replace(staged, store.private_folder(manifest.project, manifest.name, "compose") / name)
        for staged, target in trees:
            safefs.seal_tree(staged)
            os.replace(staged, store.private_folder(manifest.project, manifest.name, target.parent.name) / target.name)
        store.write(manifest)
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, OSError):
            raise CkptError(f"cannot write the imported snapshot into {folder}: {exc}") from exc
        raise
