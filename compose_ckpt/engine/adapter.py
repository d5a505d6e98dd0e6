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
/proc and its runtime. This class chooses between those and the API; the work itself is local_checkpoints.py,
over the other code that runs on the daemon's machine: runtime.py (dumps by the daemon's runc),
pages_placement.py and pages_in_root.py (where a restore's files go), mount_propagation.py, ctrd_copies.py
(containerd's leftover copies), criu_log.py (the restore log) and procfs.py (/proc); local_daemon.py answers
what the domain asks about that machine.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from compose_ckpt.engine import procfs
from compose_ckpt.engine.checkpoints import CheckpointCalls
from compose_ckpt.engine.containers import ContainerCalls
from compose_ckpt.engine.criu_log import RestoreLogCatcher
from compose_ckpt.engine.hardlinks import link_or_copy_tree
from compose_ckpt.engine.images import ImageCalls
from compose_ckpt.engine.local_checkpoints import LocalCheckpoints
from compose_ckpt.engine.local_daemon import LocalDaemon
from compose_ckpt.engine.networks_volumes import NetworkVolumeCalls
from compose_ckpt.engine.pages_in_root import BytesCallback
from compose_ckpt.engine.runtime import DirectDumpUnavailable, runtime_checkpoint
from compose_ckpt.engine.trees import TreeTransfer
from compose_ckpt.engine.types import (
    NO_CRIU_OPTIONS,
    CriuOptions,
    DumpPath,
    DumpProgress,
    DumpResult,
    PlacedCheckpoint,
)
from compose_ckpt.errors import CkptError, EngineError, EngineUnavailable

_STALE_RUNTIME = "container with given ID already exists"
_log = logging.getLogger(__name__)


class Engine(ContainerCalls, CheckpointCalls, NetworkVolumeCalls, ImageCalls, LocalDaemon, LocalCheckpoints):
    """A connection to one Docker engine, with what it can do on the daemon's own host."""

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

    def _restore_once(self, container_id: str, name: str) -> None:
        with (RestoreLogCatcher(self._restore_log_paths(container_id)) as catcher,
              self._containerd_copies_removed(container_id, name) as mark_upload):
            self._restore_request(container_id, name, catcher.text, mark_upload)

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
        mount propagation (see `_fit_mount_propagation`); elsewhere everything goes through the API. Page
        images still being sent early (`send_pages_early`) are waited for: the restore uses them."""
        sending = self._early_sendings.pop(container_id, None)
        if sending is not None:
            sending.wait()
        if not self.info().local:
            return self._place_through_api(container_id, name, source, on_bytes)
        return self._place_here(container_id, name, source, on_bytes)

    def send_pages_early(self, container_id: str, folder: Path, dump: DumpProgress, estimate: int | None,
                         on_bytes: BytesCallback = lambda done, total: None) -> int:
        """Send the page images CRIU is writing into `folder` (on this host) into the root of this engine's
        container `container_id` as they are written, so that its restore does not wait for them: through
        the archive endpoint (engine/pages_stream.py), or on the daemon's host copied in the kernel
        (pages_in_root.place_while_written). Returns their bytes (0 when the dump failed, or the root takes
        no page images)."""
        ended = self._early_sendings[container_id] = threading.Event()
        try:
            if self.info().local:
                return self._send_pages_early_here(container_id, folder, dump, on_bytes)
            return self._send_pages_early(container_id, folder, dump, estimate, on_bytes)
        finally:
            ended.set()

    def remove_placed_pages(self, container_id: str) -> list[str]:
        """Remove the page images a restore placed in the container's root (engine/pages_in_root.py), also
        those of a run killed earlier; returns the folders removed. An engine reached through its API only:
        those this process placed are emptied."""
        if not self.info().local:
            return self._empty_placed_pages(container_id)
        return self._remove_pages_here(container_id)
