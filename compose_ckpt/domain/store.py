"""The snapshot store: one folder per project and snapshot, shared by the CLI and the sidecar.

Layout under the store home ($COMPOSE_CKPT_HOME, default /var/lib/compose-ckpt):

    projects/<project>/.lock                      flock held while a command changes the project
    projects/<project>/<snapshot>/manifest.json   written atomically (temp file + rename)
    projects/<project>/<snapshot>/checkpoints/<container>/   the CRIU image files

Checkpoints hold the memory of the containers, secrets included, so every
folder is created readable by its owner only.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from compose_ckpt.const import ENV_HOME, ENV_LOCK_TIMEOUT
from compose_ckpt.domain.manifest import Manifest, ManifestError, SnapshotStatus, validate_name
from compose_ckpt.errors import ConflictError, NotFoundError, UsageError

DEFAULT_HOME = Path("/var/lib/compose-ckpt")
DEFAULT_LOCK_TIMEOUT = 30.0
MANIFEST = "manifest.json"


def default_home() -> Path:
    return Path(os.environ.get(ENV_HOME) or DEFAULT_HOME)


class SnapshotStore:
    def __init__(self, home: Path) -> None:
        self.home = home

    def project_dir(self, project: str) -> Path:
        return self.home / "projects" / validate_name(project, "project name")

    def snapshot_dir(self, project: str, name: str) -> Path:
        return self.project_dir(project) / validate_name(name)

    def checkpoint_dir(self, project: str, name: str, container_name: str) -> Path:
        return self.snapshot_dir(project, name) / "checkpoints" / validate_name(container_name, "container name")

    @contextmanager
    def locked(self, project: str) -> Iterator[None]:
        """Hold the project's lock; wait for another holder up to $COMPOSE_CKPT_LOCK_TIMEOUT s, then refuse."""
        wait_seconds = _lock_timeout()
        folder = self.project_dir(project)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.home.chmod(0o700)
        with open(folder / ".lock", "a+") as handle:
            deadline = time.monotonic() + wait_seconds
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ConflictError(
                            f"another compose-ckpt command is working on project {project}",
                            hint=f"It held the lock for {wait_seconds:g} s; retry when it is done "
                            f"(or wait longer with {ENV_LOCK_TIMEOUT}).",
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write(self, manifest: Manifest) -> None:
        """Write the manifest atomically, so a reader sees the old or the new one, never half."""
        folder = self.snapshot_dir(manifest.project, manifest.name)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = folder / f".{MANIFEST}.tmp"
        with open(temporary, "w") as handle:
            json.dump(manifest.to_dict(), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, folder / MANIFEST)

    def exists(self, project: str, name: str) -> bool:
        return (self.snapshot_dir(project, name) / MANIFEST).exists()

    def load(self, project: str, name: str) -> Manifest:
        path = self.snapshot_dir(project, name) / MANIFEST
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no snapshot {name!r} of project {project}",
                                hint="`compose-ckpt ls` lists this project's snapshots.") from None
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
            raise ManifestError(f"cannot read {path}: {exc}") from exc
        manifest = Manifest.from_dict(document, str(path))
        if (manifest.project, manifest.name) != (project, name):
            raise ManifestError(f"{path} names snapshot {manifest.project}/{manifest.name}, not {project}/{name}")
        return manifest

    def list(self, project: str) -> list[Manifest]:
        """This project's snapshots, oldest first; unreadable ones are skipped here and reported by `load`."""
        folder = self.project_dir(project)
        if not folder.is_dir():
            return []
        manifests = []
        for entry in folder.iterdir():
            if entry.is_dir() and (entry / MANIFEST).exists():
                try:
                    manifests.append(self.load(project, entry.name))
                except (ManifestError, NotFoundError, UsageError):  # UsageError: not a snapshot name (.removing-x)
                    continue
        return sorted(manifests, key=lambda manifest: (manifest.created, manifest.name))

    def latest_complete(self, project: str) -> Manifest:
        complete = [m for m in self.list(project) if m.status is SnapshotStatus.COMPLETE]
        if not complete:
            raise NotFoundError(f"project {project} has no complete snapshot",
                                hint="Take one with `compose-ckpt snapshot`.")
        return complete[-1]

    def remove(self, project: str, name: str) -> None:
        folder = self.snapshot_dir(project, name)
        if not folder.is_dir():
            raise NotFoundError(f"no snapshot {name!r} of project {project}")
        # Hide it from `ls` first (rename is atomic), then delete the files.
        doomed = folder.with_name(f".removing-{name}")
        os.replace(folder, doomed)
        shutil.rmtree(doomed)


def _lock_timeout() -> float:
    text = os.environ.get(ENV_LOCK_TIMEOUT)
    try:
        return float(text) if text else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        raise UsageError(f"{ENV_LOCK_TIMEOUT} must be a number of seconds, not {text!r}") from None
