"""Engine adapter: every call compose-ckpt makes to Docker goes through `Engine`.

The calls of every snapshot and restore go through `engine.api` (JSON over the
engine's unix socket with the stdlib; through the docker SDK for tcp://, ssh://
and context hosts), including the checkpoint endpoints the SDK lacks: POST/GET
/containers/{id}/checkpoints, DELETE /containers/{id}/checkpoints/{name} and
POST /containers/{id}/start?checkpoint=NAME. Archives, image streams and events
use the docker SDK, imported on first use. API, SDK and connection errors are
translated into `compose_ckpt.errors` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compose_ckpt.const import ENV_DUMP_PATH, HOLDER_IMAGE, LABEL_HELPER, LABEL_HOLDER_FOR
from compose_ckpt.engine import ctrd_copies, host, pages_in_root
from compose_ckpt.engine.api import SdkTransport, Transport, UnixTransport, Unreachable, path_of
from compose_ckpt.engine.contexts import START_HINT, sdk_client_for
from compose_ckpt.engine.criu_images import (
    MOUNT_IMAGES,
    CriuMount,
    MountImageError,
    external_slaves,
    read_mounts,
    without_masters,
)
from compose_ckpt.engine.criu_log import RestoreLogCatcher, criu_log_key_lines
from compose_ckpt.engine.hardlinks import link_or_copy_tree
from compose_ckpt.engine.holder_image import holder_rootfs
from compose_ckpt.engine.pages_in_root import BytesCallback
from compose_ckpt.engine.runtime import DirectDumpUnavailable, Runtime, find_runtime, runtime_checkpoint
from compose_ckpt.engine.specs import create_body
from compose_ckpt.engine.tar_stream import extract_tree, tar_stream, write_upload_id
from compose_ckpt.engine.translation import from_sdk, retry_transient, translated
from compose_ckpt.engine.trees import TreeTransfer
from compose_ckpt.engine.types import (
    CONTAINER_ACTIONS,
    NO_CRIU_OPTIONS,
    ContainerEvent,
    ContainerInfo,
    CriuOptions,
    DumpPath,
    DumpResult,
    EngineInfo,
    PagesRoute,
    PlacedCheckpoint,
    ProcessFingerprint,
    RestartPolicy,
)
from compose_ckpt.errors import CkptError, EngineError, EngineUnavailable, NotFoundError

_STALE_RUNTIME = "container with given ID already exists"
HELPER_MOUNT = "/checkpoints"
INSPECT_WORKERS = 8
# The parts of a recorded network's IPAM config that a create request takes.
_IPAM_KEYS = ("Subnet", "IPRange", "Gateway", "AuxiliaryAddresses")
_log = logging.getLogger(__name__)


def _private_here(table: list[host.HostMount], container: ContainerInfo, mountpoint: str) -> bool:
    """Whether the source of the container's mount at `mountpoint` cannot be a peer group member here.
    Unknown sources (no mount table, a storage driver that does not say) count as fine: left as recorded."""
    if mountpoint == "/":
        source, mounted_later = container.rootfs_dir, True
    else:
        source, mounted_later = container.mount_sources.get(mountpoint), False
    return source is not None and host.can_join_peer_group(table, source, mounted_later) is False


def _remove_containerd_copies(temp_folders: list[ctrd_copies.TempFolder], before: set[Path],
                              placed: list[ctrd_copies.CheckpointImages]) -> None:
    """Best effort: a copy left behind never fails the restore it was made for."""
    try:
        ctrd_copies.remove_copies(temp_folders, before, placed)
    except OSError as exc:
        _log.warning("could not remove containerd's copy of a restored checkpoint: %s", exc)


def _link_pages(source: Path, target: Path, placed: pages_in_root.PlacedPages) -> None:
    """A checkpoint folder `target` like `source` whose `pages-N.img` are links to the copies `placed`
    in the container's root (followed by CRIU inside the container's mount namespace)."""
    link_or_copy_tree(source, target, leave_out=lambda path: path.parent == source and path.name in placed.names)
    for image in placed.names:
        os.symlink(f"{placed.folder}/{image}", target / image)


class Engine:
    """A connection to one Docker engine."""

    def __init__(self, transport: Transport, base_url: str, sdk_client: Callable[[], Any],
                 socket_path: str | None = None) -> None:
        self._http = transport
        self._base_url = base_url
        self._socket_path = socket_path
        self._make_sdk_client = sdk_client
        self._sdk_client: Any = None  # docker.DockerClient, made on first use
        self._sdk_lock = threading.Lock()
        self._info: EngineInfo | None = None
        self._info_lock = threading.Lock()  # parallel workers ask at once; one request is enough
        # Per daemon pid (a new one after a daemon restart): found by a walk of /proc, the same for every restore.
        self._containerd_temp: dict[int, list[ctrd_copies.TempFolder]] = {}
        # Container id -> the page folders placed in its root through the API, until emptied (pages_in_root.py).
        self._placed_through_api: dict[str, list[str]] = {}

    @classmethod
    def connect(cls, host: str | None = None, timeout: int = 120) -> Engine:
        """Connect to `host` (a URL such as unix://, tcp://, ssh://, or a Docker context name),
        else to what DOCKER_HOST (and DOCKER_TLS_VERIFY/DOCKER_CERT_PATH) selects."""
        where = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if where.startswith("unix://"):
            socket_path = where.removeprefix("unix://")
            transport = UnixTransport(socket_path, timeout)
            try:
                version = transport.negotiate()
            except Unreachable as exc:
                raise EngineUnavailable(f"Cannot reach the Docker daemon at {where}: {exc}", hint=START_HINT) from exc

            def sdk_client() -> Any:
                import docker

                return docker.DockerClient(base_url=where, version=version, timeout=timeout)

            engine = cls(transport, where, sdk_client, socket_path)
        else:
            client = sdk_client_for(host, where, timeout)
            engine = cls(SdkTransport(client.api), str(client.api.base_url), lambda: client)
        engine._prefetch_info()
        return engine

    @property
    def trees(self) -> TreeTransfer:
        """Writable layers and volumes as tar streams (engine/trees.py)."""
        return TreeTransfer(self, self._http)

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def _client(self) -> Any:
        """The docker SDK's client (docker.DockerClient) for what `engine.api` does not cover."""
        with self._sdk_lock:
            if self._sdk_client is None:
                try:
                    self._sdk_client = self._make_sdk_client()
                except Exception as exc:
                    raise from_sdk("connect", exc) or exc from exc
            return self._sdk_client

    @property
    def _api(self) -> Any:
        return self._client.api

    def close(self) -> None:
        self._http.close()
        if self._sdk_client is not None:
            self._sdk_client.close()

    # --- engine facts --------------------------------------------------------

    def info(self) -> EngineInfo:
        with self._info_lock:
            return self._info or self._read_info()

    def _prefetch_info(self) -> None:
        """Read the engine facts on a thread of their own while the caller goes on: nearly every command
        needs them (the daemon's folders, whether it is local), and the daemon takes a while to answer
        (it runs `runc --version` and more). A failure is left for the caller's own `info()` to report."""

        def read() -> None:
            with contextlib.suppress(CkptError):
                self.info()

        threading.Thread(target=read, name="engine-info", daemon=True).start()

    def _read_info(self) -> EngineInfo:
        with translated("read engine info"):
            info = self._http.call("GET", "/info")
            version = self._http.call("GET", "/version")
        components = {c.get("Name"): c.get("Version", "") for c in version.get("Components") or []}
        root = info.get("DockerRootDir", "")
        self._info = EngineInfo(
            server_version=version.get("Version", ""),
            api_version=version.get("ApiVersion", ""),
            experimental=bool(version.get("Experimental") or info.get("ExperimentalBuild")),
            docker_root_dir=root,
            cgroup_version=str(info.get("CgroupVersion", "")),
            kernel_version=info.get("KernelVersion", ""),
            architecture=info.get("Architecture", ""),
            operating_system=info.get("OperatingSystem", ""),
            storage_driver=info.get("Driver", ""),
            containerd_version=components.get("containerd", ""),
            runc_version=components.get("runc", ""),
            local=self._is_local(root),
        )
        return self._info

    @property
    def socket_path(self) -> str | None:
        """The unix socket this connection uses, None for tcp://, ssh:// and context engines."""
        return self._socket_path

    def daemon_pid(self) -> int | None:
        """Pid of the very daemon this connection talks to, when it runs on this host; else None."""
        socket_path = self.socket_path
        if socket_path is None or not self.info().local:
            return None
        return host.daemon_pid_for_socket(socket_path)

    def _is_local(self, root: str) -> bool:
        # docker-py names a unix-socket connection (a context's) http+docker://localhost (ssh is http+docker://ssh).
        containers = Path(root, "containers")
        return (
            (self._socket_path is not None or self.base_url == "http+docker://localhost")
            and containers.is_dir()
            and os.access(containers, os.R_OK | os.W_OK)
        )

    # --- containers ----------------------------------------------------------

    def inspect(self, ref: str) -> ContainerInfo | None:
        """The container named or identified by `ref`, or None when there is none."""
        try:
            with translated(f"inspect container {ref}"):
                return ContainerInfo.from_inspect(self._http.call("GET", path_of("/containers/{0}/json", ref)))
        except NotFoundError:
            return None

    def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        """All containers (running or not) carrying every label in `labels`."""
        return self._listed([f"{key}={value}" for key, value in labels.items()])

    def containers_with_label(self, key: str) -> list[ContainerInfo]:
        """All containers (running or not) that carry the label `key`, whatever its value."""
        return self._listed([key])

    def _listed(self, label_filters: list[str]) -> list[ContainerInfo]:
        """Containers matching every filter, in the engine's order, inspected in parallel; one removed
        between the listing and its inspection is left out."""
        with translated("list containers"):
            summaries = self._http.call("GET", "/containers/json", {"all": True, "filters": {"label": label_filters}})
        ids = [summary["Id"] for summary in summaries]
        if len(ids) < 2:
            found = [self.inspect(cid) for cid in ids]
        else:
            with ThreadPoolExecutor(max_workers=min(len(ids), INSPECT_WORKERS)) as pool:
                found = list(pool.map(self.inspect, ids))
        return [info for info in found if info is not None]

    def events(self, label: str, since: float, until: float) -> Iterator[ContainerEvent]:
        """GET /events: container start, die, destroy and rename events of containers carrying the label
        `label`, from `since` until `until` (epoch seconds; a future `until` streams live events until then).

        A bounded window lets a caller reconnect, and change the label, between windows."""
        filters = {"type": ["container"], "event": list(CONTAINER_ACTIONS), "label": [label]}
        with translated("read engine events"):
            for raw in self._api.events(since=since, until=until, filters=filters, decode=True):
                actor = raw.get("Actor") or {}
                yield ContainerEvent(action=raw.get("Action", ""), container_id=actor.get("ID", ""),
                                     attributes=dict(actor.get("Attributes") or {}), time=float(raw.get("time", 0)))

    def pause(self, container_id: str) -> None:
        with translated(f"pause {container_id[:12]}"):
            retry_transient(lambda: self._http.call("POST", path_of("/containers/{0}/pause", container_id)))

    def unpause(self, container_id: str) -> None:
        with translated(f"unpause {container_id[:12]}"):
            self._http.call("POST", path_of("/containers/{0}/unpause", container_id))

    def kill(self, container_id: str) -> None:
        """SIGKILL. On a paused container the signal lands before any thaw, so nothing runs after it."""
        with translated(f"kill {container_id[:12]}"):
            self._http.call("POST", path_of("/containers/{0}/kill", container_id))

    def set_restart_policy(self, container_id: str, policy: RestartPolicy) -> None:
        """`docker update --restart`: takes effect at once; it never starts or stops the container itself."""
        with translated(f"set restart policy {policy.as_text()} on {container_id[:12]}"):
            self._http.call("POST", path_of("/containers/{0}/update", container_id), body={"RestartPolicy": policy.as_api()})

    def remove(self, container_id: str) -> None:
        with translated(f"remove {container_id[:12]}"):
            self._http.call("DELETE", path_of("/containers/{0}", container_id), {"force": True})

    def wait_exited(self, container_id: str, timeout: float = 60.0) -> ContainerInfo:
        """Until the container is no longer running or paused: POST /containers/{id}/wait, which the
        engine answers the moment it has exited (no polling)."""
        with translated(f"wait for {container_id[:12]} to exit"):
            try:
                self._http.call("POST", path_of("/containers/{0}/wait", container_id),
                                {"condition": "not-running"}, timeout=timeout)
            except Unreachable as exc:
                if not exc.timed_out:
                    raise
                raise EngineError(f"container {container_id[:12]} did not exit within {timeout:.0f} s") from exc
        info = self.inspect(container_id)
        if info is None:
            raise NotFoundError(f"container {container_id[:12]} disappeared while waiting for it to exit")
        return info

    # --- checkpoints (raw endpoints) ----------------------------------------

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
        self._run_criu(f"checkpoint {container_id[:12]}", lambda: self._http.call(
            "POST", path_of("/containers/{0}/checkpoints", container_id),
            body={"CheckpointID": name, "Exit": not leave_running},
        ))
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

    def checkpoint_list(self, container_id: str) -> list[str]:
        with translated(f"list checkpoints of {container_id[:12]}"):
            entries = self._http.call("GET", path_of("/containers/{0}/checkpoints", container_id))
            return [entry["Name"] for entry in entries or []]

    def dump_in_progress(self, container_id: str, name: str, since: float) -> bool:
        """Whether the daemon may still be dumping checkpoint `name` of the container, for a
        `checkpoint create` requested after `since` (epoch seconds) by a client that has gone.

        The daemon carries on with such a request: it creates the checkpoint folder first, removes it
        on failure, and logs a `checkpoint` event when done. On this host /proc shows the work itself
        (see `host.checkpoint_activity`); the caller must see it stop for a moment, because the
        hand-overs between runc, containerd and the daemon leave short gaps. A remote engine shows only
        the folder and the event, and the event log keeps just the last few hundred events."""
        pid = self.daemon_pid()
        if pid is not None:
            if host.started_after(pid, since):
                return False  # a restarted daemon finishes no dump of its predecessor
            folder = self._checkpoint_dir(container_id, name)
            if folder.is_dir() and not any(folder.iterdir()):
                return True  # created, nothing extracted yet: CRIU or containerd are still at it
            return host.checkpoint_activity(pid, container_id, folder)
        if name not in self.checkpoint_list(container_id):
            return False
        with translated(f"read the events of {container_id[:12]}"):
            events = self._api.events(since=since, until=time.time(), decode=True,
                                      filters={"type": ["container"], "event": ["checkpoint"], "container": [container_id]})
            return not any(True for _ in events)

    def checkpoint_delete(self, container_id: str, name: str) -> None:
        with translated(f"delete checkpoint {name} of {container_id[:12]}"):
            self._http.call("DELETE", path_of("/containers/{0}/checkpoints/{1}", container_id, name))

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
        placed, _ = self._place_pages(root, folder, lambda done, total: None) if root else (None, "")
        if root is None or placed is None:
            return None
        sibling = f"{name}.{secrets.token_hex(4)}"
        try:
            _link_pages(folder, self._checkpoint_dir(container_id, sibling), placed)
        except OSError as exc:
            _log.warning("cannot link checkpoint %s for a restore through the container's root: %s", name, exc)
            with contextlib.suppress(OSError):
                shutil.rmtree(self._checkpoint_dir(container_id, sibling))
            with contextlib.suppress(CkptError):
                self._remove_pages(root, container_id)
            return None
        return sibling

    def clear_stale_runtime(self, container_id: str) -> bool:
        """On the daemon's host: remove runc's state of a container the daemon considers stopped, which a
        daemon killed during a restore leaves (with a mount) and which fails every later restore of it.
        Returns whether there was such state. Elsewhere it cannot be seen: False."""
        pid = self.daemon_pid()
        return pid is not None and host.remove_stale_runc_state(pid, container_id)

    def _restore_once(self, container_id: str, name: str) -> None:
        with (RestoreLogCatcher(self._restore_log_paths(container_id)) as catcher,
              self._containerd_copies_removed(container_id, name) as mark_upload):
            self._run_criu(f"restore {container_id[:12]} from checkpoint {name}", lambda: self._http.call(
                "POST", path_of("/containers/{0}/start", container_id), {"checkpoint": name},
            ), catcher.text, mark_upload)

    def _mark_upload(self, container_id: str, name: str) -> None:
        """Give the placed checkpoint a new upload id (see tar_stream.UPLOAD_ID_FILE), where its folder is reachable."""
        if self.info().local:
            write_upload_id(self._checkpoint_dir(container_id, name))

    @contextmanager
    def _containerd_copies_removed(self, container_id: str, name: str) -> Iterator[Callable[[], None]]:
        """Around a restore on the daemon's host: remove the copy of the checkpoint's images that containerd
        makes for it and leaves behind (see engine/ctrd_copies.py), once the daemon has answered, success
        or failure. Yields what gives the checkpoint a new upload id before each attempt: the id tells
        this restore's copies from any other's. A remote engine's copies are out of reach."""
        pid = self.daemon_pid()
        if pid is None:
            yield lambda: self._mark_upload(container_id, name)
            return
        folder = self._checkpoint_dir(container_id, name)
        temp_folders = self._containerd_temp.get(pid)
        if temp_folders is None:  # parallel restores may each look once: the answers agree
            temp_folders = self._containerd_temp[pid] = ctrd_copies.containerd_temp_folders(pid)
        before = ctrd_copies.existing_copies(temp_folders)
        placed: list[ctrd_copies.CheckpointImages] = []

        def mark_upload() -> None:
            write_upload_id(folder)
            images = ctrd_copies.checkpoint_images(folder)
            if images is not None:
                placed.append(images)

        with contextlib.suppress(OSError):  # no such checkpoint: the daemon's answer says so
            mark_upload()
        try:
            yield mark_upload
        except EngineUnavailable:
            raise  # no answer: the daemon may still be restoring from its copy
        except CkptError:
            _remove_containerd_copies(temp_folders, before, placed)
            raise
        _remove_containerd_copies(temp_folders, before, placed)

    def _restore_log_paths(self, container_id: str) -> list[Path]:
        """Where CRIU writes its restore log: `work/restore.log` in the task's bundle, which lies in the
        daemon's own containerd state (under its exec-root) or in a system containerd's."""
        pid = self.daemon_pid()
        if pid is None:
            return []
        states = [host.daemon_exec_root(pid) / "containerd" / "daemon", Path("/run/containerd")]
        return [state / "io.containerd.runtime.v2.task" / "moby" / container_id / "work" / "restore.log"
                for state in states]

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

    def _checkpoint_dir(self, container_id: str, name: str = "") -> Path:
        return Path(self.info().docker_root_dir, "containers", container_id, "checkpoints", name)

    def copy_checkpoint_out(self, container_id: str, name: str, destination: Path) -> int:
        """Copy a checkpoint's files into `destination`; return their size in bytes.

        On this host: hard links where possible. Remote engines: through a helper container (see
        `_checkpoints_helper`), as a tar stream over the API."""
        if self.info().local:
            return link_or_copy_tree(self._checkpoint_dir(container_id, name), destination)
        with self._checkpoints_helper(container_id) as helper, translated(f"read checkpoint {name}"):
            stream, _ = self._api.get_archive(helper, f"{HELPER_MOUNT}/{name}")
            return extract_tree(stream, name, destination)

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
        placed = None
        if root:
            placed, why = self._place_pages(root, source, on_bytes)
        try:
            if placed:
                _link_pages(source, target, placed)
            else:
                link_or_copy_tree(source, target)
            write_upload_id(target)
            fitted = self._fit_mount_propagation(container_id, target)
        except BaseException:
            if root and placed:
                with contextlib.suppress(CkptError):
                    self._remove_pages(root, container_id)
            raise
        if placed is None:
            return PlacedCheckpoint(fitted, PagesRoute.CONTAINERD, 0, why)
        return PlacedCheckpoint(fitted, PagesRoute.CONTAINER_ROOT, placed.size)

    def _place_through_api(self, container_id: str, name: str, source: Path,
                           on_bytes: BytesCallback) -> PlacedCheckpoint:
        """An engine whose files are out of reach: the page images go into the container's root through its
        archive endpoint, the rest (with links to them) through the checkpoint helper (see
        engine/pages_in_root.py); when the root takes no files, everything goes through containerd."""
        images = pages_in_root.page_images(source)
        folder, why = pages_in_root.new_folder_name(), "no page images"
        if images:
            try:
                with translated(f"upload the page images of checkpoint {name}"):
                    self._placed_through_api.setdefault(container_id, []).append(folder)
                    if not self._api.put_archive(container_id, "/", pages_in_root.pages_tar(folder, images, on_bytes)):
                        raise EngineError(f"the engine refused the page images of checkpoint {name}")
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

    def _container_root(self, container_id: str) -> tuple[pages_in_root.ContainerRoot | None, str]:
        """The container's root when the page images can go there, else None and why not."""
        container = self.inspect(container_id)
        if container is None:
            raise NotFoundError(f"container {container_id[:12]} is gone")
        root = pages_in_root.ContainerRoot.of(container, self.info().docker_root_dir)
        if root is None:
            driver = (container.attrs.get("GraphDriver") or {}).get("Name") or "unknown"
            return None, f"storage driver {driver}"
        return root, ""

    def _place_pages(self, root: pages_in_root.ContainerRoot, source: Path,
                     on_bytes: BytesCallback) -> tuple[pages_in_root.PlacedPages | None, str]:
        """The page images copied into the container's root; else None (containerd's way) and why."""
        images = pages_in_root.page_images(source)
        if not images:
            return None, "no page images"
        try:
            return pages_in_root.place(root, images, on_bytes), ""
        except OSError as exc:  # a full or read-only layer: containerd's way still works
            return None, f"the container's root takes no new files ({exc.strerror or exc})"

    def remove_placed_pages(self, container_id: str) -> list[str]:
        """Remove the page images a restore placed in the container's root (engine/pages_in_root.py), also
        those of a run killed earlier; returns the folders removed. An engine reached through its API only:
        those this process placed are emptied."""
        if not self.info().local:
            return self._empty_placed_pages(container_id)
        container = self.inspect(container_id)
        root = container and pages_in_root.ContainerRoot.of(container, self.info().docker_root_dir)
        return self._remove_pages(root, container_id) if root else []

    def _remove_pages(self, root: pages_in_root.ContainerRoot, container_id: str) -> list[str]:
        try:
            return pages_in_root.remove(root)
        except OSError as exc:
            raise EngineError(f"cannot remove the page images placed in the root of {container_id[:12]}: {exc}") from exc

    def _fit_mount_propagation(self, container_id: str, folder: Path) -> list[str]:
        """Drop, in the placed checkpoint, each mount's link to a peer group outside the container that this
        host cannot give it back; returns their container paths.

        On a host whose mounts are shared (systemd's default; Docker makes its data root shared), the
        container's root file system and its volumes are slaves of the host's mounts, and CRIU records
        that. On restore it joins each to the peer group of its source here, and the kernel refuses a
        private source: `mnt-v2: Failed to copy sharing from ...: Invalid argument`. A container started
        fresh here would get private mounts there, so the restored one gets the same. The files are
        replaced, not rewritten: the store's copy may be a hard link to them."""
        pid = self.daemon_pid()
        if pid is None:
            return []
        linked: dict[Path, tuple[bytes, list[CriuMount]]] = {}
        for image in sorted(folder.glob(MOUNT_IMAGES)):
            try:
                data = image.read_bytes()
                outside = external_slaves(read_mounts(data))
            except (OSError, MountImageError):
                continue  # not as this reader knows them: left to CRIU as they are
            if outside:
                linked[image] = (data, outside)
        if not linked:
            return []
        container = self.inspect(container_id)
        if container is None:
            raise NotFoundError(f"container {container_id[:12]} is gone")
        table = host.mount_table(pid)
        fitted: list[str] = []
        for image, (data, outside) in linked.items():
            private = {m.mnt_id: m.mountpoint for m in outside if _private_here(table, container, m.mountpoint)}
            if private:
                replacement = image.with_name(image.name + ".fitted")
                replacement.write_bytes(without_masters(data, set(private)))
                os.replace(replacement, image)
                fitted += private.values()
        return fitted

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
                labels={LABEL_HELPER: container_id}, host_config=self._api.create_host_config(binds=binds),
            )["Id"]
        try:
            yield helper
        finally:
            with translated("remove checkpoint helper container"):
                self._api.remove_container(helper, force=True)

    def fingerprint(self, container: ContainerInfo) -> ProcessFingerprint | None:
        """Memory-layout fingerprint of the container's init process; None when /proc shows none."""
        if not container.pid or not self.info().local:
            return None
        return host.process_fingerprint(container.pid)

    # --- images -------------------------------------------------------------

    def image_id(self, reference: str) -> str | None:
        """The id of the image `reference` names on this engine, or None."""
        try:
            with translated(f"inspect image {reference}"):
                return str(self._http.call("GET", path_of("/images/{0}/json", reference))["Id"])
        except NotFoundError:
            return None

    def save_image(self, reference: str) -> Iterator[bytes]:
        """`docker save` of one image (with its tag), streamed."""
        with translated(f"save image {reference}"):
            yield from self._api.get_image(reference, chunk_size=1024**2)

    def load_image(self, chunks: Iterable[bytes]) -> None:
        """`docker load` from a stream."""
        with translated("load image"):
            for _ in self._api.load_image(chunks):
                pass

    # --- recreating containers, networks, volumes ----------------------------

    def remove_network(self, name: str) -> None:
        """Remove a network; one that is already gone is fine."""
        try:
            with translated(f"remove network {name}"):
                self._http.call("DELETE", path_of("/networks/{0}", name))
        except NotFoundError:
            pass

    def network_exists(self, name: str) -> bool:
        try:
            self.inspect_network(name)
            return True
        except NotFoundError:
            return False

    def inspect_network(self, name: str) -> dict[str, Any]:
        with translated(f"inspect network {name}"):
            return dict(self._http.call("GET", path_of("/networks/{0}", name)))

    def list_networks(self) -> list[dict[str, Any]]:
        """Every network of the engine, as GET /networks lists them (with their IPAM config and labels)."""
        with translated("list networks"):
            return [dict(network) for network in self._http.call("GET", "/networks")]

    def create_network(self, recorded: dict[str, Any], *, recorded_subnets: bool) -> None:
        """Create a network like the recorded `docker network inspect` document: its driver and options, and
        with `recorded_subnets` its IPAM config (subnets, ranges, gateways), so that its containers can get
        their addresses back; else the engine picks the subnets."""
        ipam = recorded.get("IPAM") or {}
        config = [{key: entry[key] for key in _IPAM_KEYS if entry.get(key)}
                  for entry in ipam.get("Config") or [] if isinstance(entry, dict) and entry.get("Subnet")]
        body = {
            "Name": recorded["Name"], "Driver": recorded.get("Driver"), "Options": recorded.get("Options") or None,
            "Labels": recorded.get("Labels") or None, "Internal": bool(recorded.get("Internal")),
            "Attachable": bool(recorded.get("Attachable")), "EnableIPv6": bool(recorded.get("EnableIPv6")),
            "IPAM": {"Driver": ipam.get("Driver") or "default", "Config": config if recorded_subnets else [],
                     "Options": ipam.get("Options")},
        }
        with translated(f"create network {recorded['Name']}"):
            self._http.call("POST", "/networks/create", body=body)

    def inspect_volume(self, name: str) -> dict[str, Any]:
        with translated(f"inspect volume {name}"):
            return dict(self._http.call("GET", path_of("/volumes/{0}", name)))

    def volume_exists(self, name: str) -> bool:
        try:
            self.inspect_volume(name)
            return True
        except NotFoundError:
            return False

    def create_volume(self, recorded: dict[str, Any]) -> None:
        body = {"Name": recorded["Name"], "Driver": recorded.get("Driver"),
                "DriverOpts": recorded.get("Options") or None, "Labels": recorded.get("Labels") or None}
        with translated(f"create volume {recorded['Name']}"):
            self._http.call("POST", "/volumes/create", body=body)

    def remove_volume(self, name: str) -> None:
        """Remove a volume; one that is already gone is fine."""
        try:
            with translated(f"remove volume {name}"):
                self._http.call("DELETE", path_of("/volumes/{0}", name))
        except NotFoundError:
            pass

    def create_container(self, recorded: dict[str, Any], references: dict[str, str] | None = None,
                         restart_policy: RestartPolicy | None = None) -> ContainerInfo:
        """Create (not start) a container from a recorded `docker inspect` document, same name and config
        (with `restart_policy` instead of the recorded one when given).

        `references` maps the ids of containers it joins (network, ipc, pid, volumes_from) to their names now."""
        name, body = create_body(recorded, references)
        if restart_policy is not None:
            body["HostConfig"] = {**body["HostConfig"], "RestartPolicy": restart_policy.as_api()}
        with translated(f"create container {name}"):
            created = self._http.call("POST", "/containers/create", {"name": name}, body=body)
            return ContainerInfo.from_inspect(self._http.call("GET", path_of("/containers/{0}/json", created["Id"])))

    def start(self, container_id: str) -> None:
        with translated(f"start {container_id[:12]}"):
            self._http.call("POST", path_of("/containers/{0}/start", container_id))

    def stop(self, container_id: str, timeout: int | None = None) -> None:
        """A graceful stop: the container's stop signal, SIGKILL after `timeout` (default: its own)."""
        with translated(f"stop {container_id[:12]}"):
            # The engine answers once the container has stopped: wait as long as it may take, and then some.
            wait = None if timeout is None else timeout + 60
            self._http.call("POST", path_of("/containers/{0}/stop", container_id), {"t": timeout}, timeout=wait)

    def ensure_holder_image(self) -> str:
        """The network holder image (see holder_image.py), imported on first use; returns its reference."""
        if self.image_id(HOLDER_IMAGE) is None:
            repository, tag = HOLDER_IMAGE.rsplit(":", 1)
            rootfs = holder_rootfs(self.info().architecture)
            changes = ['ENTRYPOINT ["/pause"]', f"LABEL {LABEL_HOLDER_FOR}=image"]
            with translated(f"import image {HOLDER_IMAGE}"):
                self._api.import_image_from_data(rootfs, repository=repository, tag=tag, changes=changes)
        return HOLDER_IMAGE
