"""File trees on the engine's host, read and written as tar streams through the Docker API.

A container's writable layer (its overlay2 upper folder) and named volumes
live on the engine's host, which may be another machine. A created, never
started helper container mounts the tree at TREE_MOUNT; `GET/PUT
/containers/{helper}/archive` then read and write it, so local and remote
engines take the same path. Tars hold their members under `ckpt-tree/`.

The daemon writes a layer's whiteouts (character devices 0/0) back as they
are, so the deletions a container made survive the round trip. Two things do
not: an overlay "opaque" folder (deleted, then made again) comes back merged
with the image's content, and extended attributes other than
security.capability are not carried (the daemon's own `docker cp` limits).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from compose_ckpt.const import LABEL_HELPER
from compose_ckpt.engine.api import Transport, path_of
from compose_ckpt.engine.pages_in_root import FOLDER_PREFIX
from compose_ckpt.engine.tar_stream import IterReader
from compose_ckpt.engine.translation import translated
from compose_ckpt.engine.types import ContainerInfo, EngineInfo
from compose_ckpt.errors import EngineError

TREE_MOUNT = "/ckpt-tree"
_READ_SIZE = 4 * 1024**2
_TAR = shutil.which("tar")  # GNU tar on the engine's host, for the local fast path of reads
TREE_PREFIX = "ckpt-tree"
_REMOVALS_PER_HELPER = 2000  # paths on one `rm` command line, well inside the kernel's argument limit
# Emptying a remote volume that holds something needs a process inside a helper, from the image of a
# service that uses it: `sh` with `find` or `rm` (busybox, Debian, Alpine, most images).
_CLEAR_COMMAND = ["sh", "-c", f"find {TREE_MOUNT} -mindepth 1 -delete || rm -rf {TREE_MOUNT}/* {TREE_MOUNT}/.[!.]* {TREE_MOUNT}/..?*"]


def upper_dir(container: ContainerInfo) -> str | None:
    """The host folder of the container's writable layer; None on a storage driver other than overlay2."""
    driver = container.attrs.get("GraphDriver") or {}
    if driver.get("Name") != "overlay2":
        return None
    upper = (driver.get("Data") or {}).get("UpperDir")
    return str(upper) if upper else None


class EngineFacts(Protocol):
    """What the tree operations ask of the engine besides raw calls (`Engine` gives it)."""

    def info(self) -> EngineInfo: ...

    def inspect_volume(self, name: str) -> dict[str, Any]: ...


class TreeTransfer:
    """The tree operations of one engine (`Engine.trees`)."""

    def __init__(self, engine: EngineFacts, api: Transport) -> None:
        self._engine = engine
        self._api = api

    def read_layer(self, container: ContainerInfo) -> Generator[bytes, None, None]:
        """Stream the tar of a container's writable-layer changes (whiteouts included)."""
        upper = _require_upper(container)
        if _TAR and self._engine.info().local and not _is_link_or_missing(Path(upper)):
            # Page images a restore placed there are not the container's files (engine/pages_in_root.py).
            return _read_here(Path(upper), leave_out=f"./{FOLDER_PREFIX}*")
        return self._read({"Type": "bind", "Source": upper, "Target": TREE_MOUNT, "ReadOnly": True},
                          container.image_id, f"read the writable layer of {container.name}")

    def write_layer(self, container: ContainerInfo, chunks: Iterable[bytes]) -> None:
        """Unpack a tar made by `read_layer` over the writable layer of a container that is not running."""
        upper = _require_upper(container)
        if _TAR and self._engine.info().local and not _is_link_or_missing(Path(upper)):
            _write_here(Path(upper), chunks)  # the container does not run: nothing else writes there
            return
        self._write({"Type": "bind", "Source": upper, "Target": TREE_MOUNT}, container.image_id, chunks,
                    f"write the writable layer of {container.name}")

    def read_volume(self, name: str, image_id: str) -> Generator[bytes, None, None]:
        folder = self.volume_folder(name) if _TAR else None
        if folder is not None:
            return _read_here(folder)
        return self._read({"Type": "volume", "Source": name, "Target": TREE_MOUNT, "ReadOnly": True},
                          image_id, f"read volume {name}")

    def replace_volume(self, name: str, image_id: str, chunks: Iterable[bytes]) -> None:
        """Empty the volume, then unpack a tar made by `read_volume` into it."""
        self._clear_volume(name, image_id)
        folder = self.volume_folder(name) if _TAR else None
        if folder is not None and not self._mounted_by_running_container(name):
            _write_here(folder, chunks)
            return
        self._write({"Type": "volume", "Source": name, "Target": TREE_MOUNT}, image_id, chunks, f"write volume {name}")

    def update_volume(self, name: str, image_id: str, removed: Sequence[str], chunks: Iterable[bytes]) -> None:
        """Bring a volume written by `replace_volume` up to date: remove the `removed` entries ("./a/b", as
        `tree_changes` names them), then unpack a tar of the changed ones (from `read_folder`) over it. The
        removals run in a helper from `image_id` (it needs `rm`), so a link in the volume never leads out."""
        hint = ("The image of a service using the volume needs `rm` to remove files from it; migrate without "
                "--live to copy the volume whole instead.")
        for start in range(0, len(removed), _REMOVALS_PER_HELPER):
            paths = [f"{TREE_MOUNT}/{entry.removeprefix('./')}" for entry in removed[start:start + _REMOVALS_PER_HELPER]]
            self._run_on_volume(name, image_id, ["rm", "-rf", "--", *paths], f"remove files from volume {name}", hint)
        folder = self.volume_folder(name) if _TAR else None
        if folder is not None and not self._mounted_by_running_container(name):
            _write_here(folder, chunks)
            return
        self._write({"Type": "volume", "Source": name, "Target": TREE_MOUNT}, image_id, chunks, f"write volume {name}")

    def read_folder(self, folder: Path, entries: Sequence[str] | None = None, *, live: bool = False,
                    ) -> Generator[bytes, None, None]:
        """A folder on this host (a local engine's volume folder, or a copy of one in the store) as a tar like
        `read_volume`'s; only `entries` when given; `live` while others still write to it (see `_read_here`)."""
        if _TAR is None:
            raise EngineError("reading a folder on this host needs GNU tar on the PATH")
        return _read_here(folder, entries, live=live)

    def unpack_copy(self, folder: Path, chunks: Iterable[bytes]) -> None:
        """Unpack a tar made by `read_folder` into `folder/ckpt-tree`, over what is there (the tree's root
        keeps its own owner, mode and time)."""
        if _TAR is None:
            raise EngineError("writing a folder on this host needs GNU tar on the PATH")
        _write_here(folder, chunks, strip=False)

    def copies_here(self) -> bool:
        """Whether `read_folder` and `unpack_copy` work here (GNU tar on this host)."""
        return _TAR is not None

    def volume_folder(self, name: str) -> Path | None:
        """The volume's folder when it is readable on this host (local engine, local driver), else None."""
        volume = self._engine.inspect_volume(name)
        if not self._engine.info().local or volume.get("Driver") != "local" or (volume.get("Options") or {}):
            return None
        folder = Path(str(volume.get("Mountpoint") or ""))
        root = Path(self._engine.info().docker_root_dir, "volumes")
        # Only a real folder where Docker keeps volumes: never follow a link someone else may have placed.
        if folder.parent.parent != root or not folder.is_absolute() or _is_link_or_missing(folder):
            return None
        return folder

    def host_path_exists(self, path: str) -> bool | None:
        """Whether `path` exists on the engine's host (a bind mount's source); None when this cannot be
        checked because the engine has no image for a helper. Docker refuses a bind `Mounts` entry whose
        source is missing (unlike the old `Binds`, which would create it)."""
        with translated("list images"):
            images = [image["Id"] for image in self._api.call("GET", "/images/json")]
        if not images:
            return None
        mount = {"Type": "bind", "Source": path, "Target": TREE_MOUNT, "ReadOnly": True}
        try:
            with self._helper(mount, images[0], f"check host path {path}"):
                return True
        except EngineError as exc:
            if "does not exist" in exc.message:
                return False
            raise

    def _mounted_by_running_container(self, name: str) -> bool:
        """A running container could plant links in the volume while tar on the host writes into it;
        then the copy goes through a helper, where the daemon's chroot contains them."""
        with translated(f"list the containers using volume {name}"):
            return bool(self._api.call("GET", "/containers/json", {"filters": {"volume": [name]}}))

    def _clear_volume(self, name: str, image_id: str) -> None:
        folder = self.volume_folder(name)
        if folder is not None:
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            return
        if self._volume_is_empty(name, image_id):  # as on a target that just created it: nothing to run
            return
        hint = ("On a remote engine, the image of a service using the volume needs `sh` with `find` or `rm` to "
                "empty it; restore with --ignore-volumes to keep the volume's current content instead.")
        self._run_on_volume(name, image_id, _CLEAR_COMMAND, f"empty volume {name}", hint)

    def _run_on_volume(self, name: str, image_id: str, command: list[str], action: str, hint: str) -> None:
        """Run `command` in a helper from `image_id` with the volume at TREE_MOUNT (links in it then resolve
        inside the helper's root, never on the host)."""
        mount = {"Type": "volume", "Source": name, "Target": TREE_MOUNT}
        with self._helper(mount, image_id, action, command=command) as helper:
            try:
                with translated(action):
                    self._api.call("POST", path_of("/containers/{0}/start", helper))
                    status = self._api.call("POST", path_of("/containers/{0}/wait", helper), timeout=600).get("StatusCode")
            except EngineError as exc:  # the command is not in the image: the start itself fails
                exc.hint = hint
                raise
        if status != 0:
            raise EngineError(f"cannot {action} on the engine (the helper exited {status})", hint=hint)

    def _volume_is_empty(self, name: str, image_id: str) -> bool:
        """Read only the first members of the volume's tar: the root folder alone means empty."""
        stream = self.read_volume(name, image_id)
        try:
            with tarfile.open(fileobj=IterReader(stream), mode="r|") as tar:
                return sum(1 for _, _ in zip(range(2), tar)) < 2
        finally:
            stream.close()

    def _read(self, mount: dict[str, Any], image_id: str, action: str) -> Generator[bytes, None, None]:
        with self._helper(mount, image_id, action) as helper, translated(action):
            yield from self._api.stream("GET", path_of("/containers/{0}/archive", helper), {"path": TREE_MOUNT})

    def _write(self, mount: dict[str, Any], image_id: str, chunks: Iterable[bytes], action: str) -> None:
        with self._helper(mount, image_id, action) as helper, translated(action):
            for _ in self._api.stream("PUT", path_of("/containers/{0}/archive", helper), {"path": "/"}, chunks):
                pass

    @contextmanager
    def _helper(self, mount: dict[str, Any], image_id: str, action: str,
                command: list[str] | None = None) -> Iterator[str]:
        with translated(f"{action}: create a helper container"):
            helper = self._api.call("POST", "/containers/create", body={
                "Image": image_id, "Cmd": command or ["true"], "Entrypoint": [], "User": "0", "NetworkDisabled": True,
                "Labels": {LABEL_HELPER: mount["Source"]}, "HostConfig": {"Mounts": [mount]},
            })["Id"]
        try:
            yield helper
        finally:
            with translated(f"{action}: remove the helper container"):
                self._api.call("DELETE", path_of("/containers/{0}", helper), {"force": True})


def _read_here(folder: Path, entries: Sequence[str] | None = None, *, live: bool = False,
               leave_out: str | None = None) -> Generator[bytes, None, None]:
    """The same tar as the archive endpoint gives, made by GNU tar on this host (the engine's): about three
    times faster than the daemon's archive code, which matters inside the frozen window. Same format as
    the endpoint's: members under ckpt-tree/, numeric owners, whiteouts as devices 0/0.

    `entries` ("./a/b", as `tree_changes` names them): only those, not what folders among them hold.
    `live`: the folder is being written to (a pre-copy): a file that changed or went away while it was
    read is not an error; the caller reads whatever changed again once the writers are frozen.
    `leave_out`: a pattern of top-level entries (`./NAME*`) left out."""
    excluded = ["--anchored", f"--exclude={leave_out}", "--no-anchored"] if leave_out else []
    command = [str(_TAR), "-C", str(folder), "-c", *excluded, "--numeric-owner", "--one-file-system", "--xattrs",
               "--xattrs-include=security.capability", "--transform", f"s,^\\.,{TREE_PREFIX},S",
               # The same tree gives the same bytes (equal copies are shared by hash): no access or change
               # times, no pid in the extended header names, entries in name order.
               "--sort=name", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"]
    if live:
        command += ["--ignore-failed-read", "--warning=no-file-changed", "--warning=no-file-removed",
                    "--warning=no-file-shrank"]
    if entries is None:
        command.append(".")
    else:
        command += ["--no-recursion", "--null", "--verbatim-files-from", "-T", "-"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.PIPE if entries is not None else subprocess.DEVNULL)
    assert process.stdout is not None and process.stderr is not None
    if entries is not None:
        assert process.stdin is not None
        names = b"".join(os.fsencode(name) + b"\0" for name in entries)
        # Written by a thread: a long list must not block on a full pipe while tar waits for us to read.
        threading.Thread(target=_feed, args=(process.stdin, names), daemon=True).start()
    try:
        while chunk := process.stdout.read(_READ_SIZE):
            yield chunk
    finally:
        status, errors = _ended(process, process.stdout)
    if status != 0 and not (live and status == 1):  # 1: some file differed while read
        raise EngineError(f"reading {folder} failed (tar exited {status}): {errors[-500:]}")


def _feed(sink: IO[bytes], data: bytes) -> None:
    try:
        sink.write(data)
    except BrokenPipeError:
        pass  # tar stopped early: its exit status says why
    finally:
        sink.close()


def _write_here(folder: Path, chunks: Iterable[bytes], *, strip: bool = True) -> None:
    """Unpack a copy (members under ckpt-tree/, checked by `check_tree` when it came from elsewhere) into
    `folder` with GNU tar on this host: owners, modes, whiteouts and security.capability as recorded.
    `strip=False` keeps the top folder (`folder/ckpt-tree`, with the owner, mode and time of the tree's root)."""
    command = [str(_TAR), "-C", str(folder), "-x", *(["--strip-components=1"] if strip else []), "--numeric-owner",
               "--same-permissions", "--same-owner", "--xattrs", "--xattrs-include=security.capability"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None and process.stderr is not None
    try:
        for chunk in chunks:
            process.stdin.write(chunk)
    except BrokenPipeError:
        pass  # tar stopped early: its exit status and message say why
    finally:
        status, errors = _ended(process, process.stdin)
    if status != 0:
        raise EngineError(f"writing into {folder} failed (tar exited {status}): {errors[-500:]}")


def _ended(process: subprocess.Popen[bytes], data: IO[bytes]) -> tuple[int, str]:
    """Close our end of tar's data pipe (it then finishes, or stops on a broken pipe), then collect its
    exit status and what it wrote on stderr."""
    data.close()
    assert process.stderr is not None
    errors = process.stderr.read().decode(errors="replace").strip()
    process.stderr.close()
    return process.wait(), errors


def _require_upper(container: ContainerInfo) -> str:
    upper = upper_dir(container)
    if upper is None:
        driver = (container.attrs.get("GraphDriver") or {}).get("Name") or "unknown"
        raise EngineError(f"cannot reach the writable layer of {container.name}: storage driver {driver}",
                          hint="Writable layers are carried with the overlay2 storage driver; "
                          "snapshot with --ignore-rootfs to leave them out.")
    return upper


def _is_link_or_missing(path: Path) -> bool:
    try:
        return not stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return True
