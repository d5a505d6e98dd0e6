"""Restore's verdict on what the engine did: restored, or silently started fresh (a Docker failure mode).

The engine is faked here; that fingerprints differ on a real fresh start is proven against the real
engine in tests/integration/test_engine_roundtrip.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.requests import RestoreRequest
from compose_ckpt.domain.stack.restore import RestoreResult, restore_snapshot
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, SnapshotStatus, now_iso
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import ContainerInfo, EngineInfo, PagesRoute, PlacedCheckpoint, ProcessFingerprint
from compose_ckpt.errors import NeedsAdoption, RestoreFailed
from tests.fakes import DOCKER_26, UntouchableEngine

RECORDED = ProcessFingerprint(1, 2, 3, 4, 5)

class FakeEngine(UntouchableEngine):
    """Just enough of an engine for a restore of one stopped container; any other call fails the test."""

    engine_info = DOCKER_26

    def __init__(self, fingerprint_after: ProcessFingerprint | None) -> None:
        super().__init__()
        self.status = "exited"
        self.fingerprint_after = fingerprint_after
        self.calls: list[str] = []

    def info(self) -> EngineInfo:
        return self.engine_info

    def inspect(self, ref: str) -> ContainerInfo:
        return ContainerInfo(id="c" * 64, name="p-web-1", image="img", image_id="sha256:" + "1" * 64, status=self.status,
                             pid=42 if self.status == "running" else 0, exit_code=0, labels={}, started_at="",
                             attrs={})

    def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return [self.inspect("p-web-1")]  # the snapshot's own: no replica scaled up since

    def clear_stale_runtime(self, container_id: str) -> bool:
        return False  # no runc state left by a killed daemon

    def checkpoint_list(self, container_id: str) -> list[str]:
        return []

    def place_checkpoint(self, container_id: str, name: str, source: Path,
                         on_bytes: Callable[[int, int], None] = lambda done, total: None) -> PlacedCheckpoint:
        self.calls.append("place")
        return PlacedCheckpoint([], PagesRoute.CONTAINERD, 0)

    def remove_placed_pages(self, container_id: str) -> list[str]:
        return []  # none placed: the page images go through containerd here

    def start_from_checkpoint(self, container_id: str, name: str) -> float:
        self.calls.append("start")
        self.status = "running"
        return time.monotonic()

    def checkpoint_delete(self, container_id: str, name: str) -> None:
        self.calls.append("delete")

    def fingerprint(self, container: ContainerInfo) -> ProcessFingerprint | None:
        return self.fingerprint_after


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    store = SnapshotStore(tmp_path)
    record = ContainerRecord(service="web", container_id="c" * 64, container_name="p-web-1", number=1, image="img",
                             image_id="sha256:" + "1" * 64, checkpoint="ckpt-s", fingerprint=RECORDED.as_text())
    store.write(Manifest(name="s", project="p", created=now_iso(), status=SnapshotStatus.COMPLETE, stopped=True,
                         compose_files=[], compose_hash="", services=["web"], dependencies={"web": []},
                         containers=[record]))
    store.new_checkpoint_dir("p", "s", "p-web-1")
    return store


def restore(engine: EnginePort, store: SnapshotStore) -> RestoreResult:
    return restore_snapshot(engine, "p", store, RestoreRequest(snapshot="s"))


def test_matching_memory_layout_is_a_verified_restore(store: SnapshotStore) -> None:
    result = restore(FakeEngine(RECORDED), store)
    assert [c.verified for c in result.containers] == ["memory layout"]


def test_a_fresh_start_is_caught(store: SnapshotStore) -> None:
    engine = FakeEngine(ProcessFingerprint(9, 9, 9, 9, 9))
    with pytest.raises(RestoreFailed, match="started fresh, not restored"):
        restore(engine, store)
    assert engine.calls == ["place", "start", "delete"]  # Docker's copy of the checkpoint is cleaned up anyway


def test_without_a_readable_fingerprint_only_running_is_checked(store: SnapshotStore) -> None:
    result = restore(FakeEngine(None), store)
    assert [c.verified for c in result.containers] == ["running"]


class SlowCleanUp(FakeEngine):
    """The engine answered the restore a second before it returned (the page images it placed took that long to
    remove): the restored process has been running for that second."""

    def start_from_checkpoint(self, container_id: str, name: str) -> float:
        super().start_from_checkpoint(container_id, name)
        return time.monotonic() - 1.0


def test_the_settle_window_counts_from_the_engines_answer(store: SnapshotStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("compose_ckpt.domain.stack.restore.time.sleep", slept.append)
    result = restore(SlowCleanUp(RECORDED), store)
    assert [c.verified for c in result.containers] == ["memory layout"]
    assert slept == [0.0]  # the second of clean-up already covered the settle window: no further wait
    assert list(result.containers[0].seconds) == ["copy_in", "restore", "clean_up", "verify"]
    assert result.containers[0].seconds["clean_up"] >= 1.0


class Docker28(FakeEngine):
    """Docker 28 with the container running: anything that kills or restores would be recorded."""

    engine_info = replace(DOCKER_26, server_version="28.5.2")

    def kill(self, container_id: str) -> None:
        self.calls.append("kill")

    def pause(self, container_id: str) -> None:
        self.calls.append("pause")


def test_on_docker_28_a_snapshot_of_an_own_netns_container_is_refused_before_anything_is_killed(
        store: SnapshotStore) -> None:
    engine = Docker28(RECORDED)
    engine.status = "running"
    with pytest.raises(NeedsAdoption, match="p-web-1") as refused:
        restore_snapshot(engine, "p", store, RestoreRequest(snapshot="s", force=True))
    assert refused.value.exit_code == 1 and "compose-ckpt adopt`" in (refused.value.hint or "")
    assert engine.calls == []
