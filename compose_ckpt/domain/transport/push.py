"""push: a snapshot into an OCI registry, as the artifact domain/transport/artifact.py describes; and prune there.

push hands the snapshot's members (the same list `export` archives) to a
writer that cuts them into chunks, compresses each on a worker thread, asks the
registry whether it has the chunk's digest (HEAD) and uploads only what it
lacks. At most a few chunks are in memory at once, whatever the snapshot's size.
The sidecar prunes after it pushes: `prune_registry` deletes a project's
artifacts beyond the newest few. Pulling is pull.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import zstandard

from compose_ckpt.domain.stack.parallel import ProgressCallback, SharedCount, bytes_reporter
from compose_ckpt.domain.store.manifest import Manifest
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.archive import MANIFEST, MemberWriter, check_name
from compose_ckpt.domain.transport.artifact import (
    CHUNK_SIZE,
    CREATED,
    PROJECT,
    SNAPSHOT,
    WORKERS,
    Blob,
    Chunk,
    build_manifest,
)
from compose_ckpt.domain.transport.pull import fetch_artifact
from compose_ckpt.domain.transport.transfer import exportable, write_members
from compose_ckpt.errors import ArchiveError, CkptError

if TYPE_CHECKING:
    from compose_ckpt.domain.ports import EnginePort, RegistryPort

_ZSTD_LEVEL = 3  # as export
_SAMPLE_PAGES, _PAGE = 64, 4096  # what is compressed to tell whether a chunk compresses
_ZSTD_MAGIC = (0xFD2FB528).to_bytes(4, "little")
_STORED_HEADER = 10  # magic, frame header descriptor, window descriptor, 4-byte content size
_STORED_BLOCK = 128 * 1024  # zstd's largest block


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
