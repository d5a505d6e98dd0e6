"""The copy of a checkpoint containerd leaves behind after each restore, and its removal.

Contract. For `docker start --checkpoint`, containerd's tasks service unpacks the checkpoint into a
folder of its own, `os.MkdirTemp($XDG_RUNTIME_DIR, "ctrd-checkpoint")` (that is $XDG_RUNTIME_DIR, else
$TMPDIR, else /tmp, as containerd sees them), hands it to runc/CRIU and never removes it (containerd
issue #10166): a full copy of the process memory per restore. After a restore on this host we remove
exactly the copies of the checkpoint we restored, and nothing else, treating other local users as hostile
(they may create `ctrd-checkpoint*` folders or links themselves). A folder is such a copy when:
- it is in the temp folder of a containerd process (seen through /proc/PID/root, so another mount
  namespace works), and that temp folder is owned by root or containerd and only they can rename in it;
- its name was not there when the restore began;
- it is a real folder (never a link), owned by root or containerd's user, not group/other-writable;
- it holds the same file names as the checkpoint placed, and the same bytes in `inventory.img`,
  `pstree.img` and the upload id (`tar_stream.UPLOAD_ID_FILE`, fresh per restore attempt, so parallel
  restores each find only their own copy). Files are read without following links.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from compose_ckpt.engine import procfs
from compose_ckpt.engine.tar_stream import UPLOAD_ID_FILE, write_upload_id
from compose_ckpt.engine.types import ContainerdLeftovers
from compose_ckpt.errors import CkptError, EngineUnavailable

COPY_PREFIX = "ctrd-checkpoint"
COMPARED_FILES = ("inventory.img", "pstree.img", UPLOAD_ID_FILE)
_log = logging.getLogger(__name__)
MAX_COMPARED_BYTES = 16 * 1024**2  # pstree.img grows with the process count; far below this


@dataclass(frozen=True)
class TempFolder:
    """Where one containerd makes its copies, and the users allowed to own them."""

    path: Path  # through /proc/PID/root: right in any mount namespace
    owners: frozenset[int]
    shown: str  # the path to tell a user on this host


@dataclass(frozen=True)
class CheckpointImages:
    """What identifies one placed checkpoint: its file names and the bytes of `COMPARED_FILES` it has."""

    names: frozenset[str]
    compared: tuple[tuple[str, bytes], ...]


def containerd_temp_folders(daemon: int) -> list[TempFolder]:
    """The temp folders of the daemon's own containerd (its child), else of every containerd process."""
    own = [pid for pid in procfs.children(daemon) if procfs.process_name(pid) == "containerd"]
    found: dict[tuple[int, int], TempFolder] = {}
    for pid in own or _all_containerd():
        environment = procfs.process_environ(pid)
        chosen = environment.get("XDG_RUNTIME_DIR") or environment.get("TMPDIR") or "/tmp"
        if not chosen.startswith("/"):
            continue
        path = Path(f"/proc/{pid}/root{chosen}")
        try:
            owners = frozenset({0, os.stat(f"/proc/{pid}").st_uid})
            folder = os.stat(path)
            ours = os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
        except OSError:
            continue
        only_owners_rename = not folder.st_mode & 0o022 or bool(folder.st_mode & stat.S_ISVTX)
        if stat.S_ISDIR(folder.st_mode) and folder.st_uid in owners and only_owners_rename:
            found.setdefault((folder.st_dev, folder.st_ino), TempFolder(path, owners, chosen if ours else str(path)))
    return list(found.values())


def leftovers(daemon: int) -> list[ContainerdLeftovers]:
    """What containerd's temp folders hold in `ctrd-checkpoint*` folders (links not followed or counted)."""
    found = []
    for temp in containerd_temp_folders(daemon):
        copies = [path for path in existing_copies([temp]) if stat.S_ISDIR(_lstat_mode(path))]
        if copies:
            found.append(ContainerdLeftovers(temp.shown, len(copies), sum(_tree_size(path) for path in copies),
                                             f"{temp.shown}/{COPY_PREFIX}*"))
    return found


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0


def _tree_size(folder: Path) -> int:
    total = 0
    for parent, _, files in os.walk(folder):  # does not follow links to folders
        for name in files:
            try:
                found = os.lstat(os.path.join(parent, name))
            except OSError:
                continue
            if stat.S_ISREG(found.st_mode):
                total += found.st_size
    return total


def existing_copies(folders: list[TempFolder]) -> set[Path]:
    """Every `ctrd-checkpoint*` entry in `folders` now."""
    names: set[Path] = set()
    for folder in folders:
        try:
            names.update(folder.path / name for name in os.listdir(folder.path) if name.startswith(COPY_PREFIX))
        except OSError:
            continue
    return names


def checkpoint_images(folder: Path) -> CheckpointImages | None:
    """The identity of the checkpoint in `folder` (one we placed); None when it cannot be read."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _images_at(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def copies_removed(temp_folders: list[TempFolder], folder: Path) -> Iterator[Callable[[], None]]:
    """Around a restore on the daemon's host from the checkpoint in `folder`: remove the copy of its images
    that containerd makes for it and leaves behind, once the daemon has answered, success or failure.
    Yields what gives the checkpoint a new upload id before each attempt: the id tells this restore's
    copies from any other's."""
    before = existing_copies(temp_folders)
    placed: list[CheckpointImages] = []

    def mark_upload() -> None:
        write_upload_id(folder)
        images = checkpoint_images(folder)
        if images is not None:
            placed.append(images)

    with contextlib.suppress(OSError):  # no such checkpoint: the daemon's answer says so
        mark_upload()
    try:
        yield mark_upload
    except EngineUnavailable:
        raise  # no answer: the daemon may still be restoring from its copy
    except CkptError:
        _remove_copies_best_effort(temp_folders, before, placed)
        raise
    _remove_copies_best_effort(temp_folders, before, placed)


def _remove_copies_best_effort(temp_folders: list[TempFolder], before: set[Path],
                               placed: list[CheckpointImages]) -> None:
    """Best effort: a copy left behind never fails the restore it was made for."""
    try:
        remove_copies(temp_folders, before, placed)
    except OSError as exc:
        _log.warning("could not remove containerd's copy of a restored checkpoint: %s", exc)


def remove_copies(folders: list[TempFolder], before: set[Path], placed: list[CheckpointImages]) -> list[Path]:
    """Remove the copies of any of the `placed` checkpoints made since `before` was taken; returns them.
    Raises OSError when a copy found cannot be removed."""
    if not placed or not shutil.rmtree.avoids_symlink_attacks:
        return []
    removed = []
    for folder in folders:
        for candidate in existing_copies([folder]) - before:
            if _is_copy_of(candidate, folder.owners, placed):
                # shutil.rmtree is fd-based on Linux (avoids_symlink_attacks): it refuses a link at the top,
                # opens every folder with O_NOFOLLOW and checks it is the one it lstat'ed, so no link inside
                # takes it anywhere else. Nobody but root/containerd can rename the folder in its temp folder.
                shutil.rmtree(candidate)
                removed.append(candidate)
    return removed


def _is_copy_of(candidate: Path, owners: frozenset[int], placed: list[CheckpointImages]) -> bool:
    try:
        seen = os.lstat(candidate)
        if not stat.S_ISDIR(seen.st_mode) or seen.st_uid not in owners or seen.st_mode & 0o022:
            return False
        descriptor = os.open(candidate, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        opened = os.fstat(descriptor)
        if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
            return False  # replaced between the two looks
        return _images_at(descriptor) in placed
    finally:
        os.close(descriptor)


def _images_at(descriptor: int) -> CheckpointImages | None:
    try:
        names = frozenset(os.listdir(descriptor))
    except OSError:
        return None
    compared = []
    for name in COMPARED_FILES:
        if name in names:
            data = _read_file(descriptor, name)
            if data is None:
                return None
            compared.append((name, data))
        elif name != UPLOAD_ID_FILE:
            return None  # not a CRIU image folder: nothing to tell copies by
    return CheckpointImages(names, tuple(compared))


def _read_file(folder: int, name: str) -> bytes | None:
    """The bytes of a regular file `name` in the open folder; None for a link, a FIFO, a device or a huge file."""
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as source:
        found = os.fstat(source.fileno())
        if not stat.S_ISREG(found.st_mode) or found.st_size > MAX_COMPARED_BYTES:
            return None
        return source.read(MAX_COMPARED_BYTES + 1)


def _all_containerd() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and procfs.process_name(int(entry)) == "containerd"]
