"""Another local user (`nobody`) plants folders, files and links around the store: nothing planted is used.

The planting runs as nobody for real (setpriv), in a folder nobody can reach; compose-ckpt runs as root.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from datetime import UTC
from pathlib import Path

import pytest
import zstandard

from compose_ckpt.cli.main import run
from compose_ckpt.domain.requests import RestoreRequest
from compose_ckpt.domain.stack.restore import restore_snapshot
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, SnapshotStatus, now_iso
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine.hardlinks import link_or_copy_tree
from compose_ckpt.errors import ExitCode, UnsafePathError
from compose_ckpt.sidecar.config import load_config
from tests.fakes import UntouchableEngine
from tests.other_user import as_nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="acting as another user needs root and setpriv")
PROJECT = "proj"
CONTAINER_ID = "c" * 64
IMAGE_ID = "sha256:" + "1" * 64


def manifest(name: str = "snap1", status: SnapshotStatus = SnapshotStatus.COMPLETE) -> Manifest:
    record = ContainerRecord(service="web", container_id=CONTAINER_ID, container_name="proj-web-1", number=1,
                             image="img", image_id=IMAGE_ID, checkpoint=f"ckpt-{name}", size=5)
    return Manifest(name=name, project=PROJECT, created=now_iso(), status=status, stopped=False,
                    compose_files=["/srv/proj/compose.yaml"], compose_hash="", services=["web"],
                    dependencies={"web": []}, containers=[record])


def stored(home: Path, name: str = "snap1") -> SnapshotStore:
    """A complete snapshot written the way `snapshot` writes one."""
    store = SnapshotStore(home)
    store.write(manifest(name))
    store.save_compose_files(PROJECT, name, [(Path("/srv/proj/compose.yaml"), b"services: {web: {image: img}}\n")])
    docker_folder = home.parent / f"docker-{name}"  # as CRIU leaves it in Docker's folder: files 0644
    (docker_folder / "criu.work").mkdir(parents=True)
    (docker_folder / "pages-1.img").write_bytes(b"pages")
    (docker_folder / "criu.work" / "dump.log").write_bytes(b"log")
    link_or_copy_tree(docker_folder, store.new_checkpoint_dir(PROJECT, name, "proj-web-1"))
    return store


def cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str]:
    os.environ["COMPOSE_CKPT_HOME"] = str(home)  # the autouse fixture restores it after the test
    code = run(["-p", PROJECT, *args])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output and "internal error" not in output, output
    return code, output


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- the home and the folders above it --------------------------------------------------------------------


@pytest.mark.parametrize("bits", [0o1777, 0o777, 0o775, 0o757])
def test_a_home_others_can_write_is_refused_and_left_as_it_was(capsys: pytest.CaptureFixture[str], shared: Path,
                                                               bits: int) -> None:
    home = shared / "home"
    home.mkdir()
    home.chmod(bits)
    code, output = cli(capsys, home, "prune", "--keep", "1")
    assert code == ExitCode.ARCHIVE and f"refusing {home}" in output and "other users can write" in output
    assert mode(home) == bits  # never chmodded
    assert list(home.iterdir()) == []


def test_a_home_owned_by_another_user_is_refused(capsys: pytest.CaptureFixture[str], shared: Path) -> None:
    shared.chmod(0o777)
    as_nobody(f"mkdir -m 700 {shared}/home")
    shared.chmod(0o755)
    code, output = cli(capsys, shared / "home", "prune", "--keep", "1")
    assert code == ExitCode.ARCHIVE and "owned by uid 65534" in output


def test_an_ancestor_others_can_write_is_refused(capsys: pytest.CaptureFixture[str], shared: Path) -> None:
    """Without the sticky bit, nobody could rename the home away and put their own in its place."""
    (shared / "open").mkdir()
    (shared / "open").chmod(0o777)
    code, output = cli(capsys, shared / "open" / "home", "prune", "--keep", "1")
    assert code == ExitCode.ARCHIVE and f"refusing {shared / 'open'}" in output
    assert not (shared / "open" / "home").exists()


def test_a_sticky_ancestor_like_tmp_is_fine_and_new_folders_are_private(shared: Path) -> None:
    (shared / "sticky").mkdir()
    (shared / "sticky").chmod(0o1777)
    home = shared / "sticky" / "a" / "home"
    stored(home)
    for folder in (shared / "sticky" / "a", home):
        assert mode(folder) == 0o700


def test_a_home_reached_through_another_users_link_is_refused(capsys: pytest.CaptureFixture[str],
                                                              shared: Path) -> None:
    (shared / "real").mkdir(mode=0o700)
    (shared / "sticky").mkdir()
    (shared / "sticky").chmod(0o1777)
    as_nobody(f"ln -s {shared}/real {shared}/sticky/home")
    code, output = cli(capsys, shared / "sticky" / "home", "prune", "--keep", "1")
    assert code == ExitCode.ARCHIVE and "a link owned by uid 65534" in output
    os.symlink(shared / "real", shared / "mine")  # the same link made by root is followed
    assert cli(capsys, shared / "mine", "prune", "--keep", "1")[0] == ExitCode.OK


# --- folders and files planted inside the store -----------------------------------------------------------


def plant_while_open(shared: Path, script: str) -> Path:
    """Let nobody into the home for a moment (a mode-1777 home, as some had), then close it again."""
    home = shared / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o1777)
    as_nobody(script.format(home=home))
    home.chmod(0o700)
    return home


def test_a_planted_checkpoint_folder_is_refused_not_used(shared: Path) -> None:
    """The issue's case: nobody pre-creates projects/P/nightly/checkpoints/P-kv-1, world-writable."""
    home = plant_while_open(shared, "mkdir -p -m 777 {home}/projects/proj/nightly/checkpoints/proj-web-1")
    store = SnapshotStore(home)
    with pytest.raises(UnsafePathError, match="owned by uid 65534"):
        with store.locked(PROJECT):
            pass
    with pytest.raises(UnsafePathError):
        store.write(manifest("nightly"))
    assert list((home / "projects/proj/nightly/checkpoints/proj-web-1").iterdir()) == []


def test_a_world_writable_folder_of_our_own_inside_the_store_is_refused(shared: Path) -> None:
    store = stored(shared / "home")
    checkpoints = store.snapshot_dir(PROJECT, "snap1") / "checkpoints"
    checkpoints.chmod(0o777)
    with pytest.raises(UnsafePathError, match="other users can write"):
        store.new_checkpoint_dir(PROJECT, "snap1", "proj-web-2")
    [listed] = store.list(PROJECT)
    assert listed.status is SnapshotStatus.INVALID and "other users can write" in (listed.error or "")


def test_a_manifest_planted_by_another_user_is_not_trusted(capsys: pytest.CaptureFixture[str],
                                                           shared: Path) -> None:
    """A privileged container with / bind-mounted, as nobody would like restore to recreate it."""
    evil = manifest().to_dict()
    evil["containers"][0]["inspect"] = {"Id": CONTAINER_ID, "Name": "/proj-web-1", "Config": {"Image": "img"},
                                        "HostConfig": {"Privileged": True, "Binds": ["/:/host"]}}
    (shared / "evil.json").write_text(json.dumps(evil))
    (shared / "evil.json").chmod(0o644)
    store = stored(shared / "home", "snap0")
    project = store.project_dir(PROJECT)
    project.chmod(0o777)  # open for a moment, by mistake
    (shared / "home").chmod(0o755)
    (shared / "home" / "projects").chmod(0o755)
    as_nobody(f"mkdir -p {project}/snap1/checkpoints/proj-web-1 && cp {shared}/evil.json {project}/snap1/manifest.json")
    project.chmod(0o700)
    code, output = cli(capsys, shared / "home", "ls", "--json")
    assert code == ExitCode.OK
    assert [(s["name"], s["status"]) for s in json.loads(output)] == [("snap0", "complete"), ("snap1", "invalid")]
    code, output = cli(capsys, shared / "home", "inspect", "snap1")
    assert code == ExitCode.ARCHIVE and "owned by uid 65534" in output
    with pytest.raises(UnsafePathError):
        restore_snapshot(UntouchableEngine(), PROJECT, store, RestoreRequest(snapshot="snap1"))
    code, output = cli(capsys, shared / "home", "rm", "snap1")
    assert code == ExitCode.OK and not (project / "snap1").exists()


def test_a_project_folder_planted_by_another_user_is_refused(capsys: pytest.CaptureFixture[str],
                                                             shared: Path) -> None:
    home = plant_while_open(shared, "mkdir -p {home}/projects/proj/snap1")
    code, output = cli(capsys, home, "ls")
    assert code == ExitCode.ARCHIVE and f"refusing {home / 'projects'}: it is owned by uid 65534" in output


@pytest.mark.parametrize("owner_writable", ["group", "other"])
def test_a_manifest_others_can_write_is_not_trusted(shared: Path, owner_writable: str) -> None:
    store = stored(shared / "home")
    path = store.snapshot_dir(PROJECT, "snap1") / "manifest.json"
    path.chmod(0o620 if owner_writable == "group" else 0o602)
    with pytest.raises(UnsafePathError, match="other users can write"):
        store.load(PROJECT, "snap1")


def test_every_folder_is_0700_and_every_file_0600(shared: Path) -> None:
    """Checkpoint files come from Docker's folder (0644 there) by hard link: they become 0600."""
    (shared / "new").mkdir()
    store = stored(shared / "new" / "home")
    shutil.rmtree(shared / "new" / "docker-snap1")
    with store.locked(PROJECT):
        pass
    paths = [shared / "new" / "home", *sorted((shared / "new" / "home").rglob("*"))]
    assert {str(p.relative_to(shared)): mode(p) for p in paths if p.is_dir()} == dict.fromkeys(
        [str(p.relative_to(shared)) for p in paths if p.is_dir()], 0o700)
    assert {str(p.relative_to(shared)): mode(p) for p in paths if p.is_file()} == dict.fromkeys(
        [str(p.relative_to(shared)) for p in paths if p.is_file()], 0o600)


# --- links ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["checkpoint-folder", "checkpoints-folder", "file-in-checkpoint", "manifest"])
def test_a_link_in_a_snapshot_is_never_followed(capsys: pytest.CaptureFixture[str], shared: Path,
                                                where: str) -> None:
    """The issue's case: checkpoints/<container> -> /etc made restore copy /etc (shadow included)."""
    store = stored(shared / "home")
    folder = store.snapshot_dir(PROJECT, "snap1")
    target = {"checkpoint-folder": folder / "checkpoints/proj-web-1", "checkpoints-folder": folder / "checkpoints",
              "file-in-checkpoint": folder / "checkpoints/proj-web-1/pages-1.img", "manifest": folder / "manifest.json"}[where]
    pointed = Path("/etc/shadow" if where == "file-in-checkpoint" else "/etc")
    if where == "manifest":
        shutil.copy(target, shared / "elsewhere.json")
        pointed = shared / "elsewhere.json"
    _delete(target)
    os.symlink(pointed, target)

    with pytest.raises(UnsafePathError, match="it is a link|only regular files"):
        store.load(PROJECT, "snap1")
    with pytest.raises(UnsafePathError):
        restore_snapshot(UntouchableEngine(), PROJECT, store, RestoreRequest(snapshot="snap1"))
    code, output = cli(capsys, shared / "home", "export", "snap1", "-o", str(shared / "out.tar.zst"))
    assert code == ExitCode.ARCHIVE and not (shared / "out.tar.zst").exists()
    code, output = cli(capsys, shared / "home", "ls", "--json")
    assert [s["status"] for s in json.loads(output)] == ["invalid"]
    code, output = cli(capsys, shared / "home", "prune", "--keep", "5", "--json")
    assert code == ExitCode.OK and json.loads(output)["removed"] == ["snap1"]
    assert pointed.exists()


def _delete(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def test_rm_of_a_linked_snapshot_folder_removes_the_link_only(capsys: pytest.CaptureFixture[str],
                                                              shared: Path) -> None:
    store = stored(shared / "home")
    elsewhere = shared / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not ours")
    os.symlink(elsewhere, store.snapshot_dir(PROJECT, "snap2"))
    code, output = cli(capsys, shared / "home", "ls")
    assert code == ExitCode.OK and "snap2" in output and "invalid" in output and "it is a link" in output
    code, output = cli(capsys, shared / "home", "rm", "snap2")
    assert code == ExitCode.OK, output
    assert (elsewhere / "keep.txt").read_text() == "not ours"
    assert sorted(p.name for p in store.project_dir(PROJECT).iterdir()) == [".lock", "snap1"]  # no .removing-*


def test_what_a_killed_rm_left_is_removed_by_the_next_rm(capsys: pytest.CaptureFixture[str], shared: Path) -> None:
    store = stored(shared / "home")
    stored(shared / "home", "snap2")
    os.rename(store.snapshot_dir(PROJECT, "snap1"), store.project_dir(PROJECT) / ".removing-snap1")
    assert cli(capsys, shared / "home", "rm", "snap2")[0] == ExitCode.OK
    assert sorted(p.name for p in store.project_dir(PROJECT).iterdir()) == [".lock"]


def test_a_planted_lock_link_is_refused_and_its_target_not_created(shared: Path) -> None:
    store = stored(shared / "home")
    os.symlink(shared / "created-by-us", store.project_dir(PROJECT) / ".lock")
    with pytest.raises(UnsafePathError, match="it is a link"):
        with store.locked(PROJECT):
            pass
    assert not (shared / "created-by-us").exists()


# --- export writes outside the store ---------------------------------------------------------------------


def victim_and_drop(shared: Path) -> tuple[Path, Path]:
    """A file of root's, and a sticky world-writable folder (like /tmp) where export writes."""
    victim = shared / "victim"
    victim.write_text("root's file")
    drop = shared / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    return victim, drop


def test_export_never_writes_through_a_planted_link(capsys: pytest.CaptureFixture[str], shared: Path) -> None:
    """nobody plants the old fixed temporary name as a link to a file of root's, in a sticky folder: unused."""
    stored(shared / "home")
    victim, drop = victim_and_drop(shared)
    as_nobody(f"ln -s {victim} {drop}/.out.tar.zst.partial")
    code, output = cli(capsys, shared / "home", "export", "snap1", "-o", str(drop / "out.tar.zst"))
    assert code == ExitCode.OK, output
    assert victim.read_text() == "root's file"
    out = drop / "out.tar.zst"
    assert stat.S_ISREG(os.lstat(out).st_mode) and mode(out) == 0o600 and os.lstat(out).st_uid == 0
    assert sorted(p.name for p in drop.iterdir()) == [".out.tar.zst.partial", "out.tar.zst"]  # only nobody's link


@pytest.mark.parametrize("owner", ["nobody", "root"])
def test_export_refuses_a_link_as_its_output(capsys: pytest.CaptureFixture[str], shared: Path, owner: str) -> None:
    """Whoever made it: a link at -o FILE is neither written through nor replaced (it may be /dev/stdout)."""
    stored(shared / "home")
    victim, drop = victim_and_drop(shared)
    if owner == "nobody":
        as_nobody(f"ln -s {victim} {drop}/out.tar.zst")
    else:
        os.symlink(victim, drop / "out.tar.zst")
    code, output = cli(capsys, shared / "home", "export", "snap1", "-o", str(drop / "out.tar.zst"))
    assert code == ExitCode.ARCHIVE and "it is a link" in output
    assert victim.read_text() == "root's file" and os.path.islink(drop / "out.tar.zst")
    assert sorted(p.name for p in drop.iterdir()) == ["out.tar.zst"]


def test_export_to_a_device_writes_in_place(capsys: pytest.CaptureFixture[str], shared: Path) -> None:
    stored(shared / "home")
    code, output = cli(capsys, shared / "home", "export", "snap1", "-o", "/dev/null")
    assert code == ExitCode.OK, output
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert not [p for p in Path("/dev").iterdir() if p.name.startswith(".null.")]


def test_export_takes_compose_files_from_the_store_only(capsys: pytest.CaptureFixture[str], shared: Path) -> None:
    """A manifest naming /etc/shadow among its compose files does not put /etc/shadow in the archive."""
    store = stored(shared / "home")
    path = store.snapshot_dir(PROJECT, "snap1") / "manifest.json"
    document = json.loads(path.read_text())
    document["compose_files"] = ["/etc/shadow", "/etc/passwd"]
    path.write_text(json.dumps(document))
    code, output = cli(capsys, shared / "home", "export", "snap1", "-o", str(shared / "out.tar.zst"))
    assert code == ExitCode.OK, output
    data = zstandard.ZstdDecompressor().stream_reader((shared / "out.tar.zst").open("rb")).read()
    assert b"root:" not in data
    assert b"services: {web: {image: img}}" in data  # the copy kept in the store when the snapshot was taken


# --- the sidecar's config and trigger folder ------------------------------------------------------------


def test_a_sidecar_config_another_user_can_change_is_refused(shared: Path) -> None:
    """Whoever can change it chooses what is snapshotted and restored on boot."""
    config = shared / "sidecar.yaml"
    config.write_text("concurrency: 2\n")
    config.chmod(0o666)
    with pytest.raises(UnsafePathError, match="other users can write"):
        load_config(config, UTC)
    config.chmod(0o644)
    assert load_config(config, UTC).concurrency == 2
    os.chown(config, 65534, 65534)
    with pytest.raises(UnsafePathError, match="owned by uid 65534"):
        load_config(config, UTC)


def test_export_to_stdout_writes_the_archive_alone(tmp_path: Path) -> None:
    """`-o -` into a pipe: stdout is one zstd frame of the archive and nothing after it, even with --json."""
    home = tmp_path / "home"
    stored(home)
    done = subprocess.run([sys.executable, "-m", "compose_ckpt", "-p", PROJECT, "export", "snap1", "-o", "-", "--json"],
                          env={**os.environ, "COMPOSE_CKPT_HOME": str(home)}, capture_output=True, timeout=120)
    assert done.returncode == ExitCode.OK, done.stderr
    frame = zstandard.ZstdDecompressor().decompressobj()
    archive = frame.decompress(done.stdout)
    assert frame.eof and frame.unused_data == b""
    with tarfile.open(fileobj=io.BytesIO(archive)) as members:
        assert "manifest.json" in [Path(name).name for name in members.getnames()]
