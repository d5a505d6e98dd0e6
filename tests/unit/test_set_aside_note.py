"""The store's note of the containers a `restore --force` killed and has not put back: what `recover` reads to
finish a rollback cut short (tests/integration/test_rollback_order.py proves that against the real engine)."""

from __future__ import annotations

from pathlib import Path

from compose_ckpt.domain.store.notes import SET_ASIDE, SetAside
from compose_ckpt.domain.store.store import SnapshotStore

DB = SetAside("p-db-1", "d" * 64, "ckpt-before-restore-1")
APP = SetAside("p-app-1", "a" * 64, "ckpt-before-restore-1")


def test_the_note_keeps_its_order_and_is_removed_once_empty(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.set_aside("p") == []
    store.note_set_aside("p", [DB, APP])
    assert store.set_aside("p") == [DB, APP]  # dependencies first, as noted
    store.note_set_aside("p", [APP])
    assert store.set_aside("p") == [APP]
    store.note_set_aside("p", [])
    assert not (store.project_dir("p") / SET_ASIDE).exists()


def test_lines_the_store_never_writes_are_left_out(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.note_set_aside("p", [DB])
    note = store.project_dir("p") / SET_ASIDE
    note.write_text(note.read_text() + "../evil " + "b" * 64 + " x\nshort line\np-x-1 notanid ckpt\n")
    assert store.set_aside("p") == [DB]
