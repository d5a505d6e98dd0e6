"""Engine adapter: `Engine`, the one object through which compose-ckpt uses a Docker engine (it implements
domain/ports.py's EnginePort).

Its calls to Docker are one module per resource: connection.py (the transport, the engine's facts, the
container lookup), containers.py, checkpoints.py, networks_volumes.py, images.py, and trees.py (writable
layers and volumes as tar streams). The calls of every snapshot and restore go through `engine.api` (JSON
over the engine's unix socket with the stdlib; through the docker SDK for tcp://, ssh:// and context
hosts), including the checkpoint endpoints the SDK lacks. Archives, image streams and events use the docker
SDK, imported on first use. API, SDK and connection errors are translated into `compose_ckpt.errors` in
translation.py and nowhere else.

When the daemon runs on this machine, checkpoints take faster and leaner ways through its files, its
/proc and its runtime. This class chooses between those and the API; the work itself lives beside the other
code that runs on the daemon's host: runtime.py (dumps by the daemon's runc), pages_placement.py and
pages_in_root.py (where a restore's files go), mount_propagation.py, ctrd_copies.py (containerd's leftover
copies), criu_log.py (the restore log) and procfs.py (/proc); local_daemon.py answers what the domain asks
about that machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from compose_ckpt.const import ENV_DUMP_PATH
from compose_ckpt.engine import ctrd_copies, mount_propagation, pages_in_root, pages_placement, procfs
from compose_ckpt.engine.api import Transport
from compose_ckpt.engine.checkpoints import CheckpointCalls
from compose_ckpt.engine.containers import ContainerCalls
from compose_ckpt.engine.criu_log import RestoreLogCatcher, restore_log_paths
from compose_ckpt.engine.hardlinks import link_or_copy_tree
from compose_ckpt.engine.images import ImageCalls
from compose_ckpt.engine.local_daemon import LocalDaemon
from compose_ckpt.engine.networks_volumes import NetworkVolumeCalls
from compose_ckpt.engine.pages_in_root import BytesCallback
from compose_ckpt.engine.runtime import DirectDumpUnavailable, Runtime, find_runtime, runtime_checkpoint
from compose_ckpt.engine.tar_stream import write_upload_id
from compose_ckpt.engine.trees import TreeTransfer
from compose_ckpt.engine.types import (
    NO_CRIU_OPTIONS,
    CriuOptions,
    DumpPath,
    DumpResult,
    PlacedCheckpoint,
)
from compose_ckpt.errors import CkptError, EngineError, EngineUnavailable, NotFoundError

_STALE_RUNTIME = "container with given ID already exists"
_log = logging.getLogger(__name__)


class Engine(ContainerCalls, CheckpointCalls, NetworkVolumeCalls, ImageCalls, LocalDaemon):
    """A connection to one Docker engine, with what it can do on the daemon's own host."""

    def __init__(self, transport: Transport, base_url: str, sdk_client: Callable[[], Any],
                 socket_path: str | None = None) -> None:
        super().__init__(transport, base_url, sdk_client, socket_path)
        # Per daemon pid (a new one after a daemon restart): found by a walk of /proc, the same for every restore.
        self._containerd_temp: dict[int, list[ctrd_copies.TempFolder]] = {}

    @property
    def trees(self) -> TreeTransfer:
        """Writable layers and volumes as tar streams (engine/trees.py)."""
        return TreeTransfer(self, self._http)

    def checkpoint_create(self, container_id: str, name: str, *, leave_running: bool, into: Path | None = None,
                          options: CriuOptions = NO_CRIU_OPTIONS,
                          on_bytes: Callable[[int], None] = lambda done: None) -> DumpResult:
        """Dump the container's memory: with `into` (an empty private folder of the store), on the daemon's
        host, by the daemon's own runtime straight into that folder (engine/runtime.py; `on_bytes` gets
        the bytes written so far as it goes, `options` are passed to CRIU); otherwise, or when that runtime
        cannot be called (the result says why), by POST /containers/{id}/checkpoints, whose files stay in
        the daemon's checkpoint folder as checkpoint `name` (see `copy_checkpoint_out`)."""
        fallback = None
        if into is not None:
            try:
                runtime = self._runtime_for(container_id)
            except DirectDumpUnavailable as exc:
                fallback = str(exc)
            else:
                size = runtime_checkpoint(runtime, container_id, into, leave_running=leave_running, options=options,
                                          on_bytes=on_bytes)
                return DumpResult(DumpPath.RUNTIME, size)
        self._dump_by_engine(container_id, name, leave_running=leave_running)
        return DumpResult(DumpPath.ENGINE_API, fallback=fallback)

    def _runtime_for(self, container_id: str) -> Runtime:
        """The daemon's own runtime for the container, or DirectDumpUnavailable saying why not."""
        if os.environ.get(ENV_DUMP_PATH, "auto") == DumpPath.ENGINE_API.value:
            raise DirectDumpUnavailable(f"{ENV_DUMP_PATH}={DumpPath.ENGINE_API.value} asks for the Docker API")
        if self.daemon_pid() is None:
            raise DirectDumpUnavailable("the engine does not run on this host (or its process is not known)")
        container = self.inspect(container_id)
        if container is None:
            raise NotFoundError(f"container {container_id[:12]} is gone")
        return find_runtime(container.id, container.pid)

    def dump_in_progress(self, container_id: str, name: str, since: float) -> bool:
        """Whether the daemon may still be dumping checkpoint `name` of the container, for a
        `checkpoint create` requested after `since` (epoch seconds) by a client that has gone.

        The daemon carries on with such a request: it creates the checkpoint folder first, removes it
        on failure, and logs a `checkpoint` event when done. On this host /proc shows the work itself
        (see `procfs.checkpoint_activity`); the caller must see it stop for a moment, because the
        hand-overs between runc, containerd and the daemon leave short gaps. A remote engine shows only
        the folder and the event, and the event log keeps just the last few hundred events."""
        pid = self.daemon_pid()
        if pid is None:
            return self._dump_seen_in_progress(container_id, name, since)
        return procfs.dump_in_progress_here(pid, container_id, self._checkpoint_dir(container_id, name), since)

    def start_from_checkpoint(self, container_id: str, name: str) -> float:
        """POST /containers/{id}/start?checkpoint=NAME. The container must have exited. Returns the moment
        (time.monotonic()) the daemon answered: the restored processes run from then on.

        containerd deletes the task's bundle, and CRIU's restore.log in it, as soon as the restore
        fails: on this host the log is opened while the restore runs, so its lines can be shown.
        Page images placed in the container's root are removed once the daemon has answered. Those of a
        checkpoint Docker took itself (a safety checkpoint, a rollback's) go there too: see `_linked_copy`."""
        linked = self._linked_copy(container_id, name)
        try:
            self._restore_once(container_id, linked or name)
        except EngineUnavailable:
            raise  # no answer: the daemon may still be reading them; the next command's recovery removes them
        except CkptError as exc:
            if isinstance(exc, EngineError) and _STALE_RUNTIME in exc.message:
                exc.hint = ("A Docker daemon killed during an earlier restore left runc's state of this container "
                            "behind. Remove the container (`docker rm`); `compose-ckpt restore` recreates it "
                            "(on the daemon's host it does so by itself).")
            self._answered(container_id, linked)
            raise
        answered = time.monotonic()
        self._answered(container_id, linked)  # removing 2 GiB of page images takes ~0.5 s: not the restore's
        return answered

    def _answered(self, container_id: str, linked: str | None) -> None:
        """Once the daemon has answered a restore: the page images in the container's root and the linked
        copy are not needed any more (best effort: the restore's own outcome is what counts, and the next
        command's recovery removes page images left)."""
        if linked:
            with contextlib.suppress(CkptError):
                self.checkpoint_delete(container_id, linked)
        try:
            self.remove_placed_pages(container_id)
        except CkptError as exc:
            _log.warning("%s", exc)

    def _linked_copy(self, container_id: str, name: str) -> str | None:
        """For a checkpoint in Docker's folder that holds its page images itself: the name of a sibling made
        for this restore, whose small images are hard links to its own and whose `pages-N.img` are links to
        copies placed in the container's root (as `place_checkpoint` makes them). The checkpoint itself is
        left whole, whatever happens. None when the page images cannot go there (the restore then takes
        containerd's way with the checkpoint as it is)."""
        if not self.info().local:
            return None
        folder = self._checkpoint_dir(container_id, name)
        try:
            images = pages_in_root.page_images(folder)
        except OSError:
            return None  # no such checkpoint: the daemon's answer says so
        root, _ = self._container_root(container_id) if images else (None, "")
        return pages_placement.linked_copy(container_id, folder, root) if root else None

    def clear_stale_runtime(self, container_id: str) -> bool:
        """On the daemon's host: remove runc's state of a container the daemon considers stopped, which a
        daemon killed during a restore leaves (with a mount) and which fails every later restore of it.
        Returns whether there was such state. Elsewhere it cannot be seen: False."""
        pid = self.daemon_pid()
        return pid is not None and procfs.remove_stale_runc_state(pid, container_id)

    def _restore_once(self, container_id: str, name: str) -> None:
        with (RestoreLogCatcher(self._restore_log_paths(container_id)) as catcher,
              self._containerd_copies_removed(container_id, name) as mark_upload):
            self._restore_request(container_id, name, catcher.text, mark_upload)

    def _mark_upload(self, container_id: str, name: str) -> None:
        """Give the placed checkpoint a new upload id (see tar_stream.UPLOAD_ID_FILE), where its folder is reachable."""
        if self.info().local:
            write_upload_id(self._checkpoint_dir(container_id, name))

    def _containerd_copies_removed(self, container_id: str, name: str) -> AbstractContextManager[Callable[[], None]]:
        """Around a restore on the daemon's host: remove the copy of the checkpoint's images that containerd
        makes for it and leaves behind (see engine/ctrd_copies.py). Yields what gives the checkpoint a new
        upload id before each attempt. A remote engine's copies are out of reach."""
        pid = self.daemon_pid()
        if pid is None:
            return contextlib.nullcontext(lambda: self._mark_upload(container_id, name))
        temp_folders = self._containerd_temp.get(pid)
        if temp_folders is None:  # parallel restores may each look once: the answers agree
            temp_folders = self._containerd_temp[pid] = ctrd_copies.containerd_temp_folders(pid)
        return ctrd_copies.copies_removed(temp_folders, self._checkpoint_dir(container_id, name))

    def _restore_log_paths(self, container_id: str) -> list[Path]:
        """Where CRIU writes its restore log, on the daemon's host (see criu_log.restore_log_paths)."""
        pid = self.daemon_pid()
        return [] if pid is None else restore_log_paths(procfs.daemon_exec_root(pid), container_id)

    def copy_checkpoint_out(self, container_id: str, name: str, destination: Path) -> int:
        """Copy a checkpoint's files into `destination`; return their size in bytes.

        On this host: hard links where possible. Remote engines: through a helper container (see
        `_checkpoints_helper`), as a tar stream over the API."""
        if self.info().local:
            return link_or_copy_tree(self._checkpoint_dir(container_id, name), destination)
        return self._read_through_helper(container_id, name, destination)

    def place_checkpoint(self, container_id: str, name: str, source: Path,
                         on_bytes: BytesCallback = lambda done, total: None) -> PlacedCheckpoint:
        """Put checkpoint files from `source` where `docker start --checkpoint NAME` looks for them.

        On the daemon's host the page images go into the container's own root when it allows it (see
        engine/pages_in_root.py; `on_bytes` follows that copy), the placed copy is fitted to this host's
        mount propagation (see `_fit_mount_propagation`); elsewhere everything goes through the API."""
        if not self.info().local:
            return self._place_through_api(container_id, name, source, on_bytes)
        target = self._checkpoint_dir(container_id, name)
        if target.exists():
            shutil.rmtree(target)
        root, why = self._container_root(container_id)
        return pages_placement.place_here(container_id, source, target, root, why, on_bytes,
                                          lambda: self._fit_mount_propagation(container_id, target))

    def _container_root(self, container_id: str) -> tuple[pages_in_root.ContainerRoot | None, str]:
        """The container's root when the page images can go there, else None and why not."""
        container = self.inspect(container_id)
        if container is None:
            raise NotFoundError(f"container {container_id[:12]} is gone")
        return pages_placement.container_root(container, self.info().docker_root_dir)

    def remove_placed_pages(self, container_id: str) -> list[str]:
        """Remove the page images a restore placed in the container's root (engine/pages_in_root.py), also
        those of a run killed earlier; returns the folders removed. An engine reached through its API only:
        those this process placed are emptied."""
        if not self.info().local:
            return self._empty_placed_pages(container_id)
        container = self.inspect(container_id)
        root = container and pages_in_root.ContainerRoot.of(container, self.info().docker_root_dir)
        return pages_placement.remove_pages(root, container_id) if root else []

    def _fit_mount_propagation(self, container_id: str, folder: Path) -> list[str]:
        """Fit the checkpoint placed in `folder` to this host's mount propagation (see mount_propagation.py);
        returns the container paths of the mounts whose link to a peer group outside was dropped."""
        pid = self.daemon_pid()
        if pid is None:
            return []
        linked = mount_propagation.linked_outside(folder)
        if not linked:
            return []
        container = self.inspect(container_id)
        if container is None:
            raise NotFoundError(f"container {container_id[:12]} is gone")
        return mount_propagation.fit(linked, procfs.mount_table(pid), container)
