"""Checkpoint files shared by hard link between the daemon's folder and the store, on the daemon's host."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from compose_ckpt.errors import NotFoundError, UnsafePathError


def link_or_copy_tree(source: Path, destination: Path, leave_out: Callable[[Path], bool] = lambda _: False) -> int:
    """Hard-link every file of `source` into `destination`, copying across filesystems; return bytes.

    CRIU image files are written once and never changed, so sharing them by
    hard link is safe and makes a snapshot of a large container nearly free.
    Folders are made 0700 and files 0600 (they hold process memory), and a
    link found in `source` is refused, never followed. Files `leave_out` names are not copied.
    """
    total = 0
    if not source.is_dir() or source.is_symlink():
        raise NotFoundError(f"no checkpoint files at {source}")
    for folder, folders, files in os.walk(source):
        target_folder = destination / Path(folder).relative_to(source)
        target_folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in [*folders, *files]:
            entry = Path(folder, name)
            kind = entry.lstat().st_mode
            if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
                raise UnsafePathError(f"refusing {entry}: only regular files and folders may be in a checkpoint")
        for file_name in files:
            src, dst = Path(folder, file_name), target_folder / file_name
            if leave_out(src):
                continue
            try:
                os.link(src, dst, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                shutil.copyfile(src, dst, follow_symlinks=False)
            os.chmod(dst, 0o600)
            total += dst.stat().st_size
    return total
