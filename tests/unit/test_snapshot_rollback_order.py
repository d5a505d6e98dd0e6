"""A snapshot that fails half-way puts back exactly what it did, in an order that keeps each state:
a container its dump ended is started from that very checkpoint before the checkpoint is deleted, a
paused one is resumed, and held restart policies come back last (an `always` policy back on a stopped
container would let Docker start it fresh). The engine is faked (tests/fakes.py FakeStack), typed against EnginePort; the
same rollback against the real engine and CRIU is tests/integration/test_snapshot_rollback.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from compose_ckpt.domain.requests import SnapshotRequest
from compose_ckpt.domain.stack.snapshot import _take_over_failed, take_snapshot
from compose_ckpt.domain.store.manifest import Manifest, SnapshotStatus, now_iso
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import SnapshotFailed, UsageError
from tests.fakes import Call, FakeStack, grouped


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


BOTH = {"p-db-1", "p-web-1"}


CASES = [
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
]
# The runtime's dumps are in the store already: only the engine API's path saves after the window.
ORDERS = [pytest.param(direct, *case.values, id=f"{case.id}-{'runtime' if direct else 'engine-api'}")
          for direct in (False, True) for case in CASES if not (direct and "save" in case.values[1])]  # type: ignore[operator]


@pytest.mark.parametrize("direct, stop, fail, done, rollback", ORDERS)
def test_a_failed_snapshot_undoes_what_it_did_in_order(
        tmp_path: Path, stop: bool, fail: Call, done: list[tuple[str, set[str]]],
        rollback: list[tuple[str, set[str]]], direct: bool) -> None:
    stack = FakeStack({"db": (), "web": ()}, direct=direct)
    stack.fail(*fail)
    if direct:
        done, rollback = direct_steps(done), direct_steps(rollback)
    store = SnapshotStore(tmp_path)
    with pytest.raises(SnapshotFailed) as failed:
        # One at a time, so that the steps before the failure are always the same.
        take_snapshot(stack.project(), store, SnapshotRequest(name="s", stop=stop, parallel=1, ignore_rootfs=True))
    assert grouped(stack.calls) == done + rollback
    assert stack.state() == {"p-db-1": "running", "p-web-1": "running"}
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
