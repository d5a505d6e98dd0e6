"""CRIU's mount images: which mounts of a checkpoint were slaves of a mount outside the container, and the
same image with that link dropped for some of them.

`mountpoints-<id>.img` (one per mount namespace) is CRIU's common magic and the image's own magic (two
little-endian u32), then one record per mount: a little-endian u32 length and a protobuf `mnt_entry`
(criu/images/mnt.proto). Only `mnt_id`, `mountpoint`, `shared_id` and `master_id` are read here; a record
is rewritten by leaving out its `master_id` field, every other field copied byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

MOUNT_IMAGES = "mountpoints-*.img"
_MAGIC = struct.pack("<II", 0x54564319, 0x55563928)  # IMG_COMMON_MAGIC, MNTS_MAGIC (criu/include/magic.h)
_MNT_ID, _MOUNTPOINT, _SHARED_ID, _MASTER_ID = 2, 7, 10, 11  # mnt_entry's field numbers
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5  # protobuf wire types


class MountImageError(ValueError):
    """Not a mount image as CRIU writes it."""


@dataclass(frozen=True)
class CriuMount:
    mnt_id: int
    mountpoint: str  # inside the container: "/" is its root file system
    shared_id: int  # its peer group, 0: none
    master_id: int  # the peer group it receives mounts from (a slave), 0: none


def read_mounts(image: bytes) -> list[CriuMount]:
    mounts = []
    for record in _records(image):
        fields = {number: value for number, value, _ in _fields(record)}
        mountpoint = fields.get(_MOUNTPOINT, b"")
        mnt_id, shared_id, master_id = (fields.get(n, 0) for n in (_MNT_ID, _SHARED_ID, _MASTER_ID))
        if not isinstance(mountpoint, bytes) or not all(isinstance(v, int) for v in (mnt_id, shared_id, master_id)):
            raise MountImageError("a mount record has a field of the wrong type")
        mounts.append(CriuMount(int(mnt_id), mountpoint.decode(errors="surrogateescape"), int(shared_id),
                                int(master_id)))
    return mounts


def external_slaves(mounts: list[CriuMount]) -> list[CriuMount]:
    """The mounts that were slaves of a peer group outside the container (on a host whose mounts are shared,
    the root file system and the volumes under Docker's folder are). On restore CRIU joins each to the peer
    group of its source on that host (the new root file system, the volume's folder), which must be shared
    or a slave itself: the kernel refuses a private one (`mnt-v2: Failed to copy sharing ...: Invalid argument`)."""
    inside = {m.shared_id for m in mounts if m.shared_id}
    return [m for m in mounts if m.master_id and m.master_id not in inside]


def without_masters(image: bytes, mnt_ids: set[int]) -> bytes:
    """`image` with the mounts `mnt_ids` no longer slaves of anything: CRIU restores them private."""
    out = bytearray(_MAGIC)
    for record in _records(image):
        fields = list(_fields(record))
        if any(number == _MNT_ID and value in mnt_ids for number, value, _ in fields):
            record = b"".join(raw for number, _, raw in fields if number != _MASTER_ID)
        out += struct.pack("<I", len(record)) + record
    return bytes(out)


def _records(image: bytes) -> Iterator[bytes]:
    if image[:8] != _MAGIC:
        raise MountImageError("not a CRIU mount image (wrong magic)")
    offset = 8
    while offset < len(image):
        if offset + 4 > len(image):
            raise MountImageError("a record's length is cut off")
        (size,) = struct.unpack_from("<I", image, offset)
        offset += 4
        if offset + size > len(image):
            raise MountImageError("a record is cut off")
        yield image[offset:offset + size]
        offset += size


def _fields(record: bytes) -> Iterator[tuple[int, int | bytes, bytes]]:
    """(field number, value, the field's own bytes) of a protobuf message."""
    offset = 0
    while offset < len(record):
        start = offset
        key, offset = _varint(record, offset)
        wire_type: int = key & 7
        value: int | bytes
        if wire_type == _VARINT:
            value, offset = _varint(record, offset)
        elif wire_type == _BYTES:
            size, offset = _varint(record, offset)
            value, offset = record[offset:offset + size], offset + size
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            value, offset = record[offset:offset + size], offset + size
        else:
            raise MountImageError(f"unknown protobuf wire type {wire_type}")
        if offset > len(record):
            raise MountImageError("a field is cut off")
        yield key >> 3, value, record[start:offset]


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise MountImageError("a number is cut off")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, offset
