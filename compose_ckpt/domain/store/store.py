"""The snapshot store: one folder per project and snapshot, shared by the CLI and the sidecar.

Layout under the store home ($COMPOSE_CKPT_HOME, default /var/lib/compose-ckpt):

    projects/<project>/.lock                      flock held while a command changes the project
    projects/<project>/.held-policies.json        restart policies held back, per container (held_policies.py)
    projects/<project>/.restoring                 ids of containers a restore under way may have placed page
                                                  images in (engine/pages_in_root.py); gone once removed
    projects/<project>/.set-aside                 containers a `restore --force` killed and has not put back
                                                  yet (name, id, safety checkpoint), in order; see recovery.py
    projects/<project>/.freezing                  containers a `restore --force` froze for its safety checkpoints
                                                  and has not set aside yet (JSON, notes.py); `recover` thaws them
    projects/<project>/.safety/<checkpoint>/<container>/   those safety checkpoints, while the command runs
    projects/<project>/.moving                    what a live migration under way created on its target (JSON,
                                                  domain/transport/live_migrate.py); gone once the target runs the stack
    projects/<project>/<snapshot>/manifest.json   written atomically (temp file + rename)
    projects/<project>/<snapshot>/checkpoints/<container>/   the CRIU image files
    projects/<project>/<snapshot>/compose/<n>-<file>         the compose files it was taken from
    tmp/<import|pull>-<uuid>/                     an archive or artifact being staged (import, pull)
    tmp/pull-<manifest digest>/                   a pull's verified blobs, kept to resume an interrupted pull
    tmp/<folder>.lock                             flock held by the command using tmp/<folder>

Checkpoints hold the memory of the containers, secrets included. So every
folder is created 0700 and every file 0600, and nothing is used that another
local user planted or can change (see safefs): the home and each folder above
it must be trusted; inside the store every folder and file must be owned by
root or us, writable by its owner only, and not a link. A snapshot whose
manifest or files break a rule is listed as `invalid`: never restored nor
exported, removed by `rm` and `prune`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from compose_ckpt.const import ENV_HOME, ENV_LOCK_TIMEOUT
from compose_ckpt.domain.store import safefs
from compose_ckpt.domain.store.manifest import Manifest, ManifestError, SnapshotStatus
from compose_ckpt.domain.store.names import NAME_PATTERN, validate_name
from compose_ckpt.domain.store.notes import CommandNotes
from compose_ckpt.errors import ConflictError, NotFoundError, UnsafePathError, UsageError

DEFAULT_HOME = Path("/var/lib/compose-ckpt")
DEFAULT_LOCK_TIMEOUT = 30.0
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 32 * 1024**2
_REMOVING = ".removing-"
SAFETY = ".safety"  # restore --force's safety checkpoints dumped into the store: SAFETY/<checkpoint>/<container>
_STAGING = re.compile(r"(import|pull)-([0-9a-f]{32}|[0-9a-f]{64})")  # tmp/ folders of import and pull
_LOCK_SUFFIX = ".lock"
# Compose file copies: letters, digits, '_', '.', '-' only (they become archive member names).
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def default_home() -> Path:
    return Path(os.environ.get(ENV_HOME) or DEFAULT_HOME)


class SnapshotStore(CommandNotes):
    def __init__(self, home: Path) -> None:
        self.home = home

    # --- paths (no I/O) -------------------------------------------------------------------------

    def project_dir(self, project_name: str) -> Path:
        return self.home / "projects" / validate_name(project_name, "project name")

    def snapshot_dir(self, project_name: str, name: str) -> Path:
        return self.project_dir(project_name) / validate_name(name)

    def checkpoint_dir(self, project_name: str, name: str, container_name: str) -> Path:
        return self.snapshot_dir(project_name, name) / "checkpoints" / validate_name(container_name, "container name")

    # --- trusted folders ------------------------------------------------------------------------

    def _project_folder(self, project_name: str, *, create: bool) -> Path | None:
        """The project's folder once the home, every folder above it and those between are trusted;
        None when it does not exist (and `create` is off)."""
        folder = self.project_dir(project_name)  # the name is checked before anything is created
        if not safefs.trusted_chain(self.home, create=create):
            return None
        for path in (folder.parent, folder):
            if create:
                safefs.private_folder(path)
            elif not safefs.checked_folder(path):
                return None
        return folder

    def private_folder(self, project_name: str, name: str, *parts: str) -> Path:
        """A folder of an existing snapshot (e.g. `checkpoints`), created 0700 if missing, every level checked."""
        folder = self._project_folder(project_name, create=False)
        snapshot = self.snapshot_dir(project_name, name)
        if folder is None or not safefs.checked_folder(snapshot):
            raise NotFoundError(f"no snapshot {name!r} of project {project_name}")
        for part in parts:
            snapshot = safefs.private_folder(snapshot / validate_name(part, "folder name"))
        return snapshot

    def staging_dir(self) -> Path:
        """The store's private folder for files on their way in (imports); same filesystem as the snapshots."""
        safefs.trusted_chain(self.home, create=True)
        return safefs.private_folder(self.home / "tmp")

    @contextmanager
    def using_staging(self, name: str) -> Iterator[Path]:
        """tmp/<name>, ours while this runs (its lock held): no cleaner removes it meanwhile. The folder is
        the caller's to create and remove. ConflictError when another command holds it (the same pull)."""
        if not _STAGING.fullmatch(name):
            raise ValueError(f"not a staging folder name: {name}")
        tmp = self.staging_dir()
        lock = _claim(tmp / f"{name}{_LOCK_SUFFIX}")
        if lock is None:
            raise ConflictError(f"another compose-ckpt command is using {tmp / name}",
                                hint="The same pull runs already: wait for it, then run this one again if needed.")
        try:
            yield tmp / name
        finally:
            _release(tmp / name, lock)

    def staging_leftovers(self, *, remove: bool, resumable: bool = True) -> list[Leftover]:
        """What killed imports and pulls left in tmp/ and no command is using: removed when `remove`
        (with `resumable` off, the download caches an interrupted pull resumes from stay).

        Only our own folders (by name, trusted, not links) are looked at, never created: a store without
        tmp/ has none."""
        tmp = self.home / "tmp"
        if not safefs.trusted_chain(self.home, create=False) or not safefs.checked_folder(tmp):
            return []
        found = []
        for entry in sorted(os.scandir(tmp), key=lambda e: e.name):
            match = _STAGING.fullmatch(entry.name)
            if match is None or not safefs.checked_folder(Path(entry.path)):
                continue
            cache = match[2] is not None and len(match[2]) == 64
            if cache and not resumable:
                continue
            lock = _claim(tmp / f"{entry.name}{_LOCK_SUFFIX}")
            if lock is None:
                continue  # in use
            try:
                found.append(Leftover(entry.path, _tree_size(Path(entry.path)), cache))
                if remove:
                    shutil.rmtree(entry.path)
            finally:
                _release(Path(entry.path), lock)
        return found

    # --- the lock -------------------------------------------------------------------------------

    @contextmanager
    def locked(self, project_name: str, wait: float | None = None) -> Iterator[None]:
        """Hold the project's lock; wait for another holder up to `wait` s (default $COMPOSE_CKPT_LOCK_TIMEOUT),
        then refuse."""
        wait_seconds = _lock_timeout() if wait is None else wait
        folder = self._project_folder(project_name, create=True)
        assert folder is not None
        with safefs.open_private_file(folder / ".lock") as handle:
            deadline = time.monotonic() + wait_seconds
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ConflictError(
                            f"another compose-ckpt command is working on project {project_name}",
                            hint=f"It held the lock for {wait_seconds:g} s; retry when it is done "
                            f"(or wait longer with {ENV_LOCK_TIMEOUT}).",
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- the project's own files (dot names: never taken for a snapshot) -------------------------

    def read_project_file(self, project_name: str, name: str, limit: int) -> bytes | None:
        """A private file of the project's folder; None when it does not exist."""
        folder = self._project_folder(project_name, create=False)
        try:
            return None if folder is None else safefs.read_trusted_file(folder / name, limit)
        except FileNotFoundError:
            return None

    def write_project_file(self, project_name: str, name: str, data: bytes) -> None:
        folder = self._project_folder(project_name, create=True)
        assert folder is not None
        safefs.replace_private_file(folder / name, data)

    def remove_project_file(self, project_name: str, name: str) -> None:
        """Remove a private file of the project's folder; one that does not exist is fine."""
        folder = self._project_folder(project_name, create=False)
        if folder is not None:
            (folder / name).unlink(missing_ok=True)

    # --- writing --------------------------------------------------------------------------------

    def write(self, manifest: Manifest) -> None:
        """Write the manifest atomically, so a reader sees the old or the new one, never half."""
        folder = self.snapshot_dir(manifest.project, manifest.name)
        parent = self._project_folder(manifest.project, create=True)
        assert parent is not None
        safefs.private_folder(folder)
        safefs.replace_private_file(folder / MANIFEST, json.dumps(manifest.to_dict(), indent=2).encode())

    def new_snapshot_folder(self, project_name: str, name: str) -> Path:
        """An empty private folder for a snapshot that does not exist yet (its manifest comes last)."""
        folder = self.snapshot_dir(project_name, name)  # both names checked before anything is created
        parent = self._project_folder(project_name, create=True)
        assert parent is not None
        try:
            os.mkdir(folder, safefs.PRIVATE_FOLDER)
        except FileExistsError:
            raise ConflictError(f"project {project_name} already has a snapshot {name}") from None
        return folder

    def new_checkpoint_dir(self, project_name: str, name: str, container_name: str) -> Path:
        """An empty private folder for one container's checkpoint files (what an earlier attempt left is dropped)."""
        target = self.checkpoint_dir(project_name, name, container_name)  # names checked before anything is created
        self.private_folder(project_name, name, "checkpoints")
        if safefs.checked_folder(target):
            shutil.rmtree(target)
        os.mkdir(target, safefs.PRIVATE_FOLDER)
        return target

    def safety_folder(self, project_name: str, *, create: bool) -> Path | None:
        """The project's trusted folder of safety checkpoints (see safety.py); None when missing."""
        folder = self._project_folder(project_name, create=create)
        if folder is not None and create:
            return safefs.private_folder(folder / SAFETY)
        return folder / SAFETY if folder is not None and safefs.checked_folder(folder / SAFETY) else None

    def save_compose_files(self, project_name: str, name: str, files: Iterable[tuple[Path, bytes]]) -> None:
        """Keep a copy of the compose files the snapshot was taken from, so that export reads nothing
        outside the store."""
        folder = self.private_folder(project_name, name, "compose")
        for index, (path, content) in enumerate(files):
            safefs.replace_private_file(folder / f"{index}-{_UNSAFE_NAME_CHARS.sub('_', path.name)[:150]}", content)

    def compose_copies(self, project_name: str, name: str) -> list[Path]:
        """The compose files kept with a snapshot, in merge order (none for snapshots taken before they were kept)."""
        folder = self.snapshot_dir(project_name, name) / "compose"
        if not safefs.checked_folder(folder):
            return []
        safefs.check_tree(folder)
        return sorted(folder.iterdir(), key=_merge_order)

    # --- reading --------------------------------------------------------------------------------

    def exists(self, project_name: str, name: str) -> bool:
        """Whether anything, even an invalid snapshot, holds this name."""
        entry = self.snapshot_dir(project_name, name)  # names are checked before anything is looked at
        return self._project_folder(project_name, create=False) is not None and os.path.lexists(entry)

    def load(self, project_name: str, name: str) -> Manifest:
        """A snapshot's manifest, once it and the snapshot's files are found trustworthy and valid."""
        if not self.exists(project_name, name):
            raise NotFoundError(f"no snapshot {name!r} of project {project_name}",
                                hint="`compose-ckpt ls` lists this project's snapshots.")
        return self._read(project_name, name)

    def _read(self, project_name: str, name: str) -> Manifest:
        folder = self.snapshot_dir(project_name, name)
        path = folder / MANIFEST
        if not safefs.checked_folder(folder):
            raise NotFoundError(f"no snapshot {name!r} of project {project_name}")
        try:
            document = json.loads(safefs.read_trusted_file(path, MAX_MANIFEST_BYTES))
        except FileNotFoundError:
            raise ManifestError(f"{folder} has no {MANIFEST}: its command was killed before writing it, "
                                "or it was damaged", hint="Remove it with `compose-ckpt rm`.") from None
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
            raise ManifestError(f"cannot read {path}: {exc}",
                                hint="Remove the snapshot with `compose-ckpt rm`.") from exc
        manifest = Manifest.from_dict(document, str(path))
        if (manifest.project, manifest.name) != (project_name, name):
            raise ManifestError(f"{path} names snapshot {manifest.project}/{manifest.name}, not {project_name}/{name}")
        self._check_files(manifest, folder)
        return manifest

    def _check_files(self, manifest: Manifest, folder: Path) -> None:
        """Everything in the snapshot's folder is a trusted folder or regular file (no link, nothing another
        user owns or can write), and a complete snapshot has the checkpoint of every container it dumped."""
        safefs.check_tree(folder)
        if manifest.status is SnapshotStatus.COMPLETE:
            for record in manifest.containers:
                if record.size and not os.path.isdir(folder / "checkpoints" / record.container_name):
                    raise ManifestError(f"{folder / 'checkpoints' / record.container_name} is missing: the snapshot "
                                        "is damaged", hint="Remove it with `compose-ckpt rm`.")

    def list(self, project_name: str) -> list[Manifest]:
        """This project's snapshots, in the order they entered the store (Manifest.entered); one whose manifest or files cannot be trusted is
        listed with status `invalid` and its reason as error, so that rm and prune can remove it."""
        folder = self._project_folder(project_name, create=False)
        if folder is None:
            return []
        manifests = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if not NAME_PATTERN.match(entry.name):  # .lock, removals under way, names we never make
                    continue
                try:
                    manifests.append(self._read(project_name, entry.name))
                except (ManifestError, UnsafePathError) as exc:
                    manifests.append(_invalid(project_name, entry.name, entry.stat(follow_symlinks=False), exc.message))
                except (NotFoundError, FileNotFoundError):
                    continue  # removed (by a command holding the lock) while it was being read
        return sorted(manifests, key=lambda manifest: (manifest.entered, manifest.name))

    def latest_complete(self, project_name: str) -> Manifest:
        complete = [m for m in self.list(project_name) if m.status is SnapshotStatus.COMPLETE]
        if not complete:
            raise NotFoundError(f"project {project_name} has no complete snapshot",
                                hint="Take one with `compose-ckpt snapshot`.")
        return complete[-1]

    # --- removing -------------------------------------------------------------------------------

    def remove(self, project_name: str, name: str) -> None:
        """Remove a snapshot, valid or not; a link in its place is removed, never followed."""
        if not self.exists(project_name, name):
            raise NotFoundError(f"no snapshot {name!r} of project {project_name}")
        folder = self.project_dir(project_name)
        for entry in folder.iterdir():  # what a killed `rm` left
            if entry.name.startswith(_REMOVING):
                _delete(entry)
        # Hide it from `ls` first (rename is atomic), then delete the files.
        doomed = folder / f"{_REMOVING}{name}"
        os.replace(folder / name, doomed)
        _delete(doomed)


    def remove_chosen(self, project_name: str, choose: Callable[[Sequence[Manifest]], Sequence[Manifest]]
                      ) -> tuple[Sequence[Manifest], Sequence[Manifest]]:
        """Remove the snapshots `choose` picks from the project's list (a retention rule), choosing and removing
        under the project's lock, so that no snapshot is being taken or restored meanwhile: return the list
        and those removed."""
        with self.locked(project_name):
            listed = self.list(project_name)
            chosen = choose(listed)
            for manifest in chosen:
                self.remove(project_name, manifest.name)
        return listed, chosen

@dataclass(frozen=True)
class Leftover:
    """A staging folder a killed import or pull left (checkpoint memory, as any snapshot)."""

    path: str
    size: int
    resumable: bool  # a pull's download cache: the same pull run again resumes from it


def _claim(lock_path: Path) -> int | None:
    """The descriptor of `lock_path` (created 0600 if missing) with its flock held, None when another
    process holds it. Retried until the file locked is the one at the path (a cleaner may unlink it)."""
    while True:
        handle = safefs.open_private_file(lock_path)
        descriptor = os.dup(handle.fileno())
        handle.close()
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return None
        try:
            if os.path.samestat(os.fstat(descriptor), os.lstat(lock_path)):
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)


def _release(folder: Path, descriptor: int) -> None:
    """Unlock; the lock file goes with its folder (removed while locked, so no one holds a stale one)."""
    try:
        if not os.path.lexists(folder):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{folder}{_LOCK_SUFFIX}")
    finally:
        os.close(descriptor)


def _tree_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _invalid(project_name: str, name: str, status: os.stat_result, reason: str) -> Manifest:
    """What `ls` shows for a snapshot that cannot be trusted: its name, when it was last changed, and why."""
    changed = datetime.fromtimestamp(status.st_mtime, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Manifest(name=name, project=project_name, created=changed, status=SnapshotStatus.INVALID, stopped=False,
                    compose_files=[], compose_hash="", services=[], dependencies={}, error=reason)


def _merge_order(path: Path) -> tuple[int, str]:
    index, _, _ = path.name.partition("-")
    return int(index) if index.isascii() and index.isdigit() else 0, path.name


def _delete(path: Path) -> None:
    """rmtree a real folder (it never follows links inside); unlink anything else, a link included."""
    if stat.S_ISDIR(os.lstat(path).st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _lock_timeout() -> float:
    text = os.environ.get(ENV_LOCK_TIMEOUT)
    try:
        return float(text) if text else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        raise UsageError(f"{ENV_LOCK_TIMEOUT} must be a number of seconds, not {text!r}") from None
