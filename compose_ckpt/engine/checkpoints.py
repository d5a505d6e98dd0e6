"""Checkpoint calls: the endpoints the docker SDK lacks (POST/GET /containers/{id}/checkpoints, DELETE
/containers/{id}/checkpoints/{name}, POST /containers/{id}/start?checkpoint=NAME), retried while the daemon
reports a transient failure and failing with the key lines of CRIU's log; and a checkpoint's files carried
through the API alone, for an engine on another host."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compose_ckpt.const import LABEL_HELPER
from compose_ckpt.engine import pages_in_root, pages_stream
from compose_ckpt.engine.api import FileBody, Transport, path_of
from compose_ckpt.engine.connection import Connection
from compose_ckpt.engine.criu_log import criu_log_key_lines
from compose_ckpt.engine.pages_in_root import BytesCallback
from compose_ckpt.engine.pages_stream import GrowingFile, SentEarly
from compose_ckpt.engine.tar_stream import extract_tree, tar_stream
from compose_ckpt.engine.translation import retry_transient, translated
from compose_ckpt.engine.types import DumpProgress, PagesRoute, PlacedCheckpoint
from compose_ckpt.errors import CkptError, EngineError, EngineUnavailable, NotFoundError

HELPER_MOUNT = "/checkpoints"


class CheckpointCalls(Connection):
    """The checkpoint endpoints of the Engine API."""

    def __init__(self, transport: Transport, base_url: str, sdk_client: Callable[[], Any],
                 socket_path: str | None = None) -> None:
        super().__init__(transport, base_url, sdk_client, socket_path)
        # Container id -> the page folders placed in its root through the API, until emptied (pages_in_root.py).
        self._placed_through_api: dict[str, list[str]] = {}
        # Container id -> the page images sent while they were dumped, until its restore uses them (pages_stream.py).
        self._sent_early: dict[str, SentEarly] = {}
        # Container id -> set once its early sending has ended: its restore waits for that, not the whole move.
        self._early_sendings: dict[str, threading.Event] = {}

    def _dump_by_engine(self, container_id: str, name: str, *, leave_running: bool) -> None:
        """POST /containers/{id}/checkpoints: the daemon dumps the container into its checkpoint folder as `name`."""
        self._run_criu(f"checkpoint {container_id[:12]}", lambda: self._http.call(
            "POST", path_of("/containers/{0}/checkpoints", container_id),
            body={"CheckpointID": name, "Exit": not leave_running},
        ))

    def checkpoint_list(self, container_id: str) -> list[str]:
        with translated(f"list checkpoints of {container_id[:12]}"):
            entries = self._http.call("GET", path_of("/containers/{0}/checkpoints", container_id))
            return [entry["Name"] for entry in entries or []]

    def _dump_seen_in_progress(self, container_id: str, name: str, since: float) -> bool:
        """What the API alone shows of a dump requested after `since`: its folder, and no `checkpoint` event yet."""
        if name not in self.checkpoint_list(container_id):
            return False
        with translated(f"read the events of {container_id[:12]}"):
            events = self._api.events(since=since, until=time.time(), decode=True,
                                      filters={"type": ["container"], "event": ["checkpoint"], "container": [container_id]})
            return not any(True for _ in events)

    def checkpoint_delete(self, container_id: str, name: str) -> None:
        with translated(f"delete checkpoint {name} of {container_id[:12]}"):
            self._http.call("DELETE", path_of("/containers/{0}/checkpoints/{1}", container_id, name))

    def _restore_request(self, container_id: str, name: str, captured_log: Callable[[], str | None],
                         before_retry: Callable[[], None]) -> None:
        """POST /containers/{id}/start?checkpoint=NAME, with `_run_criu`'s retries and log lines."""
        self._run_criu(f"restore {container_id[:12]} from checkpoint {name}", lambda: self._http.call(
            "POST", path_of("/containers/{0}/start", container_id), {"checkpoint": name},
        ), captured_log, before_retry)

    def _run_criu(self, action: str, request: Callable[[], object],
                  captured_log: Callable[[], str | None] = lambda: None,
                  before_retry: Callable[[], None] = lambda: None) -> None:
        """A raw call that makes the daemon run CRIU: retried while the daemon reports its transient
        `already exists`; a failure carries the key lines of CRIU's log in its details."""
        try:
            with translated(action):
                retry_transient(request, before_retry)
        except EngineError as exc:
            exc.details = criu_log_key_lines(exc.message, captured_log())
            raise

    def _read_through_helper(self, container_id: str, name: str, destination: Path) -> int:
        """A checkpoint's files from the daemon's checkpoint folder into `destination`, as a tar stream; their size."""
        with self._checkpoints_helper(container_id) as helper, translated(f"read checkpoint {name}"):
            stream, _ = self._api.get_archive(helper, f"{HELPER_MOUNT}/{name}")
            return extract_tree(stream, name, destination)

    def _send_pages_early(self, container_id: str, folder: Path, dump: DumpProgress, estimate: int | None,
                          on_bytes: BytesCallback) -> int:
        """Send the page images CRIU is writing into `folder` into `container_id`'s root as they are written
        (engine/pages_stream.py); the container's restore then links to them instead of sending them."""
        name = pages_in_root.new_folder_name()
        self._placed_through_api.setdefault(container_id, []).append(name)  # emptied after the restore, or on failure
        before = 0  # bytes of the images sent completely

        def upload(image: Path, growing: GrowingFile | None) -> None:
            nonlocal before
            body = growing or FileBody(image, image.stat().st_size)
            with translated(f"send the page images of {container_id[:12]} as they are dumped"):
                self._http.upload(path_of("/containers/{0}/archive", container_id), {"path": "/"},
                                  pages_in_root.page_bodies_tar(name, [(image.name, body)]),
                                  lambda done, total: on_bytes(before + done, max(estimate or 0, before + total)))
            before += body.size

        taken = pages_stream.send_while_dumped(folder, dump, estimate, upload)
        if taken is None:
            return 0
        self._sent_early[container_id] = SentEarly(name, taken)
        return sum(taken.values())

    def _place_through_api(self, container_id: str, name: str, source: Path,
                           on_bytes: BytesCallback) -> PlacedCheckpoint:
        """An engine whose files are out of reach: the page images go into the container's root through its
        archive endpoint, the rest (with links to them) through the checkpoint helper (see
        engine/pages_in_root.py); when the root takes no files, everything goes through containerd. Page
        images sent while they were dumped (`_send_pages_early`) are not sent again when they match."""
        images = pages_in_root.page_images(source)
        folder, why = pages_in_root.new_folder_name(), "no page images"
        early = self._sent_early.pop(container_id, None)
        if early is not None and early.matches(images):
            folder, why = early.folder, ""
            size = sum(early.taken.values())
            on_bytes(size, size)
        elif images:
            try:
                with translated(f"upload the page images of checkpoint {name}"):
                    self._placed_through_api.setdefault(container_id, []).append(folder)
                    self._http.upload(path_of("/containers/{0}/archive", container_id), {"path": "/"},
                                      pages_in_root.pages_tar(folder, images), on_bytes)
                why = ""
            except EngineUnavailable:
                raise
            except CkptError as exc:  # a read-only root, a full disk: containerd's way may still work
                with contextlib.suppress(CkptError):  # what a half-done upload left
                    self._empty_placed_pages(container_id)
                why = f"the container's root takes no files ({exc.message})"
        links = {} if why else {image.name: f"/{folder}/{image.name}" for image in images}
        try:
            with self._checkpoints_helper(container_id) as helper, translated(f"upload checkpoint {name}"):
                if not self._api.put_archive(helper, HELPER_MOUNT, tar_stream(source, name, links)):
                    raise EngineError(f"the engine refused the upload of checkpoint {name}")
        except BaseException:
            with contextlib.suppress(CkptError):
                self._empty_placed_pages(container_id)
            raise
        if why:
            return PlacedCheckpoint([], PagesRoute.CONTAINERD, 0, why)
        return PlacedCheckpoint([], PagesRoute.CONTAINER_ROOT, sum(image.stat().st_size for image in images))

    def _empty_placed_pages(self, container_id: str) -> list[str]:
        """Replace each page folder this process placed in the container's root through the API by an empty
        file (see engine/pages_in_root.py); returns their names."""
        emptied = []
        for folder in self._placed_through_api.pop(container_id, []):
            with translated(f"remove the page images placed in {container_id[:12]}"):
                self._api.put_archive(container_id, "/", pages_in_root.emptied_tar(folder))
            emptied.append(folder)
        return emptied

    @contextmanager
    def _checkpoints_helper(self, container_id: str) -> Iterator[str]:
        """A created, never started container that bind-mounts `container_id`'s checkpoints folder.

        `docker start --checkpoint-dir` is refused by current Docker, and the
        engine's files may be on another host: the archive endpoints of such a
        helper reach that folder through the Docker API alone."""
        target = self.inspect(container_id)
        if target is None:
            raise NotFoundError(f"container {container_id[:12]} is gone")
        binds = {str(self._checkpoint_dir(container_id)): {"bind": HELPER_MOUNT, "mode": "rw"}}
        with translated("create checkpoint helper container"):
            helper = self._api.create_container(
                target.image_id, command=["true"], entrypoint=[], network_disabled=True,
                labels={LABEL_HELPER: target.id}, host_config=self._api.create_host_config(binds=binds),
            )["Id"]
        try:
            yield helper
        finally:
            with translated("remove checkpoint helper container"):
                self._api.remove_container(helper, force=True)
