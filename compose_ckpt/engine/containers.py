"""Container calls: list, inspect in parallel, events, lifecycle (create, start, stop, pause, kill, remove,
wait), restart policies."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from compose_ckpt.engine.api import Unreachable, path_of
from compose_ckpt.engine.connection import Connection
from compose_ckpt.engine.specs import create_body
from compose_ckpt.engine.translation import retry_transient, translated
from compose_ckpt.engine.types import CONTAINER_ACTIONS, ContainerEvent, ContainerInfo, RestartPolicy
from compose_ckpt.errors import EngineError, NotFoundError

INSPECT_WORKERS = 8


class ContainerCalls(Connection):
    """The container endpoints of the Engine API."""

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
        """Remove the container (`container_id`: its full id), and first the checkpoint helpers a killed command
        left for it: once the container is gone, a kill between the two would leave them for good."""
        self._remove_helpers_of(container_id, f"container {container_id[:12]}")
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
