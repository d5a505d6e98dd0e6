"""A snapshot as an OCI artifact: the media types, and the image manifest that lists its blobs.

    artifactType  application/vnd.compose-ckpt.snapshot.v1
    config        application/vnd.compose-ckpt.snapshot.manifest.v1+json   the snapshot's manifest.json, as is
    layers        application/vnd.compose-ckpt.chunk.v1+zstd               one zstd frame each: bytes
                  [offset, offset + size) of one member of the archive layout (domain/transport/archive.py),
                  annotated org.opencontainers.image.title=<member path>,
                  compose-ckpt.offset=<offset>, compose-ckpt.size=<uncompressed size>

Members are cut into chunks of at most CHUNK_SIZE bytes, compressed on their own
and deterministically, so an unchanged chunk has the same digest in the next
snapshot and is not uploaded again. An empty member is one empty chunk. A chunk
that does not compress (random memory, the layer and volume copies, zstd
already) is a frame of raw blocks without content checksum: any zstd reader
reads it, and the blob's sha256 covers it.

Reading trusts nothing: every name is checked against the archive layout,
chunks must cover each member from 0 without gaps or overlaps, and every size
is bounded before a byte is downloaded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from compose_ckpt.domain.transport.archive import MANIFEST, MAX_MEMBERS, SUMS, check_name
from compose_ckpt.errors import ArchiveError, CkptError
from compose_ckpt.registry.client import OCI_MANIFEST
from compose_ckpt.registry.reference import DIGEST_PATTERN

ARTIFACT_TYPE = "application/vnd.compose-ckpt.snapshot.v1"
CONFIG_MEDIA_TYPE = "application/vnd.compose-ckpt.snapshot.manifest.v1+json"
CHUNK_MEDIA_TYPE = "application/vnd.compose-ckpt.chunk.v1+zstd"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
OFFSET = "compose-ckpt.offset"
RAW_SIZE = "compose-ckpt.size"
PROJECT = "compose-ckpt.project"
SNAPSHOT = "compose-ckpt.snapshot"

CHUNK_SIZE = 16 * 1024**2
# Chunks pushed or pulled at once: zstd, sha256 and sockets release the GIL; uploads wait on the registry.
WORKERS = max(4, min(8, (os.cpu_count() or 2) + 1))
MAX_CONFIG_BYTES = 64 * 1024**2
MAX_TOTAL_BYTES = 64 * 1024**3  # as for archives
_DECIMAL = re.compile(r"[0-9]{1,18}")
_MAX_COMPRESSED = CHUNK_SIZE + CHUNK_SIZE // 64 + 65536  # above zstd's worst case for one chunk


@dataclass(frozen=True)
class Blob:
    digest: str  # sha256:<hex> of the stored (compressed) bytes
    size: int


@dataclass(frozen=True)
class Chunk:
    path: str  # member path in the archive layout
    offset: int
    raw_size: int
    blob: Blob


@dataclass(frozen=True)
class Artifact:
    config: Blob
    members: dict[str, list[Chunk]]  # path -> chunks in offset order
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def raw_bytes(self) -> int:
        return sum(chunk.raw_size for chunks in self.members.values() for chunk in chunks)

    @property
    def blobs(self) -> list[Blob]:
        """Each distinct blob once, config first."""
        unique = {self.config.digest: self.config}
        for chunks in self.members.values():
            unique.update((chunk.blob.digest, chunk.blob) for chunk in chunks)
        return list(unique.values())


def build_manifest(config: Blob, chunks: Iterable[Chunk], annotations: dict[str, str]) -> bytes:
    """The OCI image manifest of the artifact, layers in member and offset order (deterministic bytes)."""
    layers = [
        {"mediaType": CHUNK_MEDIA_TYPE, "digest": chunk.blob.digest, "size": chunk.blob.size,
         "annotations": {TITLE: chunk.path, OFFSET: str(chunk.offset), RAW_SIZE: str(chunk.raw_size)}}
        for chunk in sorted(chunks, key=lambda c: (c.path, c.offset))
    ]
    document = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config.digest, "size": config.size},
        "layers": layers, "annotations": dict(sorted(annotations.items())),
    }
    return json.dumps(document, separators=(",", ":")).encode()


def parse_manifest(body: bytes, where: str) -> Artifact:
    """Validate an artifact manifest from a registry; anything off is an ArchiveError (exit 7) naming `where`."""
    try:
        document = json.loads(body)
        return _parse(document)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, CkptError) as exc:
        if isinstance(exc, ArchiveError) and exc.message.startswith(where):
            raise
        raise ArchiveError(f"{where} is not a usable compose-ckpt snapshot: {exc}") from exc


def _parse(document: Any) -> Artifact:
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        raise ValueError("not an OCI image manifest (schemaVersion 2)")
    kind = document.get("artifactType") or document.get("config", {}).get("mediaType")
    if kind not in (ARTIFACT_TYPE, CONFIG_MEDIA_TYPE):
        raise ValueError(f"its artifact type is {kind!r}, not {ARTIFACT_TYPE}")
    config = document["config"]
    if config.get("mediaType") != CONFIG_MEDIA_TYPE:
        raise ValueError(f"its config is {config.get('mediaType')!r}, not {CONFIG_MEDIA_TYPE}")
    config_blob = _blob(config, MAX_CONFIG_BYTES)
    layers = document["layers"]
    if not isinstance(layers, list) or len(layers) > MAX_MEMBERS * 4:
        raise ValueError("layers must be a list of at most a few hundred thousand entries")
    members: dict[str, list[Chunk]] = {}
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != CHUNK_MEDIA_TYPE:
            raise ValueError(f"a layer of media type {layer.get('mediaType') if isinstance(layer, dict) else None!r}")
        notes = layer.get("annotations") or {}
        path = notes.get(TITLE)
        if not isinstance(path, str) or path in (MANIFEST, SUMS):
            raise ArchiveError(f"unsafe artifact member {path!r}: not part of the layout")
        check_name(path)
        chunk = Chunk(path, _number(notes.get(OFFSET), OFFSET), _number(notes.get(RAW_SIZE), RAW_SIZE),
                      _blob(layer, _MAX_COMPRESSED))
        if chunk.raw_size > CHUNK_SIZE:
            raise ValueError(f"a chunk of {path} declares {chunk.raw_size} bytes (at most {CHUNK_SIZE})")
        members.setdefault(path, []).append(chunk)
    if len(members) > MAX_MEMBERS:
        raise ValueError(f"more than {MAX_MEMBERS} members")
    for path, chunks in members.items():
        chunks.sort(key=lambda c: c.offset)
        expected = 0
        for chunk in chunks:
            if chunk.offset != expected or (chunk.raw_size == 0 and len(chunks) > 1):
                raise ArchiveError(f"the chunks of artifact member {path!r} leave a gap or overlap at byte {expected}")
            expected += chunk.raw_size
    artifact = Artifact(config_blob, members, {str(k): str(v) for k, v in (document.get("annotations") or {}).items()})
    if artifact.raw_bytes > MAX_TOTAL_BYTES:
        raise ValueError(f"it declares {artifact.raw_bytes} bytes, beyond the limit of {MAX_TOTAL_BYTES}")
    return artifact


def _blob(descriptor: Any, limit: int) -> Blob:
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
        raise ValueError(f"bad digest {str(digest)[:80]!r} (only sha256 is accepted)")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= limit:
        raise ValueError(f"blob {digest} declares size {size!r} (at most {limit})")
    return Blob(digest, size)


def _number(text: Any, name: str) -> int:
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
        raise ValueError(f"annotation {name} must be a decimal number, not {str(text)[:40]!r}")
    return int(text)
