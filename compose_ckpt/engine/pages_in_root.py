"""A restore's page images put inside the container's own root, so that containerd never copies them.

Why. `docker start --checkpoint` tars the checkpoint folder into containerd's content store and
untars it into a temp folder before CRIU reads it: every byte of process memory is written twice
more. CRIU's restorer reads `pages-*.img` from inside the restored task, after it has entered the
container's mount namespace; a symbolic link `pages-N.img -> /<folder>/pages-N.img` in the checkpoint
is followed there. So the page images go into the container's root file system for the duration of
the restore, and only the small images (and those links) take containerd's way.

Contract.
- Used on the daemon's host for a container whose root is an overlay2 layer (`MergedDir` and
  `UpperDir` under the daemon's `overlay2/` folder); anything else takes containerd's way (`fits`).
- The root as the host sees it now: the overlay's `MergedDir` when it is mounted (Docker mounts it
  while the container runs), else its `UpperDir`, which the overlay shows at `/` once mounted. The
  upper folder is never changed under a mounted overlay.
- The folder is `/.compose-ckpt-pages-<32 hex digits>`, made by mkdir at the top of that root (which
  fails on any existing entry), root-owned, 0700; each page image is copied into it (copy_file_range),
  created with O_CREAT|O_EXCL|O_NOFOLLOW through the folder's descriptor, 0600.
- Never a hard link to the store's file: the restored processes run before the folder is removed,
  and a shared file would let them write the store's copy of their memory.
- The container may be hostile and owns everything inside its root: every step below the root goes
  through descriptors, one name at a time, never following a link; removal is `shutil.rmtree` with
  `dir_fd` (descriptor-based on Linux). The worst a container can do to these files (replace, swap,
  plant links) is to spoil the memory it gets back itself: CRIU reads them inside its mount namespace.
- Removed right after the restore, success or failure (`remove`, which takes every folder with the
  prefix at the top of the root, so a run killed earlier is cleaned up too); the writable-layer copy
  of a snapshot leaves such folders out (engine/trees.py).

Through the Docker API (an engine on another host, or reached over tcp). The same folder, with a fresh
random name, reaches the top of the container's root as a tar sent to the engine's archive endpoint
(`pages_tar`; the container is created and not running, and the daemon unpacks inside the container's
root, so nothing in it leads out), while the checkpoint's `pages-N.img` go as links to it through the
checkpoint helper. After the restore the folder is replaced by an empty file of the same name
(`emptied_tar`: the archive endpoint removes what a member of another type replaces, and nothing can
remove a name through the API), which frees the page images; that empty file is what stays in the root.
The folder names placed this way are known only to the process that placed them: one killed between
placing and removing leaves the page images in the container's root until the container is removed (a
failed or killed `migrate` removes the containers it created on the target).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from compose_ckpt.engine.api import BodyPart, FileBody, GrowingBody
from compose_ckpt.engine.pages_stream import ordered_page_images
from compose_ckpt.engine.types import ContainerInfo, DumpProgress

FOLDER_PREFIX = ".compose-ckpt-pages-"
PAGES = re.compile(r"pages-\d+\.img")
_CHUNK = 64 * 1024**2
_GROWTH_POLL_SECONDS = 0.02  # how often the images of a running dump are looked at again
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# Called with (bytes placed so far, bytes to place) while the pages are copied.
BytesCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ContainerRoot:
    """Where the host reaches a container's overlay2 root file system."""

    merged: Path  # the overlay's mount point (mounted while the container runs)
    upper: Path  # its writable layer

    @classmethod
    def of(cls, container: ContainerInfo, docker_root: str) -> ContainerRoot | None:
        """The container's root when it is an overlay2 layer of this daemon, else None."""
        driver = container.attrs.get("GraphDriver") or {}
        data = driver.get("Data") or {}
        if driver.get("Name") != "overlay2" or not data.get("MergedDir") or not data.get("UpperDir"):
            return None
        merged, upper = Path(str(data["MergedDir"])), Path(str(data["UpperDir"]))
        layers = Path(docker_root, "overlay2")
        # Only folders where the daemon keeps layers: the daemon's own path, never one that leads elsewhere.
        if not (merged.parent == upper.parent and merged.parent.parent == layers and ".." not in merged.parts
                and ".." not in upper.parts):
            return None
        return cls(merged, upper)

    @contextmanager
    def opened(self) -> Iterator[int]:
        """A descriptor of the root as the host sees it now (see the module's contract)."""
        layer = os.open(self.merged.parent, _DIRECTORY)
        try:
            folder = self.merged.name if _is_mount_point(layer, self.merged.name) else self.upper.name
            descriptor = os.open(folder, _DIRECTORY, dir_fd=layer)
        finally:
            os.close(layer)
        try:
            yield descriptor
        finally:
            os.close(descriptor)


def _is_mount_point(parent: int, name: str) -> bool:
    try:
        below = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return below.st_dev != os.fstat(parent).st_dev


@dataclass(frozen=True)
class PlacedPages:
    folder: str  # the folder's path inside the container, e.g. /.compose-ckpt-pages-0123...
    names: list[str]  # the page images placed there
    size: int  # their bytes


def page_images(source: Path) -> list[Path]:
    """The page images in a checkpoint folder (regular files only; links are left to the caller's checks)."""
    return sorted(path for path in source.iterdir() if PAGES.fullmatch(path.name) and not path.is_symlink()
                  and path.is_file())


def place(root: ContainerRoot, images: list[Path], on_bytes: BytesCallback) -> PlacedPages:
    """Copy `images` into a new folder at the top of the container's root; on failure nothing stays."""
    total = sum(image.stat().st_size for image in images)
    done = 0
    with root.opened() as top:
        name = _new_folder(top)
        try:
            folder = os.open(name, _DIRECTORY, dir_fd=top)
            on_bytes(0, total)
            try:
                for image in images:
                    done = _copy_into(image, folder, done, total, on_bytes)
            finally:
                os.close(folder)
        except BaseException:
            with contextlib.suppress(OSError):
                shutil.rmtree(name, dir_fd=top)
            raise
    return PlacedPages(f"/{name}", [image.name for image in images], total)


def place_while_written(root: ContainerRoot, source: Path, dump: DumpProgress,
                        on_bytes: BytesCallback) -> PlacedPages | None:
    """`place` for the page images CRIU is writing into `source`: each is copied as it grows (CRIU only appends
    to an image, and finishes one before it starts the next: engine/pages_stream.py), until the dump ends.
    None (nothing left in the root) when the dump failed; on an error nothing stays either."""
    copied: dict[str, int] = {}
    with root.opened() as top:
        name = _new_folder(top)
        try:
            folder = os.open(name, _DIRECTORY, dir_fd=top)
            try:
                while True:
                    ended = dump.ended.is_set()  # read before the sizes: once ended, they are final
                    before = sum(copied.values())
                    for image in ordered_page_images(source):
                        _copy_grown(image, folder, copied)
                    if sum(copied.values()) != before:
                        on_bytes(sum(copied.values()), 0)
                    if ended:
                        break
                    time.sleep(_GROWTH_POLL_SECONDS)
            finally:
                os.close(folder)
            if not dump.ok:
                shutil.rmtree(name, dir_fd=top)
                return None
        except BaseException:
            with contextlib.suppress(OSError):
                shutil.rmtree(name, dir_fd=top)
            raise
    return PlacedPages(f"/{name}", list(copied), sum(copied.values()))


def _copy_grown(image: Path, folder: int, copied: dict[str, int]) -> None:
    """Copy what `image` gained since the last call (`copied` holds the bytes copied so far of each image)."""
    source = os.open(image, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(source).st_size
        done = copied.get(image.name)
        if done == size:
            return
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if done is None else 0)
        target = os.open(image.name, flags, 0o600, dir_fd=folder)
        try:
            done = done or 0
            while done < size:
                step = _copy_chunk(source, target, done, min(_CHUNK, size - done), done)
                if step == 0:
                    break
                done += step
        finally:
            os.close(target)
        copied[image.name] = done
    finally:
        os.close(source)


def _new_folder(top: int) -> str:
    for _ in range(5):
        name = new_folder_name()
        try:
            os.mkdir(name, 0o700, dir_fd=top)  # mkdir never follows a link, and fails on anything already there
            return name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free name for the page images in the container's root")


def _copy_into(image: Path, folder: int, done: int, total: int, on_bytes: BytesCallback) -> int:
    source = os.open(image, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        target = os.open(image.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=folder)
        try:
            size = os.fstat(source).st_size
            copied = 0
            while copied < size:
                step = _copy_chunk(source, target, copied, min(_CHUNK, size - copied))
                if step == 0:
                    break  # the file shrank: CRIU's own check of the image fails the restore
                copied += step
                done += step
                on_bytes(done, total)
        finally:
            os.close(target)
    finally:
        os.close(source)
    return done


def _copy_chunk(source: int, target: int, offset: int, count: int, at: int | None = None) -> int:
    """In-kernel copy (copy_file_range; sendfile where the two file systems refuse it) of `count` bytes from
    `offset`, written at `at` (None: at the target's current position)."""
    try:
        return os.copy_file_range(source, target, count, offset, at)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    if at is not None:
        os.lseek(target, at, os.SEEK_SET)
    return os.sendfile(target, source, offset, count)


def remove(root: ContainerRoot) -> list[str]:
    """Remove every page folder at the top of the container's root; returns their names. A name the
    container made a link or a file is unlinked, never followed."""
    removed = []
    with root.opened() as top:
        for name in os.listdir(top):
            if not name.startswith(FOLDER_PREFIX):
                continue
            if stat.S_ISDIR(os.stat(name, dir_fd=top, follow_symlinks=False).st_mode):
                shutil.rmtree(name, dir_fd=top)
            else:
                os.unlink(name, dir_fd=top)
            removed.append(name)
    return removed


def new_folder_name() -> str:
    return FOLDER_PREFIX + secrets.token_hex(16)


def pages_tar(name: str, images: list[Path]) -> list[BodyPart]:
    """A tar of folder `name` (0700) holding `images` (0600 each), for the archive endpoint to unpack at the
    top of a container's root: tar headers as bytes, each image's body as a file part (sent by the kernel)."""
    return page_bodies_tar(name, [(image.name, FileBody(image, os.stat(image, follow_symlinks=False).st_size))
                                  for image in images])


def page_bodies_tar(name: str, bodies: list[tuple[str, FileBody | GrowingBody]]) -> list[BodyPart]:
    """`pages_tar` from (image name, body) pairs: a body may be a file still being written (engine/pages_stream.py)."""
    folder = tarfile.TarInfo(name)
    folder.type, folder.mode = tarfile.DIRTYPE, 0o700
    parts: list[BodyPart] = [folder.tobuf()]
    for image_name, body in bodies:
        member = tarfile.TarInfo(f"{name}/{image_name}")
        member.size, member.mode = body.size, 0o600
        parts += [member.tobuf(), body, bytes(-member.size % tarfile.BLOCKSIZE)]
    return [*parts, bytes(2 * tarfile.BLOCKSIZE)]  # the end of the archive


def emptied_tar(name: str) -> bytes:
    """A tar whose one member, an empty regular file `name`, replaces the folder of that name (and the page
    images in it) when the archive endpoint unpacks it at the top of a container's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member = tarfile.TarInfo(name)
        member.mode = 0o600
        archive.addfile(member, io.BytesIO(b""))
    return buffer.getvalue()
