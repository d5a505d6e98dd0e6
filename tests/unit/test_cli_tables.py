"""Tables for people never cut a cell short: two snapshots whose names differ only at the end stay apart."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from compose_ckpt.const import ENV_HOME
from compose_ckpt.domain.store.manifest import Manifest, SnapshotStatus, now_iso
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.output import relative_time
from tests.terminal import Terminal

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


def test_on_an_80_column_terminal_ls_drops_columns_before_it_wraps_a_row_and_shows_ages(isolated_store: Path) -> None:
    store = SnapshotStore(isolated_store)
    created = (datetime.now(UTC) - timedelta(minutes=3)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for name in ("first", "second"):
        store.write(Manifest(name=name, project="proj", created=created, status=SnapshotStatus.COMPLETE,
                             stopped=True, compose_files=[], compose_hash="", services=["database", "cache", "web"],
                             dependencies={}))
    terminal = Terminal([sys.executable, "-m", "compose_ckpt", "-p", "proj", "ls"], columns=80, rows=20)
    assert terminal.finish(timeout=60) == 0
    header, *rows = terminal.lines()
    assert header.split() == ["NAME", "CREATED", "AGE", "STATUS", "KIND", "SIZE"]  # SERVICES left out first
    assert rows[0].split()[:5] == ["first", created[:19] + "Z", "3", "min", "ago"]

    long_names = [name.replace("-and-the-cache", "") for name in NAMES]
    for name in long_names:  # long names: more columns go; names stay whole, each row on one line
        store.write(Manifest(name=name, project="proj", created=created, status=SnapshotStatus.COMPLETE,
                             stopped=True, compose_files=[], compose_hash="", services=["database", "cache", "web"],
                             dependencies={}))
    terminal = Terminal([sys.executable, "-m", "compose_ckpt", "-p", "proj", "ls"], columns=80, rows=20)
    assert terminal.finish(timeout=60) == 0
    header, *rows = terminal.lines()
    assert header.split() == ["NAME", "AGE", "STATUS", "SIZE"]
    assert sorted(row.split()[0] for row in rows) == sorted(["first", "second", *long_names])


def test_relative_times_read_as_people_say_them() -> None:
    now = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
    assert relative_time(now - timedelta(seconds=42), now) == "42 s ago"
    assert relative_time(now - timedelta(minutes=3, seconds=59), now) == "3 min ago"
    assert relative_time(now - timedelta(days=1, hours=5), now) == "1 day ago"
    assert relative_time(now + timedelta(hours=2), now) == "in 2 h"
    assert relative_time(now, now) == "now"


def stored_snapshot(store_home: Path, names: list[str], restored: bool = False) -> None:
    """Snapshot `one` of project `proj`, with a container of each name (its last restore recorded if asked)."""
    from compose_ckpt.domain.store.manifest import ContainerRecord, RestoreRecord, TreeCopy

    store = SnapshotStore(store_home)
    records = [ContainerRecord(service=name.split("-")[-2], container_id=str(index) * 64, container_name=name,
                               number=1, image="registry.example.com/team/some-image:2026.12", checkpoint="ckpt-one",
                               image_id="sha256:" + "1" * 64, size=3 << 20, dump_seconds=0.42,
                               layer=TreeCopy(size=10240, stored=255, seconds=0.1, sha256="0" * 64),
                               last_restore=RestoreRecord(at=now_iso(), pages="container-root", page_bytes=3 << 20,
                                                          place_seconds=0.01, restore_seconds=0.4) if restored else None)
               for index, name in enumerate(names)]
    store.write(Manifest(name="one", project="proj", created=now_iso(), status=SnapshotStatus.COMPLETE, stopped=True,
                         compose_files=[], compose_hash="", services=sorted({r.service for r in records}),
                         dependencies={}, containers=records))
    for record in records:
        (store.new_checkpoint_dir("proj", "one", record.container_name) / "pages-1.img").write_bytes(b"pages")


def inspect_on_80_columns() -> Terminal:
    terminal = Terminal([sys.executable, "-m", "compose_ckpt", "-p", "proj", "inspect", "one"], columns=80, rows=60)
    assert terminal.finish(timeout=60) == 0, "\n".join(terminal.lines())
    return terminal


def test_inspect_on_an_80_column_terminal_keeps_one_line_per_container(isolated_store: Path) -> None:
    names = [f"ckpt-demo-{service}-1" for service in ("database", "web")]
    stored_snapshot(isolated_store, names)
    lines = inspect_on_80_columns().lines()
    header = next(index for index, line in enumerate(lines) if line.startswith("SERVICE"))
    assert lines[header].split() == ["SERVICE", "CONTAINER", "SIZE", "DUMP", "LAYER"]  # IMAGE, DUMPED BY left out
    assert [line.split()[1] for line in lines[header + 1:header + 3]] == names
    assert all("10.0 KiB (255 B stored) in 0.10s" in line for line in lines[header + 1:header + 3])


@pytest.mark.parametrize("project", ["a-project-named-at-some-length", "a-project-named-at-very-great-length-indeed"])
def test_inspect_with_long_container_names_fits_80_columns_each_name_whole(isolated_store: Path, project: str) -> None:
    """No line is longer than 80 columns (none left for the terminal to wrap, mid-word or mid-row), and every
    container name is whole on one line of each table; with names too long for the other columns to wrap at
    spaces, those break within words."""
    names = [f"{project}-{service}-1" for service in ("database", "web")]
    stored_snapshot(isolated_store, names, restored=True)
    terminal = inspect_on_80_columns()
    lines = terminal.lines()
    assert max(len(line.rstrip()) for line in terminal.written_lines()) <= 80, "\n".join(terminal.written_lines())
    for name in names:
        assert sum(name in line for line in lines) == 2, "\n".join(lines)  # the dumps and the last restores
    assert any(line.startswith("created ") or " created " in line for line in lines)
