"""A placed checkpoint fitted to the mount propagation of the host that restores it.

On a host whose mounts are shared (systemd's default; Docker makes its data root shared), the
container's root file system and its volumes are slaves of the host's mounts, and CRIU records
that. On restore it joins each to the peer group of its source here, and the kernel refuses a
private source: `mnt-v2: Failed to copy sharing from ...: Invalid argument`. A container started
fresh here would get private mounts there, so the restored one gets the same: each mount's link to a
peer group outside the container that this host cannot give it back is dropped. The files are
replaced, not rewritten: the store's copy may be a hard link to them.
"""

from __future__ import annotations

import os
from pathlib import Path

from compose_ckpt.engine import procfs
from compose_ckpt.engine.criu_images import (
    MOUNT_IMAGES,
    CriuMount,
    MountImageError,
    external_slaves,
    read_mounts,
    without_masters,
)
from compose_ckpt.engine.types import ContainerInfo

# A mount image of the checkpoint, its bytes, and its mounts that are slaves of a peer group outside.
LinkedMounts = dict[Path, tuple[bytes, list[CriuMount]]]


def linked_outside(folder: Path) -> LinkedMounts:
    """The checkpoint's mount images (in `folder`) with mounts linked to a peer group outside the container."""
    linked: LinkedMounts = {}
    for image in sorted(folder.glob(MOUNT_IMAGES)):
        try:
            data = image.read_bytes()
            outside = external_slaves(read_mounts(data))
        except (OSError, MountImageError):
            continue  # not as this reader knows them: left to CRIU as they are
        if outside:
            linked[image] = (data, outside)
    return linked


def fit(linked: LinkedMounts, table: list[procfs.HostMount], container: ContainerInfo) -> list[str]:
    """Drop the links this host (its mount table `table`) cannot give back; returns their container paths."""
    fitted: list[str] = []
    for image, (data, outside) in linked.items():
        private = {m.mnt_id: m.mountpoint for m in outside if _private_here(table, container, m.mountpoint)}
        if private:
            replacement = image.with_name(image.name + ".fitted")
            replacement.write_bytes(without_masters(data, set(private)))
            os.replace(replacement, image)
            fitted += private.values()
    return fitted


def _private_here(table: list[procfs.HostMount], container: ContainerInfo, mountpoint: str) -> bool:
    """Whether the source of the container's mount at `mountpoint` cannot be a peer group member here.
    Unknown sources (no mount table, a storage driver that does not say) count as fine: left as recorded."""
    if mountpoint == "/":
        source, mounted_later = container.rootfs_dir, True
    else:
        source, mounted_later = container.mount_sources.get(mountpoint), False
    return source is not None and procfs.can_join_peer_group(table, source, mounted_later) is False
