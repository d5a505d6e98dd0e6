"""Engine fakes for unit tests: what the domain asks the engine, without Docker.

`UntouchableEngine` fails the test at the first thing asked of it. A fake that answers some calls
subclasses it and defines those methods; wherever it is passed as the domain's `EnginePort`, mypy
checks every method it defines against the port (the contract the real adapter is checked against),
and a call it does not define still fails the test here.

`FakeStack` is a small compose stack on a fake engine that keeps state the way Docker does where the
domain's decisions depend on it: containers running, paused or exited, their restart policies, the
checkpoints in the daemon's folder, and which process runs (a fresh start gets a new one, a restore
from a checkpoint the one it was taken of). It records every call that changes something, in order,
and fails or "kills the command" at the call a test names. Snapshot, restore and recover are driven
through it in tests/unit/test_core_*.py; that Docker and CRIU really behave so is proven by the
integration tests.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from compose_ckpt.compose import ComposeProject
from compose_ckpt.compose.model import ServiceConfig, ServiceDependency
from compose_ckpt.const import LABEL_CONTAINER_NUMBER, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE
from compose_ckpt.domain.ports import TreePort
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.engine import (
    NO_CRIU_OPTIONS,
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


class UntouchableEngine:
    """An engine that must not be used at all (input refused before the engine is asked anything).

    `used` names what was asked anyway, for code that would swallow the AssertionError."""

    def __init__(self) -> None:
        self.used: list[str] = []

    def __getattr__(self, name: str) -> NoReturn:
        # Only called for what the class does not define; `used` is set in __init__, so subclasses call it.
        self.used.append(name)
        raise AssertionError(f"engine.{name} used, though this test expects the engine untouched")


# Not local: nothing of the daemon's host (/proc, its CRIU) is read.
DOCKER_26 = EngineInfo(server_version="26.1.5", api_version="1.45", experimental=True, docker_root_dir="/var/lib/docker",
                       cgroup_version="2", kernel_version="6.1.0", architecture="x86_64", operating_system="Debian 12",
                       storage_driver="overlay2", containerd_version="1.7.24", runc_version="1.1.5", local=False)
IMAGE_ID = "sha256:" + "1" * 64
PROCESS_FILE = "process"  # what the fake writes as a checkpoint's files: the number of the process it holds

Call = tuple[str, str]  # (what, container name), e.g. ("dump", "p-db-1")


def grouped(calls: Sequence[Call]) -> list[tuple[str, set[str]]]:
    """Consecutive calls of one kind as one step: within a step the containers' order is not fixed."""
    steps: list[tuple[str, set[str]]] = []
    for what, name in calls:
        if steps and steps[-1][0] == what:
            steps[-1][1].add(name)
        else:
            steps.append((what, {name}))
    return steps


class CommandKilled(BaseException):
    """The command was killed (SIGKILL) at the call a test named: from then on nothing it asks reaches the
    engine, so its rollback changes nothing and what it left is what the next command finds."""


@dataclass
class FakeContainer:
    id: str
    name: str
    service: str
    status: str  # running | paused | exited | created
    policy: RestartPolicy
    process: int  # which process runs; a fresh start makes a new one
    # in the daemon's folder: name -> the process it holds (None: no images, CRIU cannot restore from it)
    checkpoints: dict[str, int | None] = field(default_factory=dict)
    exit_code: int = 0


class FakeTrees:
    """Writable layers as tar streams (empty ones); volumes are not faked."""

    def __init__(self, stack: FakeStack) -> None:
        self.stack = stack

    def read_layer(self, container: ContainerInfo) -> Iterator[bytes]:
        self.stack.act("read layer", self.stack.container(container.id))
        buffer = io.BytesIO()
        tarfile.open(fileobj=buffer, mode="w").close()
        yield buffer.getvalue()

    def write_layer(self, container: ContainerInfo, chunks: Iterable[bytes]) -> None:
        for _ in chunks:
            pass
        self.stack.act("write layer", self.stack.container(container.id))

    def read_volume(self, name: str, image_id: str) -> Iterator[bytes]:
        raise AssertionError("volumes are not faked")

    def replace_volume(self, name: str, image_id: str, chunks: Iterable[bytes]) -> None:
        raise AssertionError("volumes are not faked")

    def update_volume(self, name: str, image_id: str, removed: Sequence[str], chunks: Iterable[bytes]) -> None:
        raise AssertionError("volumes are not faked")

    def volume_folder(self, name: str) -> Path | None:
        return None

    def read_folder(self, folder: Path, entries: Sequence[str] | None = None, *, live: bool = False,
                    ) -> Iterator[bytes]:
        raise AssertionError("folders are not faked")

    def unpack_copy(self, folder: Path, chunks: Iterable[bytes]) -> None:
        raise AssertionError("folders are not faked")

    def copies_here(self) -> bool:
        return True

    def host_path_exists(self, path: str) -> bool | None:
        return None


class FakeStack(UntouchableEngine):
    """Project `p`: one running container per service, `p-<service>-1`, restart policy `always`.

    `fail(what, name)` makes the next such call raise EngineError (before it changes anything); `kill_at(what, name)`
    raises CommandKilled there and leaves the engine deaf to the command (`revive` for the next command).
    `direct`: dumps go straight into the store (the daemon's runtime), not through the Docker API."""

    def __init__(self, services: Mapping[str, Sequence[str]], *, direct: bool = False) -> None:
        """`services`: name -> the services it depends on, in the order compose lists them."""
        super().__init__()
        self.services = dict(services)
        self.direct = direct
        self.estimate: int | None = None  # what memory_estimate answers
        self.calls: list[Call] = []
        self.failing: dict[Call, CkptError] = {}
        self.killing: Call | None = None
        self.gone = False
        self.processes = 0
        self.containers: dict[str, FakeContainer] = {}
        for number, service in enumerate(services, start=1):
            self._add(f"{number:x}" * 64, f"p-{service}-1", service, RestartPolicy("always"), "running")

    # --- for the tests
    def fail(self, what: str, name: str, error: CkptError | None = None) -> None:
        self.failing[(what, name)] = error or EngineError(f"{what} of {name} failed")

    def kill_at(self, what: str, name: str) -> None:
        self.killing = (what, name)

    def revive(self) -> None:
        """The next command: it reaches the engine again, and nothing fails on purpose any more."""
        self.gone, self.killing = False, None
        self.failing.clear()

    def state(self) -> dict[str, str]:
        return {c.name: c.status for c in self.containers.values()}

    def policies(self) -> dict[str, str]:
        return {c.name: c.policy.as_text() for c in self.containers.values()}

    def move_on(self) -> None:
        """Every running container started fresh (a new process), as after `docker compose restart`."""
        for container in self.containers.values():
            if container.status == "running":
                self.processes += 1
                container.process = self.processes

    def by_name(self, name: str) -> FakeContainer:
        return next(c for c in self.containers.values() if c.name == name)

    def project(self) -> Project:
        services = {name: ServiceConfig(name=name, image="img", container_name=None,
                                        depends_on=tuple(ServiceDependency(d) for d in deps), profiles=(),
                                        labels={}, replicas=1, has_build=False)
                    for name, deps in self.services.items()}
        return Project(ComposeProject(name="p", working_dir=Path("/nowhere"), config_files=(), services=services,
                                      disabled_services=()), self)

    def container(self, ref: str) -> FakeContainer:
        found = self.containers.get(ref) or next((c for c in self.containers.values() if c.name == ref), None)
        if found is None:
            raise NotFoundError(f"no container {ref}")
        return found

    def act(self, what: str, container: FakeContainer, *, record: bool = True) -> None:
        """Fail, or die, as the test asked; else record the call (the caller then makes the change). What
        changes nothing (`record` off) can be made to fail too, and is not recorded."""
        self._reach()
        call = (what, container.name)
        if call == self.killing:
            self.gone = True
            raise CommandKilled(f"killed at {what} of {container.name}")
        if call in self.failing:
            raise self.failing.pop(call)
        if record:
            self.calls.append(call)

    def _reach(self) -> None:
        if self.gone:
            raise EngineUnavailable("the command that asked was killed")

    def _add(self, container_id: str, name: str, service: str, policy: RestartPolicy, status: str) -> FakeContainer:
        self.processes += 1
        container = FakeContainer(container_id, name, service, status, policy, self.processes)
        self.containers[container_id] = container
        return container

    def _info(self, container: FakeContainer) -> ContainerInfo:
        labels = {LABEL_PROJECT: "p", LABEL_SERVICE: container.service, LABEL_CONTAINER_NUMBER: "1",
                  LABEL_ONEOFF: "False"}
        attrs = {"Id": container.id, "Name": f"/{container.name}", "Image": IMAGE_ID,
                 "Config": {"Image": "img", "Labels": labels},
                 "HostConfig": {"RestartPolicy": container.policy.as_api(), "NetworkMode": "p_default"}}
        return ContainerInfo(id=container.id, name=container.name, image="img", image_id=IMAGE_ID,
                             status=container.status, pid=0, exit_code=container.exit_code, labels=labels,
                             started_at="", attrs=attrs)

    def _require(self, container: FakeContainer, *statuses: str) -> None:
        if container.status not in statuses:
            raise EngineError(f"container {container.name} is {container.status}")

    # --- the engine
    @property
    def trees(self) -> TreePort:
        return FakeTrees(self)

    def info(self) -> EngineInfo:
        self._reach()
        return DOCKER_26

    def daemon_pid(self) -> int | None:
        return None

    def inspect(self, ref: str) -> ContainerInfo | None:
        self._reach()
        try:
            return self._info(self.container(ref))
        except NotFoundError:
            return None

    def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        self._reach()
        found = [self._info(c) for c in self.containers.values()]
        return [c for c in found if all(c.labels.get(key) == value for key, value in labels.items())]

    def create_container(self, recorded: dict[str, Any], references: dict[str, str] | None = None,
                         restart_policy: RestartPolicy | None = None) -> ContainerInfo:
        name = str(recorded["Name"]).lstrip("/")
        service = recorded["Config"]["Labels"][LABEL_SERVICE]
        policy = restart_policy or ContainerInfo.from_inspect(recorded).restart_policy
        container = FakeContainer(f"{len(self.containers) + 1:x}".rjust(64, "f"), name, service, "created", policy, 0)
        self.act("create", container)
        self.containers[container.id] = container
        return self._info(container)

    def start(self, container_id: str) -> None:
        container = self.container(container_id)
        self.act("start", container)
        self._require(container, "created", "exited")
        self.processes += 1
        container.status, container.process = "running", self.processes

    def pause(self, container_id: str) -> None:
        container = self.container(container_id)
        self.act("pause", container)
        self._require(container, "running")
        container.status = "paused"

    def unpause(self, container_id: str) -> None:
        container = self.container(container_id)
        self.act("unpause", container)
        self._require(container, "paused")
        container.status = "running"

    def kill(self, container_id: str) -> None:
        container = self.container(container_id)
        self.act("kill", container)
        self._require(container, "running", "paused")
        container.status, container.exit_code = "exited", 137

    def remove(self, container_id: str) -> None:
        container = self.container(container_id)
        self.act("remove", container)
        del self.containers[container.id]

    def wait_exited(self, container_id: str, timeout: float = 60.0) -> ContainerInfo:
        container = self.container(container_id)
        self.act("wait", container, record=False)
        self._require(container, "exited", "created")  # a real wait on a running one would time out
        return self._info(container)

    def image_id(self, reference: str) -> str | None:
        self._reach()
        return IMAGE_ID if reference in ("img", IMAGE_ID) else None

    def set_restart_policy(self, container_id: str, policy: RestartPolicy) -> None:
        container = self.container(container_id)
        self.act(f"policy {policy.as_text()}", container)
        container.policy = policy

    def memory_estimate(self, container: ContainerInfo) -> int | None:
        self._reach()
        return self.estimate

    def fingerprint(self, container: ContainerInfo) -> ProcessFingerprint | None:
        self._reach()
        found = self.container(container.id)
        return ProcessFingerprint(found.process, 0, 0, 0, 0) if found.status in ("running", "paused") else None

    def clear_stale_runtime(self, container_id: str) -> bool:
        self._reach()
        return False

    def criu_version(self) -> str | None:
        return None  # a remote engine's (DOCKER_26 is not local): not known here

    # --- checkpoints
    def checkpoint_create(self, container_id: str, name: str, *, leave_running: bool, into: Path | None = None,
                          options: CriuOptions = NO_CRIU_OPTIONS,
                          on_bytes: Callable[[int], None] = lambda done: None) -> DumpResult:
        container = self.container(container_id)
        self.act("dump", container)
        self._require(container, "running", "paused")
        if not leave_running:
            container.status = "exited"
        if self.direct and into is not None:
            (into / PROCESS_FILE).write_text(str(container.process))
            return DumpResult(DumpPath.RUNTIME, 1)
        container.checkpoints[name] = container.process
        return DumpResult(DumpPath.ENGINE_API, fallback="the engine does not run on this host")

    def checkpoint_list(self, container_id: str) -> list[str]:
        self._reach()
        return list(self.container(container_id).checkpoints)

    def checkpoint_delete(self, container_id: str, name: str) -> None:
        container = self.container(container_id)
        self.act("delete", container)
        if container.checkpoints.pop(name, None) is None:
            raise NotFoundError(f"no checkpoint {name} of {container.name}")

    def dump_in_progress(self, container_id: str, name: str, since: float) -> bool:
        self._reach()
        return False

    def copy_checkpoint_out(self, container_id: str, name: str, destination: Path) -> int:
        container = self.container(container_id)
        self.act("save", container)
        (destination / PROCESS_FILE).write_text(str(container.checkpoints[name]))
        return 1

    def place_checkpoint(self, container_id: str, name: str, source: Path,
                         on_bytes: Callable[[int, int], None] = lambda done, total: None) -> PlacedCheckpoint:
        container = self.container(container_id)
        self.act("place", container)
        held = source / PROCESS_FILE
        container.checkpoints[name] = int(held.read_text()) if held.is_file() else None  # copied as it is
        return PlacedCheckpoint([], PagesRoute.CONTAINERD, 0)

    def send_pages_early(self, container_id: str, folder: Path, dump: Any, estimate: int | None,
                         on_bytes: Callable[[int, int], None] = lambda done, total: None) -> int:
        return 0  # as an engine on this host: the restore copies the page images

    def remove_placed_pages(self, container_id: str) -> list[str]:
        self.container(container_id)
        self._reach()
        return []

    def start_from_checkpoint(self, container_id: str, name: str) -> float:
        container = self.container(container_id)
        self.act("start from checkpoint", container)
        self._require(container, "created", "exited")
        if name not in container.checkpoints:
            raise NotFoundError(f"no checkpoint {name} of {container.name}")
        process = container.checkpoints[name]
        if process is None:
            raise EngineError(f"CRIU found no images in checkpoint {name} of {container.name}")
        container.status, container.process = "running", process
        return time.monotonic()
