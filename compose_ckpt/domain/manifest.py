"""The manifest: what one stack snapshot holds, written as manifest.json in its folder."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, UTC
from enum import Enum
from typing import Any

from compose_ckpt.errors import CkptError, UsageError

FORMAT_VERSION = 1
# Docker's own rule for checkpoint names, and safe as a folder name.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class SnapshotStatus(str, Enum):
    INCOMPLETE = "incomplete"  # being written, or its writer was killed: never restored
    COMPLETE = "complete"
    FAILED = "failed"  # rolled back; kept for its error message until pruned


class ManifestError(CkptError):
    """A manifest on disk is unreadable or has been tampered with."""


def validate_name(name: str, what: str = "snapshot name") -> str:
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f"invalid {what} {name!r}",
            hint="Use 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit.",
        )
    return name


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class TreeCopy:
    """A file tree copied while the stack was frozen: a container's writable-layer changes or a named volume.

    Stored as a zstd-compressed tar in the snapshot folder (see `domain.filesystem`)."""

    size: int  # bytes of the tree (the uncompressed tar)
    stored: int  # bytes of its compressed copy
    seconds: float  # time the copy took, inside the frozen window
    sha256: str  # of the uncompressed tar: equal trees are stored once, shared by hard links


@dataclass
class VolumeRecord:
    """A named volume the snapshot's containers mount."""

    name: str
    fingerprint: str | None = None  # files, bytes and newest mtime at the snapshot, when the engine is local
    copy: TreeCopy | None = None  # its content, with --with-volumes


@dataclass
class BindMount:
    """A host path mounted into a container: never copied, the host must provide it."""

    container: str
    source: str
    destination: str
    read_only: bool


@dataclass
class ContainerRecord:
    """One container of the snapshot and its checkpoint."""

    service: str
    container_id: str
    container_name: str
    number: int
    image: str
    image_id: str
    checkpoint: str  # the checkpoint's name inside Docker while it is placed there
    size: int = 0
    dump_seconds: float = 0.0
    fingerprint: str | None = None  # ProcessFingerprint.as_text() of the init process, when readable
    inspect: dict[str, Any] = field(default_factory=dict, repr=False)  # recorded to recreate the container
    layer: TreeCopy | None = None  # its writable-layer changes (None: not captured, --ignore-rootfs)
    holder: dict[str, Any] | None = field(default=None, repr=False)  # its network holder's inspect, when adopted


@dataclass
class Manifest:
    name: str
    project: str
    created: str
    status: SnapshotStatus
    stopped: bool  # taken with --stop: the stack was left stopped
    compose_files: list[str]
    compose_hash: str
    services: list[str]
    dependencies: dict[str, list[str]]  # service -> services it depends on, for restore order
    containers: list[ContainerRecord] = field(default_factory=list)
    networks: list[dict[str, Any]] = field(default_factory=list, repr=False)
    volumes: list[dict[str, Any]] = field(default_factory=list, repr=False)
    engine: dict[str, str] = field(default_factory=dict)
    freeze_seconds: float = 0.0
    total_seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase, in order (domain/timing.py)
    error: str | None = None
    volume_records: list[VolumeRecord] = field(default_factory=list)
    binds: list[BindMount] = field(default_factory=list)
    format: int = FORMAT_VERSION

    @property
    def size(self) -> int:
        """Bytes on disk: checkpoints, layer copies and volume copies (a shared volume copy counts in each)."""
        return (sum(record.size + (record.layer.stored if record.layer else 0) for record in self.containers)
                + sum(volume.copy.stored for volume in self.volume_records if volume.copy))

    @property
    def has_volumes(self) -> bool:
        """Whether the snapshot carries the content of the named volumes (taken with --with-volumes)."""
        return any(volume.copy for volume in self.volume_records)

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["status"] = self.status.value
        return document

    @classmethod
    def from_dict(cls, document: Any, where: str) -> Manifest:
        """Parse and validate; anything off is a ManifestError naming `where`."""
        try:
            if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
                raise ValueError(f"unknown manifest format {document.get('format') if isinstance(document, dict) else None!r}")
            fields = dict(document)
            containers = [_container_record(record) for record in fields.pop("containers")]
            volume_records = [_volume_record(volume) for volume in fields.pop("volume_records", [])]
            binds = [BindMount(**bind) for bind in fields.pop("binds", [])]
            manifest = cls(**fields, containers=containers, volume_records=volume_records, binds=binds)
            manifest.status = SnapshotStatus(manifest.status)
            _check_types(manifest)
            validate_name(manifest.name)
            validate_name(manifest.project, "project name")
            for volume in volume_records:
                validate_name(volume.name, "volume name")
            for record in containers:
                validate_name(record.container_name, "container name")
                validate_name(record.checkpoint, "checkpoint name")
                if record.service not in manifest.services:
                    raise ValueError(f"container {record.container_name} belongs to unknown service {record.service}")
        except (TypeError, ValueError, KeyError, CkptError) as exc:
            raise ManifestError(f"invalid manifest {where}: {exc}",
                                hint="The snapshot's files were changed by hand or are damaged; remove it with `compose-ckpt rm`.") from exc
        return manifest


def _tree_copy(document: Any) -> TreeCopy | None:
    return None if document is None else TreeCopy(**document)


def _container_record(document: dict[str, Any]) -> ContainerRecord:
    fields = dict(document)
    layer = _tree_copy(fields.pop("layer", None))
    return ContainerRecord(**fields, layer=layer)


def _volume_record(document: dict[str, Any]) -> VolumeRecord:
    fields = dict(document)
    copy = _tree_copy(fields.pop("copy", None))
    return VolumeRecord(**fields, copy=copy)


_NUMBER = (int, float)
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "project": (str,), "created": (str,), "stopped": (bool,), "compose_files": (list,),
    "compose_hash": (str,), "services": (list,), "dependencies": (dict,), "networks": (list,), "volumes": (list,),
    "engine": (dict,), "phases": (dict,), "freeze_seconds": _NUMBER, "total_seconds": _NUMBER, "error": (str, type(None)),
}
_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "service": (str,), "container_id": (str,), "container_name": (str,), "number": (int,), "image": (str,),
    "image_id": (str,), "checkpoint": (str,), "size": (int,), "dump_seconds": _NUMBER,
    "fingerprint": (str, type(None)), "inspect": (dict,), "holder": (dict, type(None)),
}
_TREE_TYPES: dict[str, tuple[type, ...]] = {"size": (int,), "stored": (int,), "seconds": _NUMBER, "sha256": (str,)}
_VOLUME_TYPES: dict[str, tuple[type, ...]] = {"name": (str,), "fingerprint": (str, type(None))}
_BIND_TYPES: dict[str, tuple[type, ...]] = {"container": (str,), "source": (str,), "destination": (str,),
                                            "read_only": (bool,)}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_NUMBER = 2**63  # sizes and seconds are printed as floats: a larger int would overflow


def _check_types(manifest: Manifest) -> None:
    """Every field of the right JSON type, as the commands that print, sort and prune snapshots expect."""
    owners: list[tuple[object, dict[str, tuple[type, ...]]]] = [(manifest, _MANIFEST_TYPES)]
    owners += [(record, _RECORD_TYPES) for record in manifest.containers]
    owners += [(volume, _VOLUME_TYPES) for volume in manifest.volume_records]
    owners += [(bind, _BIND_TYPES) for bind in manifest.binds]
    copies = [record.layer for record in manifest.containers] + [volume.copy for volume in manifest.volume_records]
    owners += [(copy, _TREE_TYPES) for copy in copies if copy is not None]
    for owner, types in owners:
        for name, allowed in types.items():
            value = getattr(owner, name)
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise ValueError(f"{name} must be {' or '.join(t.__name__ for t in allowed)}, not {type(value).__name__}")
            if isinstance(value, (int, float)) and not 0 <= value <= _MAX_NUMBER:
                raise ValueError(f"{name} is out of range: {value!r}")
    texts = [*manifest.compose_files, *manifest.services, *manifest.engine.values()]
    texts += [dep for deps in manifest.dependencies.values() for dep in (deps if isinstance(deps, list) else [None])]
    if not all(isinstance(text, str) for text in texts):
        raise ValueError("compose_files, services, engine and dependencies must hold strings (dependencies: lists)")
    if not all(isinstance(seconds, _NUMBER) and not isinstance(seconds, bool) and 0 <= seconds <= _MAX_NUMBER
               for seconds in manifest.phases.values()):
        raise ValueError("phases must map phase names to seconds")
    if not all(isinstance(item, dict) for item in [*manifest.networks, *manifest.volumes]):
        raise ValueError("networks and volumes must be lists of objects")
    if not all(_SHA256.fullmatch(copy.sha256) for copy in copies if copy is not None):
        raise ValueError("a layer or volume copy has no valid sha256")
    if datetime.fromisoformat(manifest.created.replace("Z", "+00:00")).tzinfo is None:
        raise ValueError(f"created has no time zone: {manifest.created!r}")
