"""Hostile snapshot and project names, and tampered manifests: exit 2 (or the manifest's error), nothing written.

Every CLI call runs in-process against the per-test store (tests/conftest.py). A snapshot name is checked
once, where its request (`SnapshotRequest`, `RestoreRequest`) is built, which the CLI does before it
resolves the project or connects; the domain tests below build those requests with an engine that must
not be touched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.cli.main import run
from compose_ckpt.compose import ProjectOptions, load_project
from compose_ckpt.domain.requests import RestoreRequest, SnapshotRequest
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.domain.stack.restore import restore_snapshot
from compose_ckpt.domain.stack.snapshot import take_snapshot
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, ManifestError, SnapshotStatus, now_iso
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import ExitCode, NotFoundError, UsageError
from tests.fakes import UntouchableEngine

PROJECT = "proj"
BAD_NAMES = [
    "../escape", "..", ".", "a/b", "/etc", "snap/../../x", "x\x00y", "tab\tname", "new\nline", "bell\x07",
    "esc\x1b[31mred", "x" * 101, "y" * 100_000, "-leading-dash", "_leading", ".hidden", "", " ", "sp ace",
    "\uff53nap",  # fullwidth s
    "sn\u0430p",  # Cyrillic a
    "snap\u200b",  # zero-width space
    "snap\u202e",  # right-to-left override
    "snap\u0301",  # combining accent
    "\u2024\u2024",  # one-dot leaders, looks like ".."
    "caf\u00e9",
]
# An empty -p or --name means "not given" (as COMPOSE_PROJECT_NAME="" does): the default applies.
GIVEN_NAMES = [name for name in BAD_NAMES if name]


def ids(names: list[str]) -> list[str]:
    return [repr(name)[1:-1][:24] for name in names]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output and "internal error" not in output, output
    return code, output


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def manifest(name: str = "snap1", status: SnapshotStatus = SnapshotStatus.COMPLETE) -> Manifest:
    record = ContainerRecord(service="web", container_id="a" * 64, container_name="proj-web-1", number=1,
                             image="img", image_id="sha256:" + "1" * 64, checkpoint=f"ckpt-{name}", size=10)
    return Manifest(name=name, project=PROJECT, created=now_iso(), status=status, stopped=False,
                    compose_files=["/x/compose.yaml"], compose_hash="", services=["web"],
                    dependencies={"web": []}, containers=[record], engine={"docker": "26.1.4"})


def stored(home: Path, name: str = "snap1") -> SnapshotStore:
    store = SnapshotStore(home)
    store.write(manifest(name))
    checkpoint = store.checkpoint_dir(PROJECT, name, "proj-web-1")
    checkpoint.mkdir(parents=True)
    (checkpoint / "pages-1.img").write_bytes(b"pages")
    return store


# --- names on the command line ----------------------------------------------------------------------------


Command = Callable[[str, Path], list[str]]  # (name, output file) -> arguments
# "--" and "--project-name=" keep a name starting with "-" from being read as an option.
SNAPSHOT_COMMANDS: dict[str, Command] = {
    "inspect": lambda name, out: ["-p", PROJECT, "inspect", "--", name],
    "rm": lambda name, out: ["-p", PROJECT, "rm", "--", name],
    "rm-after-a-good-one": lambda name, out: ["-p", PROJECT, "rm", "--", "snap-ok", name],
    "export": lambda name, out: ["-p", PROJECT, "export", "-o", str(out), "--", name],
}
PROJECT_COMMANDS: dict[str, Command] = {
    "ls": lambda name, out: [f"--project-name={name}", "ls"],
    "inspect": lambda name, out: [f"--project-name={name}", "inspect", "snap-ok"],
    "prune": lambda name, out: [f"--project-name={name}", "prune", "--keep", "1"],
    "export": lambda name, out: [f"--project-name={name}", "export", "snap-ok", "-o", str(out)],
}


@pytest.mark.parametrize("name", BAD_NAMES, ids=ids(BAD_NAMES))
@pytest.mark.parametrize("command", SNAPSHOT_COMMANDS.values(), ids=SNAPSHOT_COMMANDS.keys())
def test_bad_snapshot_names(capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_store: Path,
                            command: Command, name: str) -> None:
    assert_refused_and_nothing_written(capsys, tmp_path, isolated_store, command, name, "invalid snapshot name")


@pytest.mark.parametrize("name", GIVEN_NAMES, ids=ids(GIVEN_NAMES))
@pytest.mark.parametrize("command", PROJECT_COMMANDS.values(), ids=PROJECT_COMMANDS.keys())
def test_bad_project_names(capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_store: Path,
                           command: Command, name: str) -> None:
    assert_refused_and_nothing_written(capsys, tmp_path, isolated_store, command, name, "invalid project name")


def assert_refused_and_nothing_written(capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_store: Path,
                                       command: Command, name: str, message: str) -> None:
    stored(isolated_store, "snap-ok")
    before = files_under(isolated_store)
    out = tmp_path / "exports" / "archive.tar.zst"
    out.parent.mkdir()

    code, output = cli(capsys, *command(name, out))

    assert code == ExitCode.USAGE, output
    assert message in output
    assert files_under(isolated_store) == before  # not even a lock file, and snap-ok is still there
    assert files_under(out.parent) == []


@pytest.mark.parametrize("name", GIVEN_NAMES, ids=ids(GIVEN_NAMES))
def test_bad_names_on_an_empty_store_create_no_store(capsys: pytest.CaptureFixture[str], isolated_store: Path,
                                                     name: str) -> None:
    for args in (["-p", PROJECT, "rm", "--", name], [f"--project-name={name}", "ls"],
                 ["-p", PROJECT, "inspect", "--", name]):
        code, _ = cli(capsys, *args)
        assert code == ExitCode.USAGE
    assert not isolated_store.exists()


@pytest.mark.parametrize("name", BAD_NAMES, ids=ids(BAD_NAMES))
def test_restore_refuses_a_bad_name_before_locking_or_asking_the_engine(isolated_store: Path, name: str) -> None:
    with pytest.raises(UsageError, match="invalid snapshot name"):
        restore_snapshot(UntouchableEngine(), PROJECT, SnapshotStore(isolated_store),
                         RestoreRequest(snapshot=name))
    assert not isolated_store.exists()


@pytest.mark.parametrize("name", GIVEN_NAMES, ids=ids(GIVEN_NAMES))
def test_snapshot_refuses_a_bad_name_before_locking_or_asking_the_engine(tmp_path: Path, isolated_store: Path,
                                                                         name: str) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: a\n")
    compose = load_project(ProjectOptions(environ={}, cwd=tmp_path, project_name=PROJECT))
    project = Project(compose, UntouchableEngine())
    with pytest.raises(UsageError, match="invalid snapshot name"):
        take_snapshot(project, SnapshotStore(isolated_store), SnapshotRequest(name=name))
    assert not isolated_store.exists()


@pytest.mark.parametrize("output", ["{tmp}/no/such/folder/a.tar.zst", "{tmp}", "{tmp}/file/a.tar.zst"],
                         ids=["missing-folder", "a-folder", "under-a-file"])
def test_export_to_a_place_that_cannot_be_written(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  isolated_store: Path, output: str) -> None:
    stored(isolated_store)
    (tmp_path / "file").write_text("a file, not a folder")
    before = files_under(tmp_path)
    code, text = cli(capsys, "-p", PROJECT, "export", "snap1", "-o", output.format(tmp=tmp_path))
    assert code == ExitCode.USAGE and "cannot write" in text
    assert files_under(tmp_path) == before  # no archive, no .partial left behind


# --- tampered manifests ---------------------------------------------------------------------------------------

Edit = Callable[[dict[str, Any]], None]


def setting(key: str, value: Any) -> Edit:
    return lambda document: document.__setitem__(key, value)


def setting_record(key: str, value: Any) -> Edit:
    return lambda document: document["containers"][0].__setitem__(key, value)


def deleting(key: str) -> Edit:
    return lambda document: document.pop(key)


TAMPERING: dict[str, Edit] = {
    "name-number": setting("name", 5), "name-traversal": setting("name", "../../etc"),
    "name-huge": setting("name", "n" * 1_000_000), "name-other-snapshot": setting("name", "snap2"),
    "project-null": setting("project", None), "project-traversal": setting("project", "../proj"),
    "created-number": setting("created", 5), "created-garbage": setting("created", "yesterday"),
    "created-without-zone": setting("created", "2026-01-01T00:00:00"), "created-huge": setting("created", "2" * 100_000),
    "status-unknown": setting("status", "done"), "status-list": setting("status", ["complete"]),
    "stopped-string": setting("stopped", "no"), "compose-files-string": setting("compose_files", "compose.yaml"),
    "compose-files-numbers": setting("compose_files", [1, 2]), "compose-hash-list": setting("compose_hash", []),
    "services-string": setting("services", "web"), "services-null-item": setting("services", ["web", None]),
    "dependencies-list": setting("dependencies", []), "dependencies-string": setting("dependencies", {"web": "db"}),
    "networks-mapping": setting("networks", {}), "networks-numbers": setting("networks", [1]),
    "volumes-string": setting("volumes", "data"), "engine-list": setting("engine", []),
    "engine-number": setting("engine", {"docker": 26}), "freeze-string": setting("freeze_seconds", "fast"),
    "freeze-negative": setting("freeze_seconds", -1), "freeze-huge-int": setting("freeze_seconds", 10**400),
    "total-bool": setting("total_seconds", True), "error-number": setting("error", 5),
    "phases-list": setting("phases", [1]), "phases-string": setting("phases", {"dump": "fast"}),
    "phases-negative": setting("phases", {"dump": -1}), "phases-bool": setting("phases", {"dump": True}),
    "format-other": setting("format", 2), "format-string": setting("format", "1"),
    "unknown-field": setting("surprise", 1), "services-missing": deleting("services"),
    "containers-string": setting("containers", "nope"), "containers-numbers": setting("containers", [5]),
    "containers-empty-record": setting("containers", [{}]),
    "container-name-traversal": setting_record("container_name", "../../../root"),
    "container-name-number": setting_record("container_name", 5),
    "checkpoint-traversal": setting_record("checkpoint", "../other"),
    "size-string": setting_record("size", "big"), "size-negative": setting_record("size", -1),
    "size-huge": setting_record("size", 10**30), "number-string": setting_record("number", "1"),
    "dump-null": setting_record("dump_seconds", None), "fingerprint-number": setting_record("fingerprint", 5),
    "inspect-list": setting_record("inspect", []), "service-unknown": setting_record("service", "ghost"),
    "image-number": setting_record("image", 5), "record-extra-field": setting_record("evil", True),
}
REPLACED: dict[str, bytes] = {
    "empty": b"", "not-json": b"{name: snap1", "a-list": b"[]", "null": b"null", "binary": bytes(range(256)),
    "nested-deep": b"[" * 100_000 + b"]" * 100_000, "huge-string": b'"' + b"s" * 5_000_000 + b'"',
}


def manifest_path(store: SnapshotStore) -> Path:
    return store.snapshot_dir(PROJECT, "snap1") / "manifest.json"


def assert_refused_everywhere(capsys: pytest.CaptureFixture[str], store: SnapshotStore) -> None:
    with pytest.raises(ManifestError) as caught:
        store.load(PROJECT, "snap1")
    assert str(manifest_path(store)) in caught.value.message
    assert [m.status for m in store.list(PROJECT)] == [SnapshotStatus.INVALID]  # never picked by restore
    with pytest.raises(NotFoundError):
        store.latest_complete(PROJECT)

    code, output = cli(capsys, "-p", PROJECT, "ls", "--json")
    [listed] = json.loads(output)
    assert code == ExitCode.OK and listed["status"] == "invalid" and str(manifest_path(store)) in listed["error"]
    code, output = cli(capsys, "-p", PROJECT, "inspect", "snap1")
    assert code == ManifestError.exit_code == ExitCode.ARCHIVE and str(manifest_path(store)) in output
    code, output = cli(capsys, "-p", PROJECT, "prune", "--keep", "5", "--json")  # removed like a failed one
    assert code == ExitCode.OK and json.loads(output)["removed"] == ["snap1"]
    assert not store.snapshot_dir(PROJECT, "snap1").exists()


@pytest.mark.parametrize("edit", TAMPERING.values(), ids=TAMPERING.keys())
def test_a_tampered_manifest_field(capsys: pytest.CaptureFixture[str], isolated_store: Path, edit: Edit) -> None:
    store = stored(isolated_store)
    document = json.loads(manifest_path(store).read_text())
    edit(document)
    manifest_path(store).write_text(json.dumps(document))
    assert_refused_everywhere(capsys, store)


@pytest.mark.parametrize("content", REPLACED.values(), ids=REPLACED.keys())
def test_a_manifest_replaced_by_garbage(capsys: pytest.CaptureFixture[str], isolated_store: Path,
                                        content: bytes) -> None:
    store = stored(isolated_store)
    manifest_path(store).write_bytes(content)
    assert_refused_everywhere(capsys, store)


def test_the_untampered_manifest_passes_the_same_checks(capsys: pytest.CaptureFixture[str],
                                                        isolated_store: Path) -> None:
    """The control case: without tampering, the snapshot is loaded, listed and inspected."""
    store = stored(isolated_store)
    assert [m.name for m in store.list(PROJECT)] == ["snap1"]
    code, output = cli(capsys, "-p", PROJECT, "inspect", "snap1")
    assert code == ExitCode.OK and "snap1" in output


@pytest.mark.parametrize("folder", [".removing-snap1", "bad name", "x" * 101])
def test_a_stray_folder_with_a_manifest_is_skipped_by_ls(capsys: pytest.CaptureFixture[str], isolated_store: Path,
                                                         folder: str) -> None:
    """A folder that is no snapshot name (an rm killed half-way leaves .removing-NAME) is not listed, not an error."""
    store = stored(isolated_store)
    stray = store.project_dir(PROJECT) / folder
    os.rename(store.snapshot_dir(PROJECT, "snap1"), stray)
    stored(isolated_store, "snap2")
    code, output = cli(capsys, "-p", PROJECT, "ls", "--json")
    assert code == ExitCode.OK and [entry["name"] for entry in json.loads(output)] == ["snap2"]


@pytest.mark.parametrize("args", [["inspect", "../x"], ["export", "../x", "-o", "out.tar.zst"], ["restore", "../x"],
                                  ["snapshot", "--name", "../x"], ["migrate", "--to", "unix:///nonexistent.sock", "../x"],
                                  ["push", "../x", "127.0.0.1:5000/a/b"], ["import", "--name", "../x", "in.tar.zst"],
                                  ["rm", "../x"]], ids=lambda args: args[0])
def test_every_command_checks_a_snapshot_name_while_parsing(capsys: pytest.CaptureFixture[str], isolated_store: Path,
                                                              args: list[str]) -> None:
    """One check (domain/store/names.py), made while the options are parsed: before any engine, file or store."""
    code, output = cli(capsys, "-H", "unix:///nonexistent.sock", "-p", PROJECT, *args)
    assert code == ExitCode.USAGE and "invalid snapshot name '../x'" in output, output
    assert not isolated_store.exists()


def test_rm_json_lists_what_it_removed(capsys: pytest.CaptureFixture[str], isolated_store: Path) -> None:
    stored(isolated_store)
    code, output = cli(capsys, "-p", PROJECT, "rm", "snap1", "--json")
    assert code == ExitCode.OK and json.loads(output) == {"removed": ["snap1"]}
    assert not (isolated_store / "projects" / PROJECT / "snap1").exists()
