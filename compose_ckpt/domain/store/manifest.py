"""The manifest: what one stack snapshot holds, written as manifest.json in its folder."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from compose_ckpt.const import HOLDER_SERVICE_SUFFIX, HOLDER_SUFFIX
from compose_ckpt.domain.store.names import NAME_PATTERN
from compose_ckpt.engine.types import RestartPolicy
from compose_ckpt.errors import CkptError, ExitCode

FORMAT_VERSION = 1
_OMITTED_WHEN_EMPTY = ("files", "received", "imported_from", "ipam_given")


class SnapshotStatus(str, Enum):
    INCOMPLETE = "incomplete"  # being written, or its writer was killed: never restored
    COMPLETE = "complete"
    FAILED = "failed"  # rolled back; kept for its error message until pruned
    INVALID = "invalid"  # only in listings: its manifest or files cannot be trusted; never restored


class ManifestError(CkptError):
    """A manifest on disk is unreadable or has been tampered with."""

    exit_code = ExitCode.ARCHIVE


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


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
    reread: int | None = None  # a volume pre-copied while the stack ran: entries read again while frozen


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
class RestoreRecord:
    """The latest restore of a container from the snapshot: how its page images reached CRIU, how fast."""

    at: str  # when it ended (UTC, ISO 8601)
    pages: str  # a PagesRoute value: "container-root" (placed in its root) or "containerd"
    page_bytes: int  # bytes of page images placed in its root (0 through containerd)
    place_seconds: float  # placing the checkpoint where the daemon looks for it (the page copy included)
    restore_seconds: float  # the daemon's restore (`docker start --checkpoint`)


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
    # How its memory reached the store (engine.DumpPath: `runtime` straight from the daemon's own runtime,
    # `engine-api` through the Docker API and copied out after; "" in snapshots older than the choice), and
    # why the direct path was not taken, when it was not.
    dump_path: str = ""
    dump_fallback: str | None = None
    # The restart policy (`always`, `on-failure:3`, ...) a --stop snapshot held back: set to `no` while the
    # stack is down, so a reboot cannot start the container fresh; put back by restore. None: none held back.
    restart_policy: str | None = None
    inspect: dict[str, Any] = field(default_factory=dict, repr=False)  # recorded to recreate the container
    layer: TreeCopy | None = None  # its writable-layer changes (None: not captured, --ignore-rootfs)
    holder: dict[str, Any] | None = field(default=None, repr=False)  # its network holder's inspect, when adopted
    last_restore: RestoreRecord | None = None

    @property
    def held_policy(self) -> RestartPolicy | None:
        return RestartPolicy.from_text(self.restart_policy) if self.restart_policy else None

    @property
    def dump_rate(self) -> float | None:
        """Bytes per second its dump wrote into the store; None when the dump did not write there itself."""
        if self.dump_path != "runtime" or self.dump_seconds <= 0:
            return None
        return self.size / self.dump_seconds


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
    # service -> why it was left out (finished one-shot jobs, never started): restore leaves it alone
    skipped: dict[str, str] = field(default_factory=dict)
    containers: list[ContainerRecord] = field(default_factory=list)
    networks: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # The networks whose IPAM config (subnets, ranges, gateways) the compose files gave: recreated with it.
    ipam_given: list[str] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list, repr=False)
    engine: dict[str, str] = field(default_factory=dict)
    freeze_seconds: float = 0.0
    total_seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase, in order (domain/stack/timing.py)
    error: str | None = None
    volume_records: list[VolumeRecord] = field(default_factory=list)
    binds: list[BindMount] = field(default_factory=list)
    # In a pushed artifact only (domain/transport/push.py): member path -> {"size": bytes, "chunks": [blob digests in
    # order]}, so that the snapshot's own manifest, not the registry's, says what each file is made of.
    files: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    # Set by import and pull on this host (whatever the snapshot says): when it entered this store, and from
    # where. None for a snapshot taken here, which entered the store when it was created.
    received: str | None = None
    imported_from: str | None = None
    format: int = FORMAT_VERSION

    @property
    def size(self) -> int:
        """Bytes on disk: checkpoints, layer copies and volume copies (a shared volume copy counts in each)."""
        return (sum(record.size + (record.layer.stored if record.layer else 0) for record in self.containers)
                + sum(volume.copy.stored for volume in self.volume_records if volume.copy))

    @property
    def entered(self) -> datetime:
        """When the snapshot entered this store: snapshots are ordered by it (`ls`, the latest for `restore`,
        `prune`), so that one made elsewhere with any date is as new as its import, not as its maker says."""
        return parse_time(self.received or self.created)

    @property
    def has_volumes(self) -> bool:
        """Whether the snapshot carries the content of the named volumes (taken with --with-volumes)."""
        return any(volume.copy for volume in self.volume_records)

    @property
    def kind(self) -> str:
        """`clean-stop`: taken with --stop and not rolled back, so the stack ended at this checkpoint and
        nothing it wrote to disk is newer (safe to restore after a reboot, unless it was started since).
        `live`: the stack ran on after it, so its volumes may hold newer data than its memory."""
        return "clean-stop" if self.stopped and self.status in (SnapshotStatus.COMPLETE, SnapshotStatus.INCOMPLETE) else "live"

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["status"] = self.status.value
        # Left out while unset, so that versions before these fields read the snapshots that do not use them.
        for key in _OMITTED_WHEN_EMPTY:
            if not document[key]:
                del document[key]
        return document

    @classmethod
    def from_dict(cls, document: Any, where: str) -> Manifest:
        """Parse and validate; anything off is a ManifestError naming `where`."""
        try:
            if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
                raise ValueError(f"unknown manifest format {document.get('format') if isinstance(document, dict) else None!r}")
            fields = dict(document)
            containers = [_container_record(record) for record in _objects(fields.pop("containers"), "containers")]
            volume_records = [_volume_record(volume) for volume in _objects(fields.pop("volume_records", []), "volume_records")]
            binds = [BindMount(**bind) for bind in _objects(fields.pop("binds", []), "binds")]
            manifest = cls(**fields, containers=containers, volume_records=volume_records, binds=binds)
            manifest.status = SnapshotStatus(manifest.status)
            _validate(manifest)
        except (TypeError, ValueError, KeyError, CkptError) as exc:
            raise ManifestError(f"invalid manifest {where}: {exc}",
                                hint="The snapshot's files were changed by hand or are damaged; remove it with `compose-ckpt rm`.") from exc
        return manifest


def _tree_copy(document: Any) -> TreeCopy | None:
    if document is not None and not isinstance(document, dict):
        raise ValueError("a layer or volume copy must be an object")
    return None if document is None else TreeCopy(**document)


def _container_record(document: dict[str, Any]) -> ContainerRecord:
    fields = dict(document)
    layer = _tree_copy(fields.pop("layer", None))
    restored = fields.pop("last_restore", None)
    if restored is not None and not isinstance(restored, dict):
        raise ValueError("a restore record must be an object")
    return ContainerRecord(**fields, layer=layer, last_restore=RestoreRecord(**restored) if restored else None)


def _volume_record(document: dict[str, Any]) -> VolumeRecord:
    fields = dict(document)
    copy = _tree_copy(fields.pop("copy", None))
    return VolumeRecord(**fields, copy=copy)


def _objects(value: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"{name} must be a list of objects")
    return value


Rule = Callable[[str, Any], None]  # (field name, value) -> None, or raises ValueError saying what is wrong


def _text(pattern: str, max_length: int) -> Rule:
    compiled = re.compile(pattern)

    def check(name: str, value: Any) -> None:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, not {type(value).__name__}")
        if len(value) > max_length or not compiled.fullmatch(value):
            raise ValueError(f"{name} is not a valid value: {value[:80]!r}")
    return check


def _number(high: float, *, integer: bool = False) -> Rule:
    allowed = (int,) if integer else (int, float)

    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}, not {type(value).__name__}")
        if not 0 <= value <= high:  # NaN fails this too
            raise ValueError(f"{name} is out of range (0 to {high:g}): {value!r}")
    return check


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, not {type(value).__name__}")


def _optional(rule: Rule) -> Rule:
    def check(name: str, value: Any) -> None:
        if value is not None:
            rule(name, value)
    return check


def _list_of(rule: Rule, max_items: int, *, unique: bool = False) -> Rule:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, list):
            raise ValueError(f"{name} must be a list, not {type(value).__name__}")
        if len(value) > max_items:
            raise ValueError(f"{name} has {len(value)} items, at most {max_items} are allowed")
        for index, item in enumerate(value):
            rule(f"{name}[{index}]", item)
        if unique and len(set(value)) != len(value):
            raise ValueError(f"{name} lists an item twice")
    return check


def _mapping(key: Rule, value_rule: Rule, max_items: int) -> Rule:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be an object, not {type(value).__name__}")
        if len(value) > max_items:
            raise ValueError(f"{name} has {len(value)} entries, at most {max_items} are allowed")
        for item_key, item in value.items():
            key(f"a key of {name}", item_key)
            value_rule(f"{name}[{item_key!r}]", item)
    return check


def _named_object(pattern: str) -> Rule:
    """A recorded `docker network/volume inspect`: an object whose Name is a valid name."""
    name_rule = _text(pattern, 255)

    def check(name: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be an object, not {type(value).__name__}")
        name_rule(f"the Name of {name}", value.get("Name"))
    return check


def _any_object(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object, not {type(value).__name__}")


def _status(name: str, value: Any) -> None:
    if value is SnapshotStatus.INVALID:
        raise ValueError("status 'invalid' is never written to a manifest")


def _created(name: str, value: Any) -> None:
    _text(r"[0-9T:.+Z-]+", 40)(name, value)
    if parse_time(value).tzinfo is None:
        raise ValueError(f"{name} has no time zone: {value!r}")


_PRINTABLE = r"[^\x00-\x1f\x7f]"
_SERVICE = _text(r"[A-Za-z0-9._-]{1,255}", 255)  # compose's rule for service names
_OBJECT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"  # Docker's rule for network and volume names
_SNAPSHOT_NAME = _text(NAME_PATTERN.pattern.strip("^$"), 100)
MAX_SIZE = 2**50  # 1 PiB of checkpoint files for one container
MAX_SECONDS = 10**7  # about 4 months
MAX_ITEMS = 1000


def _object(rules: dict[str, Rule]) -> Rule:
    """A nested record (a dataclass built from a JSON object): each of its fields by its rule."""
    def check(name: str, value: Any) -> None:
        for field_name, rule in rules.items():
            rule(f"{name}.{field_name}", getattr(value, field_name))
    return check


def _holder_config(name: str, value: Any) -> None:
    """The recorded `docker inspect` of a network holder container, recreated before the container it serves."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object, not {type(value).__name__}")
    _text(f"/{NAME_PATTERN.pattern.strip('^$')}", 101)(f"{name}.Name", value.get("Name"))
    for key in ("Config", "HostConfig"):
        if not isinstance(value.get(key), dict):
            raise ValueError(f"{name} has no {key} object")


def _member_file(name: str, value: Any) -> None:
    """One entry of `files`: a member's size and the digests of its chunk blobs, nothing else."""
    if not isinstance(value, dict) or set(value) != {"size", "chunks"}:
        raise ValueError(f"{name} must be an object with size and chunks")
    _number(MAX_SIZE, integer=True)(f"{name}.size", value["size"])
    _list_of(_text(r"sha256:[0-9a-f]{64}", 71), 100_000)(f"{name}.chunks", value["chunks"])


def _restart_policy(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    RestartPolicy.from_text(value)


_ABSOLUTE_PATH = _text(f"/{_PRINTABLE}{{0,4095}}", 4096)
_SHA256 = _text(r"[0-9a-f]{64}", 64)

# One rule per field: a manifest is what compose-ckpt wrote, or it is refused. A new field needs a rule
# here (tests/unit/test_manifest_validation.py checks that every field has one).
TREE_COPY_RULES: dict[str, Rule] = {
    "size": _number(MAX_SIZE, integer=True),
    "stored": _number(MAX_SIZE, integer=True),
    "seconds": _number(MAX_SECONDS),
    "sha256": _SHA256,
    "reread": _optional(_number(MAX_SIZE, integer=True)),
}
RESTORE_RULES: dict[str, Rule] = {
    "at": _created,
    "pages": _text(r"container-root|containerd", 14),
    "page_bytes": _number(MAX_SIZE, integer=True),
    "place_seconds": _number(MAX_SECONDS),
    "restore_seconds": _number(MAX_SECONDS),
}
RECORD_RULES: dict[str, Rule] = {
    "service": _SERVICE,
    "container_id": _SHA256,  # Docker's container ids are 64 hex digits too
    "container_name": _SNAPSHOT_NAME,
    "number": _number(10**6, integer=True),
    "image": _text(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}", 512),
    "image_id": _text(r"sha256:[0-9a-f]{64}", 71),
    "checkpoint": _SNAPSHOT_NAME,
    "size": _number(MAX_SIZE, integer=True),
    "dump_seconds": _number(MAX_SECONDS),
    "fingerprint": _optional(_text(r"[0-9]{1,20}(:[0-9]{1,20}){4}", 104)),
    "dump_path": _text(r"(runtime|engine-api)?", 10),
    "dump_fallback": _optional(_text(f"{_PRINTABLE}{{0,1000}}", 1000)),
    "inspect": _any_object,
    "layer": _optional(_object(TREE_COPY_RULES)),
    "holder": _optional(_holder_config),
    "restart_policy": _optional(_restart_policy),
    "last_restore": _optional(_object(RESTORE_RULES)),
}
VOLUME_RULES: dict[str, Rule] = {
    "name": _text(_OBJECT_NAME, 255),
    "fingerprint": _optional(_text(r"[0-9]{1,20}(:[0-9]{1,20}){2}", 62)),
    "copy": _optional(_object(TREE_COPY_RULES)),
}
BIND_RULES: dict[str, Rule] = {
    "container": _SNAPSHOT_NAME,
    "source": _ABSOLUTE_PATH,
    "destination": _ABSOLUTE_PATH,
    "read_only": _boolean,
}
MANIFEST_RULES: dict[str, Rule] = {
    "name": _SNAPSHOT_NAME,
    "project": _SNAPSHOT_NAME,
    "created": _created,
    "status": _status,
    "stopped": _boolean,
    "compose_files": _list_of(_ABSOLUTE_PATH, 100),
    "compose_hash": _text(r"([0-9a-f]{64})?", 64),
    "services": _list_of(_SERVICE, MAX_ITEMS, unique=True),
    "dependencies": _mapping(_SERVICE, _list_of(_SERVICE, MAX_ITEMS), MAX_ITEMS),
    "skipped": _mapping(_SERVICE, _text(f"{_PRINTABLE}{{0,2000}}", 2000), MAX_ITEMS),
    "containers": _list_of(_object(RECORD_RULES), MAX_ITEMS),
    "networks": _list_of(_named_object(_OBJECT_NAME), MAX_ITEMS),
    "ipam_given": _list_of(_text(_OBJECT_NAME, 255), MAX_ITEMS, unique=True),
    "volumes": _list_of(_named_object(_OBJECT_NAME), MAX_ITEMS),
    "engine": _mapping(_text(r"[a-z_]{1,40}", 40), _text(f"{_PRINTABLE}{{0,200}}", 200), 40),
    "freeze_seconds": _number(MAX_SECONDS),
    "total_seconds": _number(MAX_SECONDS),
    "phases": _mapping(_text(r"[a-z][a-z0-9_ -]{0,39}", 40), _number(MAX_SECONDS), 40),
    "error": _optional(_text(r"(?s:.)*", 2**20)),
    "volume_records": _list_of(_object(VOLUME_RULES), MAX_ITEMS),
    "binds": _list_of(_object(BIND_RULES), 10 * MAX_ITEMS),
    "received": _optional(_created),
    "imported_from": _optional(_text(f"{_PRINTABLE}{{1,2000}}", 2000)),
    "files": _mapping(_text(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,999}", 1000), _member_file, 100_000),
    "format": _number(FORMAT_VERSION, integer=True),
}


def _holder_names(project: str, record: ContainerRecord) -> set[str]:
    """What the holder of `record` may be named: after its container (the earlier form of adoption), or as
    compose names the container of its holder service (adoptfile.py), `<project>-<service>-net-<number>`."""
    number = re.fullmatch(r"/[^/]*-(\d{1,9})", str(record.holder.get("Name")) if record.holder else "")
    replica = f"-{number.group(1)}" if number else "-1"
    return {f"/{record.container_name}{HOLDER_SUFFIX}", f"/{project}-{record.service}{HOLDER_SERVICE_SUFFIX}{replica}"}


def _validate(manifest: Manifest) -> None:
    """Every field against what compose-ckpt may have written there, and the records against each other."""
    for name, rule in MANIFEST_RULES.items():
        rule(name, getattr(manifest, name))
    for record in manifest.containers:
        if record.service not in manifest.services:
            raise ValueError(f"container {record.container_name} belongs to unknown service {record.service}")
        if record.holder and record.holder.get("Name") not in _holder_names(manifest.project, record):
            raise ValueError(f"the network holder of {record.container_name} is not named after it")
        _check_recorded_config(record)
    names = [record.container_name for record in manifest.containers]
    for what, values in (("container_name", names), ("container_id", [r.container_id for r in manifest.containers]),
                         ("volume name", [volume.name for volume in manifest.volume_records])):
        if len(set(values)) != len(values):
            raise ValueError(f"two entries have the same {what}")
    if any(bind.container not in names for bind in manifest.binds):
        raise ValueError("a bind mount belongs to a container the snapshot does not hold")


def _check_recorded_config(record: ContainerRecord) -> None:
    """The recorded `docker inspect` must describe this very container: restore recreates from it."""
    config = record.inspect
    if not config:
        return  # not recorded: the container can be restored in place, not recreated
    if config.get("Id") != record.container_id or config.get("Name") != f"/{record.container_name}":
        raise ValueError(f"the recorded configuration of {record.container_name} describes another container")
    for key in ("Config", "HostConfig"):
        if not isinstance(config.get(key), dict):
            raise ValueError(f"the recorded configuration of {record.container_name} has no {key} object")
