"""push and pull: a snapshot to and from an OCI registry, as the artifact domain/transport/artifact.py describes.

push hands the snapshot's members (the same list `export` archives) to a
writer that cuts them into chunks, compresses each on a worker thread, asks the
registry whether it has the chunk's digest (HEAD) and uploads only what it
lacks. At most a few chunks are in memory at once, whatever the snapshot's size.

pull downloads every blob into a private cache folder named after the
manifest's digest, checking each one's sha256 as it arrives; an interrupted
pull leaves the verified blobs and the partial one there, and the next pull of
the same artifact resumes with a Range request. Only when every blob is
verified are the members unpacked into a staging folder and installed exactly
as `import` installs an archive.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import zstandard

from compose_ckpt.const import ENV_PULL_MIN_RATE, ENV_PULL_MIN_SECONDS
from compose_ckpt.domain.stack.containers import holders_as_built
from compose_ckpt.domain.stack.parallel import ProgressCallback, SharedCount, bytes_reporter
from compose_ckpt.domain.store import safefs
from compose_ckpt.domain.store.manifest import Manifest
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.archive import MANIFEST, MemberWriter, StagedArchive, check_name, staged_archive
from compose_ckpt.domain.transport.artifact import (
    CHUNK_SIZE,
    CREATED,
    PROJECT,
    SNAPSHOT,
    Artifact,
    Blob,
    Chunk,
    build_manifest,
    parse_manifest,
)
from compose_ckpt.domain.transport.hostaccess import HostAccessConsent, require_consent, review_host_access
from compose_ckpt.domain.transport.transfer import (
    ImportResult,
    checked_manifest,
    exportable,
    install_staged,
    refuse_host_access,
    staging_name,
    write_members,
)
from compose_ckpt.errors import ArchiveError, CkptError, RegistryError, UsageError

if TYPE_CHECKING:
    from compose_ckpt.domain.ports import EnginePort, RegistryPort

WORKERS = max(4, min(8, (os.cpu_count() or 2) + 1))  # zstd, sha256 and sockets release the GIL; uploads wait on the registry
_ZSTD_LEVEL = 3  # as export
_SAMPLE_PAGES, _PAGE = 64, 4096  # what is compressed to tell whether a chunk compresses
_ZSTD_MAGIC = (0xFD2FB528).to_bytes(4, "little")
_STORED_HEADER = 10  # magic, frame header descriptor, window descriptor, 4-byte content size
_STORED_BLOCK = 128 * 1024  # zstd's largest block
_IO_SIZE = 1024**2
DEFAULT_PULL_MIN_RATE = 64 * 1024  # bytes per second
DEFAULT_PULL_MIN_SECONDS = 120.0


@dataclass(frozen=True)
class PushResult:
    manifest: Manifest
    reference: str
    digest: str  # of the OCI manifest: pull REPO@DIGEST gets exactly this
    tags: list[str]
    blobs: int
    uploaded_blobs: int
    bytes: int  # uncompressed member bytes
    uploaded_bytes: int  # compressed bytes sent
    images: list[str]


@dataclass(frozen=True)
class PullResult:
    imported: ImportResult
    reference: str
    digest: str
    downloaded_bytes: int
    reused_bytes: int  # found in the cache of an earlier, interrupted pull


# --- push -----------------------------------------------------------------------------------------

class _ChunkUploader(MemberWriter):
    """Members in, deduplicated blobs out: every chunk is encoded (_ChunkEncoder), HEAD-checked and uploaded
    if missing."""

    def __init__(self, client: RegistryPort, pool: ThreadPoolExecutor, read: SharedCount) -> None:
        """`read` counts the snapshot's bytes as their chunks are checked or uploaded (for progress)."""
        self._client = client
        self._read = read
        self._pool = pool
        self._in_flight = threading.BoundedSemaphore(WORKERS * 2)  # bounds the chunks held in memory
        self._futures: list[Future[Chunk]] = []
        self._lock = threading.Lock()
        self._checked: set[str] = set()
        self._encoder = _ChunkEncoder()
        self.uploaded_blobs = 0
        self.uploaded_bytes = 0

    def add_bytes(self, path: str, data: bytes) -> None:
        if path == MANIFEST:
            return  # the config, uploaded last with the file list (push_snapshot)
        check_name(path)
        view = memoryview(data)
        for offset in range(0, max(len(data), 1), CHUNK_SIZE):
            self._submit(path, offset, _MemoryPart(view[offset:offset + CHUNK_SIZE]))

    def add_file(self, path: str, source: Path) -> None:
        check_name(path)
        size = source.stat().st_size
        for offset in range(0, max(size, 1), CHUNK_SIZE):
            self._submit(path, offset, _FilePart(source, offset, min(CHUNK_SIZE, size - offset)))

    def _submit(self, path: str, offset: int, part: _Part) -> None:
        self._in_flight.acquire()
        if any(future.done() and future.exception() for future in self._futures[-WORKERS * 2:]):
            self._in_flight.release()
            self.finish()  # raises the failure now rather than after the whole snapshot was read
        future = self._pool.submit(self._store_chunk, path, offset, part)
        future.add_done_callback(lambda _: self._in_flight.release())
        self._futures.append(future)

    def _store_chunk(self, path: str, offset: int, part: _Part) -> Chunk:
        frame = self._encoder.encode(part)
        blob = Blob("sha256:" + hashlib.sha256(frame).hexdigest(), len(frame))
        self.ensure_blob(blob, frame)
        self._read.add(part.size)
        return Chunk(path, offset, part.size, blob)

    def ensure_blob(self, blob: Blob, data: bytes | memoryview) -> None:
        with self._lock:
            if blob.digest in self._checked:  # the same chunk twice in one snapshot (zero pages, say)
                return
            self._checked.add(blob.digest)
        if self._client.blob_exists(blob.digest):
            return
        self._client.upload_blob(blob.digest, data, blob.size)
        with self._lock:
            self.uploaded_blobs += 1
            self.uploaded_bytes += blob.size

    def finish(self) -> list[Chunk]:
        return [future.result() for future in self._futures]

    def cancel_pending(self) -> None:
        """After a failure: chunks not started yet are not read, compressed or sent."""
        for future in self._futures:
            future.cancel()


class _Part(Protocol):
    """The bytes of one chunk, read into buffers the caller owns."""

    @property
    def size(self) -> int: ...

    def read_into(self, at: int, buffers: list[memoryview]) -> None:
        """Fill `buffers`, in order, with the chunk's bytes from `at` on."""


@dataclass(frozen=True)
class _MemoryPart:
    data: memoryview

    @property
    def size(self) -> int:
        return len(self.data)

    def read_into(self, at: int, buffers: list[memoryview]) -> None:
        for buffer in buffers:
            buffer[:] = self.data[at:at + len(buffer)]
            at += len(buffer)


@dataclass(frozen=True)
class _FilePart:
    path: Path
    offset: int
    size: int

    def read_into(self, at: int, buffers: list[memoryview]) -> None:
        descriptor = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            count = os.preadv(descriptor, buffers, self.offset + at)
        finally:
            os.close(descriptor)
        if count != sum(len(buffer) for buffer in buffers):
            raise CkptError(f"{self.path} shrank while it was being pushed")


class _ChunkEncoder(threading.local):
    """A chunk as the one zstd frame the artifact wants (domain/transport/artifact.py): compressed, or stored as raw
    blocks when a sample of it does not compress. Both depend only on the bytes, so an unchanged chunk keeps
    its digest.

    One per worker thread, with buffers reused for every chunk: with fresh 16 MiB buffers and a fresh zstd
    context per chunk the kernel mapped and zeroed new memory for every chunk (page faults), 0.4 of the
    3.2 CPU seconds push took for 1 GiB. Stored blocks are read from the file straight into their place
    in the frame, so those bytes are copied once, by the kernel."""

    def __init__(self) -> None:
        self._raw = memoryview(bytearray(CHUNK_SIZE))
        self._stored = memoryview(bytearray(_STORED_HEADER + 3 * (CHUNK_SIZE // _STORED_BLOCK) + CHUNK_SIZE))
        self._sample = memoryview(bytearray(_SAMPLE_PAGES * _PAGE))
        self._compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True)

    def encode(self, part: _Part) -> bytes | memoryview:
        """The frame; a view into this thread's buffers is valid until its next chunk."""
        if self._worth_compressing(part):
            raw = self._raw[:part.size]
            part.read_into(0, [raw])
            return self._compressor.compress(raw)
        return self._stored_frame(part)

    def _worth_compressing(self, part: _Part) -> bool:
        """Whether 64 pages spread over the chunk compress by 1/32 or more.

        zstd spends 0.5 CPU s per GiB finding out that random memory, or the layer and volume copies
        (zstd already), do not compress: a fifth of push's own CPU. A chunk whose sample saves less
        than 1/32 is expected to save about as little itself."""
        if part.size < len(self._sample) * 4:  # small: compressing it costs next to nothing
            return True
        step = part.size // _SAMPLE_PAGES // _PAGE * _PAGE
        for index in range(_SAMPLE_PAGES):
            part.read_into(index * step, [self._sample[index * _PAGE:(index + 1) * _PAGE]])
        sample = self._sample
        return len(self._compressor.compress(sample)) <= len(sample) - len(sample) // 32

    def _stored_frame(self, part: _Part) -> memoryview:
        """One zstd frame of raw blocks (RFC 8878; what zstd itself emits for data it cannot compress).
        Header: the content size and a 128 KiB window; no content checksum, as the blob's sha256 covers
        every byte of it."""
        out = self._stored
        # Frame header descriptor 0x80: a 4-byte content size, no checksum; window descriptor 0x38: 2**17 bytes.
        out[:_STORED_HEADER] = _ZSTD_MAGIC + bytes((0x80, 0x38)) + part.size.to_bytes(4, "little")
        at, blocks = _STORED_HEADER, []
        for start in range(0, part.size, _STORED_BLOCK):
            length = min(_STORED_BLOCK, part.size - start)
            last = start + length == part.size
            out[at:at + 3] = (length << 3 | last).to_bytes(3, "little")  # block type 0: raw
            blocks.append(out[at + 3:at + 3 + length])
            at += 3 + length
        part.read_into(0, blocks)
        return out[:at]


def push_snapshot(store: SnapshotStore, project_name: str, name: str, client: RegistryPort, tags: list[str], *,
                  images_from: EnginePort | None = None,
                  progress: ProgressCallback = lambda item, phase: None) -> PushResult:
    """Upload snapshot `name` as one artifact and point every tag in `tags` at it."""
    manifest = exportable(store, project_name, name)
    client.want_push()
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="push") as pool:
        uploader = _ChunkUploader(client, pool, SharedCount(bytes_reporter(progress, name, "uploading")))
        try:
            images = write_members(uploader, store, manifest, images_from, progress)
            chunks = uploader.finish()
        except OSError as exc:
            raise CkptError(f"push of {name} failed while reading the snapshot: {exc}") from exc
        finally:
            uploader.cancel_pending()
    # The config is the snapshot's manifest with the list of each member's chunks (what write_members handed
    # over as manifest.json is the same manifest without it).
    document = dataclasses.replace(manifest, files=file_list(chunks)).to_dict()
    config_bytes = json.dumps(document, indent=2).encode()
    config = Blob("sha256:" + hashlib.sha256(config_bytes).hexdigest(), len(config_bytes))
    uploader.ensure_blob(config, config_bytes)
    body = build_manifest(config, chunks, {CREATED: manifest.created, PROJECT: manifest.project, SNAPSHOT: manifest.name})
    for tag in tags:
        progress(tag, "tagging")
        client.put_manifest(tag, body)
    blobs = len({chunk.blob.digest for chunk in chunks} | {config.digest})
    return PushResult(manifest=manifest, reference=str(client.reference.with_tag(tags[0])),
                      digest="sha256:" + hashlib.sha256(body).hexdigest(), tags=tags, blobs=blobs,
                      uploaded_blobs=uploader.uploaded_blobs, bytes=sum(c.raw_size for c in chunks) + config.size,
                      uploaded_bytes=uploader.uploaded_bytes, images=images)


def file_list(chunks: Iterable[Chunk]) -> dict[str, dict[str, Any]]:
    """Member path -> its size and its chunks' blob digests in order (Manifest.files)."""
    files: dict[str, dict[str, Any]] = {}
    for chunk in sorted(chunks, key=lambda c: (c.path, c.offset)):
        entry = files.setdefault(chunk.path, {"size": 0, "chunks": []})
        entry["size"] += chunk.raw_size
        entry["chunks"].append(chunk.blob.digest)
    return files


# --- pull -----------------------------------------------------------------------------------------

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
        response = client.open_blob(blob.digest, have, blob_deadline(blob.size - have)) if have < blob.size else None
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


def blob_deadline(size: int) -> float:
    """Seconds a download of `size` bytes may take: at least $COMPOSE_CKPT_PULL_MIN_SECONDS, and as long as
    it takes at $COMPOSE_CKPT_PULL_MIN_RATE bytes per second. A registry slower than that is cut off (the
    pull resumes where it stopped)."""
    return max(_env_number(ENV_PULL_MIN_SECONDS, DEFAULT_PULL_MIN_SECONDS),
               size / _env_number(ENV_PULL_MIN_RATE, DEFAULT_PULL_MIN_RATE))


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1
    if not 0 < value < float("inf"):
        raise UsageError(f"{name} must be a positive number, not {text!r}")
    return value


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


# --- retention in the registry --------------------------------------------------------------------

@dataclass
class RegistryPrune:
    removed_tags: list[str] = field(default_factory=list)
    removed_digests: list[str] = field(default_factory=list)


def prune_registry(client: RegistryPort, project_name: str, keep: int, *, tag_prefix: str = "") -> RegistryPrune:
    """Delete (by digest, so the blobs can be collected) this project's artifacts beyond the `keep` newest.

    Only tags that start with `tag_prefix` and point at a compose-ckpt artifact of `project` are
    considered; other tags in the repository are left alone."""
    ours: dict[str, tuple[str, list[str]]] = {}  # digest -> (created, tags)
    for tag in client.tags():
        if not tag.startswith(tag_prefix):
            continue
        try:
            artifact, digest = fetch_artifact(client, tag)
        except (ArchiveError, CkptError):
            continue  # not ours, or gone meanwhile
        if artifact.annotations.get(PROJECT) != project_name:
            continue
        created, tags = ours.get(digest, (artifact.annotations.get(CREATED, ""), []))
        ours[digest] = (created, [*tags, tag])
    newest_first = sorted(ours.items(), key=lambda item: item[1][0], reverse=True)
    result = RegistryPrune()
    for digest, (_, tags) in newest_first[keep:]:
        client.delete_manifest(digest)
        result.removed_digests.append(digest)
        result.removed_tags += tags
    return result
