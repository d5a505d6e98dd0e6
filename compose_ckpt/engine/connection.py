"""One connection to a Docker engine: its transport, the docker SDK client made on first use, the engine's
facts, and the container lookup every resource needs. The resource calls (containers.py, checkpoints.py,
networks_volumes.py, images.py) build on it; `Engine` (adapter.py) puts them together."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from compose_ckpt.const import LABEL_HELPER
from compose_ckpt.engine import procfs
from compose_ckpt.engine.api import SdkTransport, Transport, UnixTransport, Unreachable, path_of
from compose_ckpt.engine.contexts import START_HINT, sdk_client_for
from compose_ckpt.engine.translation import from_sdk, translated
from compose_ckpt.engine.types import ContainerInfo, EngineInfo
from compose_ckpt.errors import CkptError, EngineUnavailable, NotFoundError


class Connection:
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

    @classmethod
    def connect(cls, host: str | None = None, timeout: int = 120) -> Self:
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
        return procfs.daemon_pid_for_socket(socket_path)

    def _is_local(self, root: str) -> bool:
        # docker-py names a unix-socket connection (a context's) http+docker://localhost (ssh is http+docker://ssh).
        containers = Path(root, "containers")
        return (
            (self._socket_path is not None or self.base_url == "http+docker://localhost")
            and containers.is_dir()
            and os.access(containers, os.R_OK | os.W_OK)
        )

    # --- lookups every resource uses -----------------------------------------

    def inspect(self, ref: str) -> ContainerInfo | None:
        """The container named or identified by `ref`, or None when there is none."""
        try:
            with translated(f"inspect container {ref}"):
                return ContainerInfo.from_inspect(self._http.call("GET", path_of("/containers/{0}/json", ref)))
        except NotFoundError:
            return None

    def _checkpoint_dir(self, container_id: str, name: str = "") -> Path:
        return Path(self.info().docker_root_dir, "containers", container_id, "checkpoints", name)

    # --- removals ------------------------------------------------------------

    def _remove_helpers_of(self, subject: str, what: str) -> None:
        """Remove our helper containers for `subject` (a container id or a volume name): a command killed,
        or whose daemon went away, while it held one could not remove it, and nothing else would."""
        with translated(f"list the helper containers of {what}"):
            helpers = self._http.call("GET", "/containers/json",
                                      {"all": True, "filters": {"label": [f"{LABEL_HELPER}={subject}"]}})
        for helper in helpers:
            self._delete_if_present(f"remove helper container {helper['Id'][:12]} of {what}",
                                    path_of("/containers/{0}", helper["Id"]), {"force": True})

    def _delete_if_present(self, what: str, path: str, params: dict[str, Any] | None = None) -> None:
        try:
            with translated(what):
                self._http.call("DELETE", path, params)
        except NotFoundError:
            pass
