"""The safety checkpoints of `restore --force` that were dumped into the store (the daemon's own runtime
wrote them there; one taken through the Docker API stays the daemon's): <project>/.safety/<checkpoint>/<container>,
private like everything of the store. Each is removed once its container is restored over or put back."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from compose_ckpt.domain.store import safefs
from compose_ckpt.domain.store.names import NAME_PATTERN, validate_name
from compose_ckpt.domain.store.store import SnapshotStore


def new_safety_dir(store: SnapshotStore, project_name: str, checkpoint: str, container_name: str) -> Path:
    """An empty private folder, made exclusively, for one container's safety checkpoint `checkpoint`."""
    target = Path(validate_name(checkpoint), validate_name(container_name, "container name"))  # checked first
    folder = store.safety_folder(project_name, create=True)
    assert folder is not None
    safefs.private_folder(folder / target.parent)
    os.mkdir(folder / target, safefs.PRIVATE_FOLDER)  # one checkpoint name per restore: never there before
    return folder / target


def safety_checkpoint(store: SnapshotStore, project_name: str, checkpoint: str, container_name: str) -> Path | None:
    """The folder `new_safety_dir` made when it holds a trusted tree of files (a dump made there); None when
    there is none, or it is empty (the dump went through the Docker API: the daemon keeps it)."""
    folder = store.safety_folder(project_name, create=False)
    if folder is None:
        return None
    attempt = folder / validate_name(checkpoint)
    target = attempt / validate_name(container_name, "container name")
    if not safefs.checked_folder(attempt) or not safefs.checked_folder(target):
        return None
    safefs.check_tree(target)
    return target if any(target.iterdir()) else None


def remove_safety_checkpoints(store: SnapshotStore, project_name: str, checkpoint: str,
                              container_name: str | None = None) -> None:
    """Remove one container's safety checkpoint `checkpoint` from the store, or all of that name."""
    folder = store.safety_folder(project_name, create=False)
    if folder is None:
        return
    attempt = folder / validate_name(checkpoint)
    target = attempt if container_name is None else attempt / validate_name(container_name, "container name")
    if safefs.checked_folder(target):
        shutil.rmtree(target)
    with contextlib.suppress(OSError):
        attempt.rmdir()  # once its last container's is gone


def safety_checkpoint_names(store: SnapshotStore, project_name: str) -> list[str]:
    """The checkpoint names with safety checkpoints in the store."""
    folder = store.safety_folder(project_name, create=False)
    if folder is None:
        return []
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if NAME_PATTERN.match(entry.name))
