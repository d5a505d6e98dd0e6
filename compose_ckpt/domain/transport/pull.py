"""pull: a snapshot from an OCI registry, as the artifact domain/transport/artifact.py describes.

pull downloads every blob into a private cache folder named after the
manifest's digest, checking each one's sha256 as it arrives; an interrupted
pull leaves the verified blobs and the partial one there, and the next pull of
the same artifact resumes with a Range request. Only when every blob is
verified are the members unpacked into a staging folder and installed exactly
as `import` installs an archive. Pushing is push.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from compose_ckpt.domain.stack.containers import holders_as_built
from compose_ckpt.domain.stack.parallel import ProgressCallback, SharedCount, bytes_reporter
from compose_ckpt.domain.store import safefs
from compose_ckpt.domain.store.manifest import Manifest
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.archive import MANIFEST, StagedArchive, staged_archive
from compose_ckpt.domain.transport.artifact import CHUNK_SIZE, WORKERS, Artifact, Blob, Chunk, parse_manifest
from compose_ckpt.domain.transport.hostaccess import HostAccessConsent, require_consent, review_host_access
from compose_ckpt.domain.transport.transfer import (
    ImportResult,
    checked_manifest,
    install_staged,
    refuse_host_access,
    staging_name,
)
from compose_ckpt.errors import ArchiveError, CkptError, RegistryError
from compose_ckpt.registry.client import transfer_deadline

if TYPE_CHECKING:
    from compose_ckpt.domain.ports import EnginePort, RegistryPort

_IO_SIZE = 1024**2


@dataclass(frozen=True)
class PullResult:
    imported: ImportResult
    reference: str
    digest: str
    downloaded_bytes: int
    reused_bytes: int  # found in the cache of an earlier, interrupted pull


def fetch_artifact(client: RegistryPort, tag: str | None = None) -> tuple[Artifact, str]:
    """The artifact's manifest (of `tag`, else of the client's reference), parsed and checked, and its digest.

    A digest in the reference is verified against the bytes received, as is the one the registry sends."""
    reference = client.reference if tag is None else client.reference.with_tag(tag)
    response = client.get_manifest(reference.digest or reference.tag or "latest")
    digest = "sha256:" + hashlib.sha256(response.body).hexdigest()
    for claimed, source in ((reference.digest, "the reference"), (response.digest, "the registry")):
        if claimed and claimed != digest:
            raise ArchiveError(f"the manifest of {reference} does not match the digest {source} gives "
                               f"({claimed}): it was tampered with or damaged")
    return parse_manifest(response.body, str(reference)), digest


def pull_snapshot(store: SnapshotStore, engine: EnginePort, client: RegistryPort, *, rename: str | None = None,
                  expected_project: str | None = None, progress: ProgressCallback = lambda item, phase: None,
                  consent: HostAccessConsent = refuse_host_access) -> PullResult:
    """Download, verify and install an artifact. The snapshot's manifest (the config blob) comes first: it is
    checked, its chunk list must match the registry's manifest, its host access reviewed and free space
    checked before any other blob is downloaded."""
    artifact, digest = fetch_artifact(client)
    # Its cache is ours while this runs (another pull of the same artifact is refused); what killed pulls and
    # imports left, and no command is using, goes first (their download caches stay: they may be resumed).
    with store.using_staging(f"pull-{digest.split(':')[1]}") as cache:
        store.staging_leftovers(remove=True, resumable=False)
        safefs.private_folder(cache)
        try:
            _download(client, artifact.config, cache)
            manifest = _artifact_snapshot(artifact, cache, pinned=client.reference.digest is not None)
            accepted = review_host_access(manifest, holders_as_built(manifest))
            require_consent(accepted, consent)
            _check_free_space(artifact, cache)
            downloading = f"downloading {len(artifact.blobs)} blobs"
            progress(str(client.reference), downloading)
            downloaded = SharedCount(bytes_reporter(progress, str(client.reference), downloading,
                                                    sum(blob.size for blob in artifact.blobs)))
            with ThreadPoolExecutor(WORKERS, thread_name_prefix="pull") as pool:
                counts = list(pool.map(lambda blob: _download(client, blob, cache, downloaded), artifact.blobs))
        except (RegistryError, KeyboardInterrupt):
            raise  # the cache stays: the same pull again resumes where this one stopped
        except BaseException as exc:
            shutil.rmtree(cache, ignore_errors=True)
            if isinstance(exc, OSError):  # a full disk, say
                raise CkptError(f"cannot write the pulled snapshot under {cache.parent}: {exc}") from exc
            raise
        with store.using_staging(staging_name("pull")) as staging:
            try:
                staged = _stage_artifact(artifact, cache, staging, progress)
            except OSError as exc:
                raise CkptError(f"cannot write the pulled snapshot under {cache.parent}: {exc}") from exc
            finally:
                shutil.rmtree(cache, ignore_errors=True)  # verified blobs: unpacked, or refused
            imported = install_staged(store, engine, staged, rename=rename, expected_project=expected_project,
                                      progress=progress, consent=lambda findings: findings == accepted or
                                      consent([f for f in findings if f not in accepted]),
                                      origin=f"{client.reference.registry}/{client.reference.repository}@{digest}")
    return PullResult(imported, str(client.reference), digest, downloaded_bytes=sum(fresh for fresh, _ in counts),
                      reused_bytes=sum(reused for _, reused in counts))


def _artifact_snapshot(artifact: Artifact, cache: Path, *, pinned: bool) -> Manifest:
    """The snapshot manifest the artifact carries (its config), checked as import checks an archive's, whose
    own file list must describe exactly the chunks the registry's manifest lists.

    That list decides what each member is made of, whatever the registry's manifest says: a reordered,
    duplicated, missing or extra chunk is refused. Artifacts pushed before the list existed carry none:
    pulled by digest (the user pinned the registry's manifest) they are accepted, by tag refused."""
    members = artifact.members
    checkpoints = {path.split("/")[1] for path in members if path.startswith("checkpoints/")}
    images = {path.split("/")[1] for path in members if path.startswith("images/")}
    manifest = checked_manifest(_blob_path(cache, artifact.config).read_bytes(), checkpoints, images)
    if not manifest.files:
        if pinned:
            return manifest
        raise ArchiveError("the artifact's snapshot manifest lists no files (it was pushed by an older compose-ckpt): "
                           "pulled by tag, nothing says in which order its chunks belong",
                           hint="Pull it by digest (REF@sha256:..., as push printed it), or push it again with this "
                                "version.")
    declared = {path: [(index * CHUNK_SIZE, min(CHUNK_SIZE, entry["size"] - index * CHUNK_SIZE), blob)
                       for index, blob in enumerate(entry["chunks"])] for path, entry in manifest.files.items()}
    listed = {path: [(c.offset, c.raw_size, c.blob.digest) for c in chunks] for path, chunks in members.items()}
    if declared != listed:
        differ = sorted(path for path in declared.keys() | listed.keys() if declared.get(path) != listed.get(path))
        raise ArchiveError(f"the chunks the registry lists for {len(differ)} files do not match the snapshot's own "
                           "file list (reordered, duplicated, missing or extra): tampered with or damaged",
                           details=differ[:5])
    return manifest


def _check_free_space(artifact: Artifact, cache: Path) -> None:
    """Refuse before downloading when the store's filesystem cannot hold the blobs and the files they make.

    The files are as large as the snapshot's own file list says (each chunk's size is checked as it is
    unpacked), however small the blobs: that list, not the download, bounds what lands on disk."""
    missing = sum(blob.size for blob in artifact.blobs if not _blob_path(cache, blob).exists())
    needed = missing + artifact.raw_bytes
    status = os.statvfs(cache)
    free = status.f_bavail * status.f_frsize
    if needed > free:
        raise CkptError(f"the snapshot needs {needed} bytes under {cache.parent} (its blobs and the "
                        f"{artifact.raw_bytes} bytes of files they make), and only {free} are free",
                        hint="Free some space (`compose-ckpt prune`, `docker system prune`) and pull again.")


def _stage_artifact(artifact: Artifact, cache: Path, staging: Path, progress: ProgressCallback) -> StagedArchive:
    """Unpack the verified blobs into the new folder `staging`, each blob deleted once its last chunk is out."""
    uses = Counter(chunk.blob.digest for chunks in artifact.members.values() for chunk in chunks)
    staging.mkdir(mode=0o700)
    try:
        (staging / MANIFEST).write_bytes(_blob_path(cache, artifact.config).read_bytes())
        for path, chunks in artifact.members.items():
            progress(path, "unpacking")
            _unpack_member(cache, chunks, staging / path)
            for chunk in chunks:
                uses[chunk.blob.digest] -= 1
                if not uses[chunk.blob.digest] and chunk.blob.digest != artifact.config.digest:
                    _blob_path(cache, chunk.blob).unlink()
        return staged_archive(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _blob_path(cache: Path, blob: Blob) -> Path:
    return cache / blob.digest.split(":")[1]


def _download(client: RegistryPort, blob: Blob, cache: Path,
              downloaded: SharedCount | None = None) -> tuple[int, int]:
    """Fetch one blob into the cache and verify it; return (bytes downloaded, bytes reused from before)."""
    final = _blob_path(cache, blob)
    if final.exists():
        if _file_digest(final) == blob.digest:
            if downloaded:
                downloaded.add(blob.size)
            return 0, blob.size
        final.unlink()
    partial = final.with_name(final.name + ".partial")
    descriptor = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "r+b") as out:
        have = os.fstat(out.fileno()).st_size
        if have > blob.size:
            out.truncate(0)
            have = 0
        digest = hashlib.sha256()
        out.seek(0)
        while have and (piece := out.read(_IO_SIZE)):
            digest.update(piece)
        response = client.open_blob(blob.digest, have, transfer_deadline(blob.size - have)) if have < blob.size else None
        fresh = 0
        if response is None and downloaded:
            downloaded.add(have)
        if response is not None:
            with response:
                if response.status_code == 200 and have:  # the registry ignored the range: start over
                    out.truncate(0)
                    digest, have = hashlib.sha256(), 0
                if downloaded:
                    downloaded.add(have)  # what an interrupted pull had fetched counts as done
                for piece in response.iter_content(_IO_SIZE):
                    if have + fresh + len(piece) > blob.size:
                        out.close()
                        partial.unlink()
                        raise ArchiveError(f"blob {blob.digest} is larger than its manifest says: tampered or damaged")
                    out.write(piece)
                    digest.update(piece)
                    fresh += len(piece)
                    if downloaded:
                        downloaded.add(len(piece))
        if have + fresh < blob.size:
            raise RegistryError(f"the download of blob {blob.digest} was cut short at {have + fresh} of {blob.size} "
                                "bytes", hint="Run the same pull again: it resumes where this one stopped.")
    if "sha256:" + digest.hexdigest() != blob.digest:
        partial.unlink()
        raise ArchiveError(f"blob {blob.digest} does not match its digest: tampered with or damaged in the registry")
    os.replace(partial, final)
    return fresh, have


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(_IO_SIZE):
            digest.update(piece)
    return "sha256:" + digest.hexdigest()


def _unpack_member(cache: Path, chunks: list[Chunk], target: Path) -> None:
    """Decompress the member's verified chunks into a new private file, checking each one's declared size."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ArchiveError(f"artifact member {chunks[0].path!r} clashes with another member's path") from exc
    with os.fdopen(descriptor, "wb") as out:
        for chunk in chunks:
            written = 0
            with _blob_path(cache, chunk.blob).open("rb") as source:
                reader = zstandard.ZstdDecompressor().stream_reader(source)
                try:
                    while piece := reader.read(_IO_SIZE):
                        written += len(piece)
                        if written > chunk.raw_size:
                            break
                        out.write(piece)
                except zstandard.ZstdError as exc:
                    raise ArchiveError(f"a chunk of {chunk.path!r} is not valid zstd: {exc}") from exc
            if written != chunk.raw_size:
                raise ArchiveError(f"a chunk of {chunk.path!r} holds {'more' if written > chunk.raw_size else written} "
                                   f"bytes, not the {chunk.raw_size} its manifest declares")
