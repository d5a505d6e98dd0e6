"""Files and folders another local user cannot change under us.

Trust rule: a folder is trusted when root or we own it and nobody else can
write to it. An ancestor of the store (not the store itself) may also be
writable by others when it has the sticky bit, as /tmp does: others can add
entries there but can neither rename nor remove ours. Once every folder from
/ down to X is trusted, nothing below X changes unless root or we change it,
so checks made walking down stay true while the paths are used.

Everything created here is private and exclusive: folders 0700, files 0600,
created with O_EXCL|O_NOFOLLOW, so a link planted in advance is never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from compose_ckpt.errors import UnsafePathError

T = TypeVar("T")
PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_MAX_LINKS_FOLLOWED = 40  # as the kernel's ELOOP limit


def trusted_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def problem(status: os.stat_result, *, sticky_ok: bool = False) -> str | None:
    """Why an lstat result of a folder or file is not trusted, or None."""
    if status.st_uid not in trusted_owners():
        return f"it is owned by uid {status.st_uid}, not by root or uid {os.geteuid()}"
    if status.st_mode & _WRITABLE_BY_OTHERS and not (sticky_ok and status.st_mode & stat.S_ISVTX):
        return f"other users can write to it (mode {stat.S_IMODE(status.st_mode):04o})"
    return None


def _refuse(path: Path, why: str) -> UnsafePathError:
    return UnsafePathError(
        f"refusing {path}: {why}",
        hint="compose-ckpt follows no link and uses nothing another user could have planted or could change. "
             "Remove what does not belong there (`compose-ckpt rm` removes a snapshot), or make the folder "
             "owned by root (or you) and writable by its owner only.")


def _not_allowed(status: os.stat_result) -> str:
    kind = "a link" if stat.S_ISLNK(status.st_mode) else "a device, FIFO or socket"
    return f"it is {kind}; only regular files and folders may be there"


def trusted_chain(path: Path, *, create: bool) -> bool:
    """Check every folder (and link) from / down to `path`, which must be a folder.

    Links on the way are followed only when root or we own them. Missing folders are created
    (0700) with `create`; without it the answer is False when `path` does not exist."""
    pending = list((path if path.is_absolute() else Path.cwd() / path).parts[1:])  # '..' as the kernel sees it
    current = Path("/")
    _check_folder(current, os.lstat(current), last=False)
    followed = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        try:
            status = os.lstat(candidate)
        except FileNotFoundError:
            if not create:
                return False
            with contextlib.suppress(FileExistsError):  # made by root or us meanwhile: checked below
                os.mkdir(candidate, PRIVATE_FOLDER)
            status = os.lstat(candidate)
        if stat.S_ISLNK(status.st_mode):
            followed += 1
            if status.st_uid not in trusted_owners():
                raise _refuse(candidate, f"it is a link owned by uid {status.st_uid}")
            if followed > _MAX_LINKS_FOLLOWED:
                raise _refuse(candidate, "too many levels of links")
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                current = Path("/")
            pending = [*target.parts[1 if target.is_absolute() else 0:], *pending]
            continue
        _check_folder(candidate, status, last=False)
        current = candidate
    _check_folder(current, os.lstat(current), last=True)  # the folder itself: no sticky exception
    return True


def _check_folder(path: Path, status: os.stat_result, *, last: bool) -> None:
    if not stat.S_ISDIR(status.st_mode):
        raise _refuse(path, "it is not a folder")
    why = problem(status, sticky_ok=not last)
    if why:
        raise _refuse(path, why)


def checked_folder(path: Path) -> bool:
    """Whether `path` exists as a trusted folder that is not a link; refuse anything else there.

    Only for paths below a folder already checked (the store's own folders)."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(status.st_mode):
        raise _refuse(path, "it is a link")
    _check_folder(path, status, last=True)
    return True


def private_folder(path: Path) -> Path:
    """`path` as a trusted folder, created 0700 when missing; its parent must be trusted already."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, PRIVATE_FOLDER)
    checked_folder(path)
    return path


def check_tree(folder: Path) -> None:
    """Refuse a tree holding anything but trusted folders and regular files (links, devices, FIFOs)."""
    if not checked_folder(folder):
        raise _refuse(folder, "it is missing")
    _check_entries(folder)


def _check_entries(folder: Path) -> None:
    # An entry that goes away meanwhile was removed by root or us (the folder is trusted): passed over.
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            status = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not (stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode)):
            raise _refuse(path, _not_allowed(status))
        why = problem(status)
        if why:
            raise _refuse(path, why)
        if stat.S_ISDIR(status.st_mode):
            _check_entries(path)


def seal_tree(path: Path) -> None:
    """Make a file or tree we have just created private (folders 0700, files 0600); refuse anything else."""
    status = os.lstat(path)
    if stat.S_ISDIR(status.st_mode):
        os.chmod(path, PRIVATE_FOLDER)
        with os.scandir(path) as entries:
            for entry in entries:
                seal_tree(Path(entry.path))
    elif stat.S_ISREG(status.st_mode):
        os.chmod(path, PRIVATE_FILE)
    else:
        raise _refuse(path, _not_allowed(status))


def read_trusted_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file that root or we own and nobody else can write, at most `limit` of them."""
    with os.fdopen(_open_no_link(path, os.O_RDONLY), "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise _refuse(path, "it is not a regular file")
        why = problem(status)
        if why:
            raise _refuse(path, why)
        data = handle.read(limit + 1)
        if len(data) > limit:
            raise _refuse(path, f"it holds more than {limit} bytes")
        return data


def open_private_file(path: Path) -> BinaryIO:
    """`path` opened for reading and writing, created 0600 if missing; never through a link, and only
    when it is a regular file that root or we own and nobody else can write (a lock file)."""
    descriptor = _open_no_link(path, os.O_RDWR | os.O_CREAT)
    handle = os.fdopen(descriptor, "r+b", buffering=0)
    status = os.fstat(descriptor)
    why = problem(status) if stat.S_ISREG(status.st_mode) else "it is not a regular file"
    if why:
        handle.close()
        raise _refuse(path, why)
    return handle


def _open_no_link(path: Path, flags: int) -> int:
    """os.open that refuses a link as the last component (O_NONBLOCK: a FIFO planted there cannot hang us)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, PRIVATE_FILE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "it is a link") from None
        raise


def replace_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a private temporary file renamed over it) and durably."""
    write_output_file(path, lambda handle: handle.write(data))


def write_output_file(path: Path, write: Callable[[BinaryIO], T]) -> T:
    """Write a file: `write` fills a private temporary file (0600, O_EXCL|O_NOFOLLOW, a random name beside
    `path`), which is renamed over `path` only when it succeeded, so a failed write leaves nothing behind.

    A link at `path` is refused, never written through nor replaced (it may be the system's, as
    /dev/stdout is). A device or FIFO there (/dev/null, a named pipe) is written in place."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        status = None
    if status is not None and stat.S_ISLNK(status.st_mode):
        raise _refuse(path, "it is a link; name the file itself (or - for stdout)")
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if status is not None and not stat.S_ISREG(status.st_mode):
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "wb") as device:
            return write(device)
    with _temporary_beside(path) as (handle, temporary):
        result = write(handle)
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temporary, path)
    return result


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[tuple[BinaryIO, Path]]:
    # mkstemp: O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, a name nobody can guess in advance.
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".partial")
    temporary = Path(name)
    handle = os.fdopen(descriptor, "wb")
    try:
        yield handle, temporary
    except BaseException:
        handle.close()
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def remove_inside(root: Path, name: str) -> None:
    """Remove `root/name` (a file, link or whole folder) without following any link on the way: `root` is
    ours, but what lies under it came from elsewhere (a copy of a volume). Nothing there: nothing to do."""
    *folders, last = Path(name).parts
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for folder in folders:
            if folder == ".":
                continue
            try:
                inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=descriptor)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return  # a link or a file where a folder was: `name` is not under root any more
                raise
            os.close(descriptor)
            descriptor = inner
        try:
            status = os.stat(last, dir_fd=descriptor, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(status.st_mode):
            shutil.rmtree(last, dir_fd=descriptor)  # rmtree with dir_fd never follows a link inside
        else:
            os.unlink(last, dir_fd=descriptor)
    finally:
        os.close(descriptor)
