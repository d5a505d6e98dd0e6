"""Recovery and the page images restores place in container roots (engine/pages_in_root.py), with a fake
engine: what a killed restore noted is removed, and a copy placed from the store that failed to restore is
not left in Docker's folder to be tried again. The real engine's side: tests/integration/test_pages_in_root.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from compose_ckpt.domain.stack import recovery
from compose_ckpt.domain.stack.recovery import recover_interrupted
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, SnapshotStatus, now_iso
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import ContainerInfo, PagesRoute, PlacedCheckpoint, pages_in_root
from compose_ckpt.errors import EngineError, EngineUnavailable, NotFoundError, RecoveryFailed
from tests.fakes import UntouchableEngine

CONTAINER = "c" * 64


class FakeEngine(UntouchableEngine):
    def __init__(self, start_error: Exception | None = None, remove_error: Exception | None = None) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.start_error = start_error
        self.remove_error = remove_error

    def remove_placed_pages(self, container_id: str) -> list[str]:
        self.calls.append(f"remove pages {container_id[:1]}")
        if self.remove_error:
            raise self.remove_error
        return [f"{pages_in_root.FOLDER_PREFIX}0"] if container_id.startswith("a") else []

    def dump_in_progress(self, container_id: str, name: str, since: float) -> bool:
        return False

    def inspect(self, ref: str) -> ContainerInfo:
        return ContainerInfo(id=CONTAINER, name="p-web-1", image="img", image_id="sha256:" + "1" * 64,
                             status="exited", pid=0, exit_code=137, labels={}, started_at="", attrs={})

    def checkpoint_list(self, container_id: str) -> list[str]:
        return []  # Docker's copy was dropped: the store's is placed

    def place_checkpoint(self, container_id: str, name: str, source: Path,
                         on_bytes: Callable[[int, int], None] = lambda done, total: None) -> PlacedCheckpoint:
        self.calls.append("place")
        return PlacedCheckpoint([], PagesRoute.CONTAINER_ROOT, 100)

    def start_from_checkpoint(self, container_id: str, name: str) -> float:
        self.calls.append("start")
        if self.start_error:
            raise self.start_error
        return time.monotonic()

    def checkpoint_delete(self, container_id: str, name: str) -> None:
        self.calls.append("delete")


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path)


@pytest.fixture
def interrupted(store: SnapshotStore, monkeypatch: pytest.MonkeyPatch) -> SnapshotStore:
    """A --stop snapshot killed once its checkpoint was in the store and Docker's copy dropped."""
    monkeypatch.setattr(recovery, "QUIET_SECONDS", 0.0)
    record = ContainerRecord(service="web", container_id=CONTAINER, container_name="p-web-1", number=1, image="img",
                             image_id="sha256:" + "1" * 64, checkpoint="ckpt-s")
    store.write(Manifest(name="s", project="p", created=now_iso(), status=SnapshotStatus.INCOMPLETE, stopped=True,
                         compose_files=[], compose_hash="", services=["web"], dependencies={"web": []},
                         containers=[record]))
    (store.new_checkpoint_dir("p", "s", "p-web-1") / "inventory.img").write_bytes(b"")  # a dump, as CRIU writes one
    return store


def test_a_failed_restore_from_the_store_leaves_no_copy_in_docker(interrupted: SnapshotStore) -> None:
    engine = FakeEngine(start_error=EngineError("restore failed"))

    with pytest.raises(RecoveryFailed) as failed:
        recover_interrupted(engine, "p", interrupted)

    assert engine.calls == ["place", "start", "delete"]  # its page images are gone: placed afresh next time
    assert "docker start --checkpoint" not in " ".join(failed.value.details)
    assert [m.status for m in interrupted.list("p")] == [SnapshotStatus.INCOMPLETE]  # the store's copy is kept


def test_the_pages_a_killed_restore_noted_are_removed_first(store: SnapshotStore) -> None:
    store.note_restoring("p", ["a" * 64, "b" * 64])
    engine = FakeEngine()

    lines = recover_interrupted(engine, "p", store)

    assert engine.calls == ["remove pages a", "remove pages b"]
    assert lines == ["aaaaaaaaaaaa: removed the page images an interrupted restore left in its root"]
    assert store.restoring("p") == []


def test_a_container_gone_since_needs_nothing_removed(store: SnapshotStore) -> None:
    store.note_restoring("p", ["a" * 64])

    recover_interrupted(FakeEngine(remove_error=NotFoundError("gone")), "p", store)

    assert store.restoring("p") == []


def test_the_note_is_kept_while_the_engine_cannot_be_asked(store: SnapshotStore) -> None:
    store.note_restoring("p", ["a" * 64])

    recover_interrupted(FakeEngine(remove_error=EngineUnavailable("no daemon")), "p", store)

    assert store.restoring("p") == ["a" * 64]
