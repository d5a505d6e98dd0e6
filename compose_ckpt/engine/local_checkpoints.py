"""Checkpoints on the daemon's own machine (`EngineInfo.local`): the work that takes its files, its /proc and
its runtime rather than the API. Dumps by the daemon's runc (runtime.py); page images placed in the
container's root, or linked for a checkpoint Docker took itself (pages_placement.py); the placed checkpoint
fitted to this host's mount propagation (mount_propagation.py); containerd's copies removed after each
restore (ctrd_copies.py); CRIU's restore log found; runc's stale state cleared. `Engine` (adapter.py)
chooses between these and the API."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from compose_ckpt.const import ENV_DUMP_PATH
from compose_ckpt.engine import ctrd_copies, mount_propagation, pages_in_root, pages_placement, procfs
from compose_ckpt.engine.api import Transport
from compose_ckpt.engine.connection import Connection
from compose_ckpt.engine.criu_log import restore_log_paths
from compose_ckpt.engine.pages_in_root import BytesCallback
from compose_ckpt.engine.runtime import DirectDumpUnavailable, Runtime, find_runtime
from compose_ckpt.engine.tar_stream import write_upload_id
from compose_ckpt.engine.types import DumpPath, DumpProgress, PlacedCheckpoint
from compose_ckpt.errors import NotFoundError


class LocalCheckpoints(Connection):
    """Checkpoint work through the daemon's files, /proc and runtime, on its own machine."""

    def __init__(self, transport: Transport, base_url: str, sdk_client: Callable[[], Any],
                 socket_path: str | None = None) -> None:
        super().__init__(transport, base_url, sdk_client, socket_path)
        # Per daemon pid (a new one after a daemon restart): found by a walk of /proc, the same for every restore.
        self._containerd_temp: dict[int, list[ctrd_copies.TempFolder]] = {}
        # Container id -> the page images copied into its root while they were dumped, until its restore.
        self._copied_early: dict[str, pages_in_root.PlacedPages] = {}

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

    def _place_here(self, container_id: str, name: str, source: Path, on_bytes: BytesCallback) -> PlacedCheckpoint:
        """`place_checkpoint` on the daemon's host: into Docker's checkpoint folder, the page images into the
        container's root when it allows it (see pages_placement.py)."""
        target = self._checkpoint_dir(container_id, name)
        if target.exists():
            shutil.rmtree(target)
        root, why = self._container_root(container_id)
        return pages_placement.place_here(container_id, source, target, root, why, on_bytes,
                                          lambda: self._fit_mount_propagation(container_id, target),
                                          self._copied_early.pop(container_id, None))

    def _send_pages_early_here(self, container_id: str, folder: Path, dump: DumpProgress,
                               on_bytes: BytesCallback) -> int:
        """`send_pages_early` on the daemon's host: the page images copied into the container's root as CRIU
        writes them (pages_in_root.place_while_written); its restore links to them instead of copying them."""
        root, _ = self._container_root(container_id)
        if root is None:
            return 0
        placed = pages_in_root.place_while_written(root, folder, dump, on_bytes)
        if placed is None:
            return 0
        self._copied_early[container_id] = placed
        return placed.size

    def _container_root(self, container_id: str) -> tuple[pages_in_root.ContainerRoot | None, str]:
        """The container's root when the page images can go there, else None and why not."""
        container = self.inspect(container_id)
        if container is None:
            raise NotFoundError(f"container {container_id[:12]} is gone")
        return pages_placement.container_root(container, self.info().docker_root_dir)

    def _remove_pages_here(self, container_id: str) -> list[str]:
        """`remove_placed_pages` on the daemon's host: every page folder at the top of the container's root."""
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
