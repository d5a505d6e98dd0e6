"""Tables for people never cut a cell short: two snapshots whose names differ only at the end stay apart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from compose_ckpt.const import ENV_HOME
from compose_ckpt.domain.manifest import Manifest, SnapshotStatus, now_iso
from compose_ckpt.domain.store import SnapshotStore

NAMES = ["before-the-upgrade-of-the-database-and-the-cache-2026-12-06-a",
         "before-the-upgrade-of-the-database-and-the-cache-2026-12-06-b"]


@pytest.mark.parametrize("columns", ["80", None])  # an 80-column terminal; a pipe without COLUMNS (rich: 80)
def test_ls_prints_whole_names_on_a_narrow_output(isolated_store: Path, columns: str | None) -> None:
    store = SnapshotStore(isolated_store)
    for name in NAMES:
        store.write(Manifest(name=name, project="proj", created=now_iso(), status=SnapshotStatus.COMPLETE,
                             stopped=True, compose_files=[], compose_hash="", services=["database", "cache", "web"],
                             dependencies={}))
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    env[ENV_HOME] = str(isolated_store)
    if columns:
        env["COLUMNS"] = columns
    listed = subprocess.run([sys.executable, "-m", "compose_ckpt", "-p", "proj", "ls"], env=env, check=True,
                            capture_output=True, text=True, timeout=60).stdout
    rows = [line.split() for line in listed.splitlines()[1:]]
    assert [row[0] for row in rows] == NAMES
    assert all("database,cache,web" in row for row in rows)  # the other cells are whole too
    assert "…" not in listed
