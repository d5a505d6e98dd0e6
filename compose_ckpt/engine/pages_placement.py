"""A checkpoint placed for a restore on the daemon's host: its page images copied into the container's own
root when it allows it (pages_in_root.py), the other images linked into Docker's checkpoint folder."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from compose_ckpt.engine import pages_in_root
from compose_ckpt.engine.hardlinks import link_or_copy_tree
from compose_ckpt.engine.pages_in_root import BytesCallback, ContainerRoot, PlacedPages
from compose_ckpt.engine.tar_stream import write_upload_id
from compose_ckpt.engine.types import ContainerInfo, PagesRoute, PlacedCheckpoint
from compose_ckpt.errors import CkptError, EngineError

_log = logging.getLogger(__name__)


def container_root(container: ContainerInfo, docker_root_dir: str) -> tuple[ContainerRoot | None, str]:
    """The container's root when the page images can go there, else None and why not."""
    root = ContainerRoot.of(container, docker_root_dir)
    if root is None:
        driver = (container.attrs.get("GraphDriver") or {}).get("Name") or "unknown"
        return None, f"storage driver {driver}"
    return root, ""


def place_here(container_id: str, source: Path, target: Path, root: ContainerRoot | None, why: str,
               on_bytes: BytesCallback, fit_mount_propagation: Callable[[], list[str]],
               early: PlacedPages | None = None) -> PlacedCheckpoint:
    """The checkpoint files of `source` placed at `target` (Docker's checkpoint folder), the page images in
    `root` when it takes them (else `why` not), then fitted to this host's mount propagation. `early`: the
    page images already copied into the root while they were dumped (`place_while_written`), used when they
    are the checkpoint's."""
    placed = None
    if root and early and matches(early, source):
        placed = early
        on_bytes(early.size, early.size)
    elif root:
        placed, why = place_pages(root, source, on_bytes)
    try:
        if placed:
            link_pages(source, target, placed)
        else:
            link_or_copy_tree(source, target)
        write_upload_id(target)
        fitted = fit_mount_propagation()
    except BaseException:
        if root and placed:
            with contextlib.suppress(CkptError):
                remove_pages(root, container_id)
        raise
    if placed is None:
        return PlacedCheckpoint(fitted, PagesRoute.CONTAINERD, 0, why)
    return PlacedCheckpoint(fitted, PagesRoute.CONTAINER_ROOT, placed.size)


def place_pages(root: ContainerRoot, source: Path, on_bytes: BytesCallback) -> tuple[PlacedPages | None, str]:
    """The page images copied into the container's root; else None (containerd's way) and why."""
    images = pages_in_root.page_images(source)
    if not images:
        return None, "no page images"
    try:
        return pages_in_root.place(root, images, on_bytes), ""
    except OSError as exc:  # a full or read-only layer: containerd's way still works
        return None, f"the container's root takes no new files ({exc.strerror or exc})"


def matches(placed: PlacedPages, source: Path) -> bool:
    """Whether the page images `placed` are those of the checkpoint in `source`, by name and size."""
    images = pages_in_root.page_images(source)
    return sorted(placed.names) == [image.name for image in images] and placed.size == sum(
        image.stat().st_size for image in images)


def link_pages(source: Path, target: Path, placed: PlacedPages) -> None:
    """A checkpoint folder `target` like `source` whose `pages-N.img` are links to the copies `placed`
    in the container's root (followed by CRIU inside the container's mount namespace)."""
    link_or_copy_tree(source, target, leave_out=lambda path: path.parent == source and path.name in placed.names)
    for image in placed.names:
        os.symlink(f"{placed.folder}/{image}", target / image)


def linked_copy(container_id: str, folder: Path, root: ContainerRoot) -> str | None:
    """The name of a sibling of the checkpoint `folder` whose small images are hard links to its own and whose
    `pages-N.img` are links to copies placed in `root`; None when the page images cannot go there."""
    placed, _ = place_pages(root, folder, lambda done, total: None)
    if placed is None:
        return None
    sibling = f"{folder.name}.{secrets.token_hex(4)}"
    try:
        link_pages(folder, folder.parent / sibling, placed)
    except OSError as exc:
        _log.warning("cannot link checkpoint %s for a restore through the container's root: %s", folder.name, exc)
        with contextlib.suppress(OSError):
            shutil.rmtree(folder.parent / sibling)
        with contextlib.suppress(CkptError):
            remove_pages(root, container_id)
        return None
    return sibling


def remove_pages(root: ContainerRoot, container_id: str) -> list[str]:
    try:
        return pages_in_root.remove(root)
    except OSError as exc:
        raise EngineError(f"cannot remove the page images placed in the root of {container_id[:12]}: {exc}") from exc
