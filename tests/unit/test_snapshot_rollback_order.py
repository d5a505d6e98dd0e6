"""A snapshot that fails half-way puts back exactly what it did, in an order that keeps each state:
a container its dump ended is started from that very checkpoint before the checkpoint is deleted, a
paused one is resumed, and held restart policies come back last (an `always` policy back on a stopped
container would let Docker start it fresh). The engine is faked, typed against EnginePort; the same
rollback against the real engine and CRIU is tests/integration/test_snapshot_rollback.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from compose_ckpt.compose import ComposeProject
from compose_ckpt.compose.model import ServiceConfig
from compose_ckpt.const import LABEL_CONTAINER_NUMBER, LABEL_PROJECT, LABEL_SERVICE
from compose_ckpt.domain.manifest import Manifest, SnapshotStatus, now_iso
from compose_ckpt.domain.project import Project
from compose_ckpt.domain.requests import SnapshotRequest
from compose_ckpt.domain.snapshot import _take_over_failed, take_snapshot
from compose_ckpt.domain.store import SnapshotStore
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
from compose_ckpt.errors import EngineError, SnapshotFailed, UsageError
from tests.fakes import UntouchableEngine

SERVICES = ("db", "web")
IDS = {"db": "d" * 64, "web": "e" * 64}
SERVICE_OF = {container_id: service for service, container_id in IDS.items()}
# Not local: nothing of the daemon's host is read.
DOCKER_26 = EngineInfo(server_version="26.1.5", api_version="1.45", experimental=True, docker_root_dir="/var/lib/docker",
                       cgroup_version="2", kernel_version="6.1.0", architecture="x86_64", operating_system="Debian 12",
                       storage_driver="overlay2", containerd_version="1.7.24", runc_version="1.1.5", local=False)

Call = tuple[str, str]  # (what, container name)


class RecordingEngine(UntouchableEngine):
    """Two running containers, p-db-1 and p-web-1 (restart: always); records each call that changes one,
    and fails the call `fail` (what, container name)."""

    def __init__(self, fail: Call, direct: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.direct = direct  # dumps go straight into the store (the daemon's runtime), not through the API
        self.calls: list[Call] = []
        self.status = {service: "running" for service in SERVICES}

    def _container(self, service: str) -> ContainerInfo:
        labels = {LABEL_PROJECT: "p", LABEL_SERVICE: service, LABEL_CONTAINER_NUMBER: "1"}
        attrs = {"Id": IDS[service], "Name": f"/p-{service}-1", "Config": {"Image": "img", "Labels": labels},
                 "HostConfig": {"RestartPolicy": {"Name": "always"}, "NetworkMode": "p_default"}}
        return ContainerInfo(id=IDS[service], name=f"p-{service}-1", image="img", image_id="sha256:" + "1" * 64,
                             status=self.status[service], pid=0, exit_code=0, labels=labels, started_at="",
                             attrs=attrs)

    def _do(self, what: str, container_id: str, status: str | None = None) -> None:
        service = SERVICE_OF[container_id]
        if (what, f"p-{service}-1") == self.fail:
            raise EngineError(f"{what} failed")
        self.calls.append((what, f"p-{service}-1"))
        if status is not None:
            self.status[service] = status

    # --- what a snapshot reads
    def info(self) -> EngineInfo:
        return DOCKER_26

    def daemon_pid(self) -> int | None:
        return None

    def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return [self._container(service) for service in SERVICES]

    def inspect(self, ref: str) -> ContainerInfo | None:
        return self._container(SERVICE_OF[ref])

    def fingerprint(self, container: ContainerInfo) -> ProcessFingerprint | None:
        return None

    def wait_exited(self, container_id: str, timeout: float = 60.0) -> ContainerInfo:
        return self._container(SERVICE_OF[container_id])

    # --- what it changes
    def set_restart_policy(self, container_id: str, policy: RestartPolicy) -> None:
        self._do(f"policy {policy.as_text()}", container_id)

    def pause(self, container_id: str) -> None:
        self._do("pause", container_id, "paused")

    def unpause(self, container_id: str) -> None:
        self._do("unpause", container_id, "running")

    def checkpoint_create(self, container_id: str, name: str, *, leave_running: bool, into: Path | None = None,
                          options: CriuOptions = NO_CRIU_OPTIONS,
                          on_bytes: Callable[[int], None] = lambda done: None) -> DumpResult:
        self._do("dump", container_id, None if leave_running else "exited")
        if self.direct and into is not None:
            (into / "pages-1.img").write_bytes(b"x")
            return DumpResult(DumpPath.RUNTIME, 1)
        return DumpResult(DumpPath.ENGINE_API, fallback="the engine does not run on this host")

    def place_checkpoint(self, container_id: str, name: str, source: Path,
                         on_bytes: Callable[[int, int], None] = lambda done, total: None) -> PlacedCheckpoint:
        assert (source / "pages-1.img").is_file()
        self._do("place", container_id)
        return PlacedCheckpoint([], PagesRoute.CONTAINERD, 0)

    def copy_checkpoint_out(self, container_id: str, name: str, destination: Path) -> int:
        self._do("save", container_id)
        return 1

    def checkpoint_delete(self, container_id: str, name: str) -> None:
        self._do("delete", container_id)

    def start_from_checkpoint(self, container_id: str, name: str) -> None:
        self._do("start from checkpoint", container_id, "running")


def project(engine: RecordingEngine) -> Project:
    services = {name: ServiceConfig(name=name, image="img", container_name=None, depends_on=(), profiles=(),
                                    labels={}, replicas=1, has_build=False) for name in SERVICES}
    return Project(ComposeProject(name="p", working_dir=Path("/nowhere"), config_files=(), services=services,
                                  disabled_services=()), engine)


def direct_steps(steps: list[tuple[str, set[str]]]) -> list[tuple[str, set[str]]]:
    """The same steps when the runtime dumps straight into the store: nothing to save afterwards; a container
    its dump ended is started from its checkpoint placed back from the store, then that copy is deleted;
    the daemon's folder holds no other checkpoint to delete."""
    changed: list[tuple[str, set[str]]] = []
    placed: set[str] = set()
    for what, names in steps:
        if what == "start from checkpoint":
            changed.append(("place", names))
            placed |= names
        if what == "delete":
            names = names & placed
        if what != "save" and names:
            changed.append((what, names))
    return changed


def grouped(calls: list[Call]) -> list[tuple[str, set[str]]]:
    """Consecutive calls of one kind as one step: within a step the containers' order is not fixed."""
    steps: list[tuple[str, set[str]]] = []
    for what, name in calls:
        if steps and steps[-1][0] == what:
            steps[-1][1].add(name)
        else:
            steps.append((what, {name}))
    return steps


BOTH = {"p-db-1", "p-web-1"}


@pytest.mark.parametrize("direct", [False, True], ids=["engine-api", "runtime"])
@pytest.mark.parametrize("stop, fail, done, rollback", [
    pytest.param(
        True, ("dump", "p-web-1"),
        [("policy no", BOTH), ("pause", BOTH), ("dump", {"p-db-1"})],
        # db ended with its dump: started from its checkpoint, then the checkpoint goes; web is only paused.
        [("start from checkpoint", {"p-db-1"}), ("unpause", {"p-web-1"}), ("delete", {"p-db-1"}),
         ("policy always", BOTH)],
        id="stop-dump-fails"),
    pytest.param(
        True, ("save", "p-web-1"),
        [("policy no", BOTH), ("pause", BOTH), ("dump", BOTH), ("save", {"p-db-1"})],
        # both ended: both started from their checkpoints before either checkpoint is deleted
        [("start from checkpoint", BOTH), ("delete", BOTH), ("policy always", BOTH)],
        id="stop-save-fails"),
    pytest.param(
        False, ("dump", "p-web-1"),
        [("pause", BOTH), ("dump", {"p-db-1"})],
        [("unpause", BOTH), ("delete", {"p-db-1"})],
        id="live-dump-fails"),
])
def test_a_failed_snapshot_undoes_what_it_did_in_order(
        tmp_path: Path, stop: bool, fail: Call, done: list[tuple[str, set[str]]],
        rollback: list[tuple[str, set[str]]], direct: bool) -> None:
    if direct and fail[0] == "save":
        pytest.skip("the runtime's dumps are in the store already: nothing is saved after the window")
    engine = RecordingEngine(fail, direct)
    if direct:
        done, rollback = direct_steps(done), direct_steps(rollback)
    store = SnapshotStore(tmp_path)
    with pytest.raises(SnapshotFailed) as failed:
        # One at a time, so that the steps before the failure are always the same.
        take_snapshot(project(engine), store, SnapshotRequest(name="s", stop=stop, parallel=1, ignore_rootfs=True))
    assert grouped(engine.calls) == done + rollback
    assert engine.status == {"db": "running", "web": "running"}
    assert failed.value.message.endswith("; every service was left running as before")
    manifest = store.list("p")[0]
    assert manifest.status is SnapshotStatus.FAILED
    assert not (store.snapshot_dir("p", "s") / "checkpoints").exists()


@pytest.mark.parametrize("status, reused", [(SnapshotStatus.FAILED, True), (SnapshotStatus.COMPLETE, False),
                                            (SnapshotStatus.INCOMPLETE, False)])
def test_only_a_failed_snapshot_gives_its_name_up(tmp_path: Path, status: SnapshotStatus, reused: bool) -> None:
    """A retry with the same --name replaces a failed snapshot (it holds no checkpoint); an incomplete one
    keeps its checkpoints for `recover`, a complete one is a snapshot: neither is replaced."""
    store = SnapshotStore(tmp_path)
    store.write(Manifest(name="s", project="p", created=now_iso(), status=status, stopped=False, compose_files=[],
                         compose_hash="", services=[], dependencies={}))
    if reused:
        _take_over_failed(store, "p", "s")
        assert not store.exists("p", "s")
        return
    with pytest.raises(UsageError, match=f"already exists \\({status.value}\\)"):
        _take_over_failed(store, "p", "s")
    assert store.load("p", "s").status is status
