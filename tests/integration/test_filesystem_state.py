"""Writable layers and volumes travel with a snapshot, copied while frozen, against the real engine."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from tests.integration.second_engine import SecondEngine
from tests.integration.stack import BUSYBOX, Stack, run_docker
from tests.polling import wait_for, wait_for_change

pytestmark = pytest.mark.engine

# Appends 1, 2, 3, ... to FILE through a descriptor it keeps open: CRIU needs the file back with the
# size it had at the dump, and a restore with another content shows as a gap or a repeat in the numbers.
APPENDER = "exec 3>>{file}; i=0; while true; do i=$$((i+1)); echo $$i >&3; sleep 0.05; done"


def appender(file: str, setup: str = "") -> str:
    return f'["sh", "-c", "{setup}{APPENDER.format(file=file)}"]'


LAYER_STACK = f"""
services:
  app:
    image: {BUSYBOX}
    command: {appender("/tmp/app.log", "rm /bin/nc; mkdir -p /var/made; echo kept > /var/made/note; ")}
"""

VOLUME_STACK = f"""
services:
  db:
    image: {BUSYBOX}
    command: {appender("/data/journal")}
    volumes: [data:/data]
  static:
    image: {BUSYBOX}
    command: ["sh", "-c", "echo hello > /site/index.html; exec sleep 3600"]
    volumes: [site:/site]
volumes:
  data:
  site:
"""


def numbers(stack: Stack, container: str, path: str) -> list[int]:
    return [int(line) for line in run_docker("exec", container, "cat", path).stdout.split()]


def appended(read: Callable[[], list[int]], more: int = 3) -> list[int]:
    """The numbers once `more` have been appended since now: a restored process writing on, so that a file
    that disagrees with its memory shows as a gap or a repeat."""
    start = len(read())

    def grown() -> list[int] | None:
        found = read()
        return found if len(found) >= start + more else None

    return wait_for(f"{more} more numbers appended", grown)


def assert_consecutive(values: list[int]) -> None:
    """1, 2, 3, ... without a gap or a repeat: the file and the process's memory agreed at every restore."""
    assert values[:1] == [1] and values == list(range(1, len(values) + 1)), values[-20:]


def test_open_file_in_writable_layer_survives_removal_and_restore(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(LAYER_STACK)
    snapshot = json.loads(stack.ckpt_ok("snapshot", "--stop", "--name", "layer", "--json").stdout)
    layer = snapshot["containers"][0]["layer"]
    assert layer["size"] > 0 and layer["stored"] > 0
    stack.compose("down")
    restored = json.loads(stack.ckpt_ok("restore", "layer", "--json").stdout)
    assert restored["containers"][0]["recreated"] is True
    name = restored["containers"][0]["container"]
    assert_consecutive(appended(lambda: numbers(stack, name, "/tmp/app.log")))
    assert run_docker("exec", name, "cat", "/var/made/note").stdout == "kept\n"
    assert run_docker("exec", name, "ls", "/bin/nc", check=False).returncode != 0  # the deletion came back too
    inspect = stack.ckpt_ok("inspect", "layer").stdout
    assert "LAYER" in inspect


def test_same_container_keeps_its_layer_and_ignore_rootfs_copies_nothing(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(LAYER_STACK)
    document = json.loads(stack.ckpt_ok("snapshot", "--stop", "--ignore-rootfs", "--json").stdout)
    assert document["containers"][0]["layer"] is None
    stack.ckpt_ok("restore")  # the container is still there with its layer: nothing to put back
    (container,) = stack.containers("app")
    assert_consecutive(appended(lambda: numbers(stack, container, "/tmp/app.log")))


def test_with_volumes_then_more_writes_then_restore_force_agrees(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(VOLUME_STACK)
    (container,) = stack.containers("db")
    document = json.loads(stack.ckpt_ok("snapshot", "--with-volumes", "--name", "vols", "--json").stdout)
    assert document["with_volumes"] is True
    volumes = {volume["name"]: volume for volume in document["volumes"]}
    assert volumes.keys() == {f"{stack.project}_data", f"{stack.project}_site"}
    assert all(volume["copy"]["size"] > 0 for volume in volumes.values())
    at_snapshot = len(numbers(stack, container, "/data/journal"))
    later = len(appended(lambda: numbers(stack, container, "/data/journal"), more=20))
    assert later > at_snapshot

    stack.ckpt_ok("restore", "vols", "--force")
    values = appended(lambda: numbers(stack, container, "/data/journal"))
    assert_consecutive(values)
    assert len(values) < later + 10  # back to the snapshot's content, not the later one


def test_unchanged_volume_copies_are_stored_once(start_stack: Callable[..., Stack], isolated_store: Path) -> None:
    stack = start_stack(VOLUME_STACK)
    stack.ckpt_ok("snapshot", "static", "--with-volumes", "--name", "one")
    # Copied whole while frozen this time: the same bytes as the pre-copy gave, so the same stored file.
    two = json.loads(stack.ckpt_ok("snapshot", "static", "--with-volumes", "--no-precopy", "--name", "two",
                                   "--json").stdout)
    assert [v["copy"]["reread"] for v in two["volumes"]] == [None]
    copies = [isolated_store / "projects" / stack.project / name / "volumes" / f"{stack.project}_site.tar.zst"
              for name in ("one", "two")]
    assert copies[0].stat().st_ino == copies[1].stat().st_ino and copies[0].stat().st_nlink == 2
    stack.ckpt_ok("rm", "one")
    assert copies[1].stat().st_nlink == 1  # the other snapshot's copy stays
    stack.ckpt_ok("restore", "two", "static", "--force")
    (container,) = stack.containers("static")
    assert run_docker("exec", container, "cat", "/site/index.html").stdout == "hello\n"


def test_snapshot_without_volumes_warns_when_the_volume_changed(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(VOLUME_STACK.replace(APPENDER.format(file="/data/journal"),
                                             "i=0; while true; do i=$$((i+1)); echo $$i > /data/n; sleep 0.05; done"))
    stack.ckpt_ok("snapshot", "--name", "plain")
    (container,) = stack.containers("db")
    wait_for_change("the volume to change after the snapshot", lambda: run_docker("exec", container, "cat", "/data/n").stdout,
                    run_docker("exec", container, "cat", "/data/n").stdout)
    done = stack.ckpt_ok("restore", "plain", "--force", "--json")
    warnings = json.loads(done.stdout)["warnings"]
    assert len(warnings) == 1 and "changed since snapshot plain" in warnings[0]


def test_a_process_appending_to_a_volume_file_migrates_and_goes_on_appending(
        start_stack: Callable[..., Stack], second: SecondEngine, tmp_path: Path) -> None:
    bind_source = tmp_path / "shared-config"
    bind_source.mkdir()
    stack = start_stack(VOLUME_STACK.replace("    volumes: [data:/data]\n",
                                             f"    volumes: [data:/data, {bind_source}:/config:ro]\n"))
    try:
        done = json.loads(stack.ckpt_ok("migrate", "--to", second.tcp, "--json").stdout)
        assert any(str(bind_source) in warning for warning in done["warnings"])  # named, not copied
        (container,) = [c["container"] for c in done["containers"] if c["service"] == "db"]
        def journal() -> list[int]:
            return [int(v) for v in second.docker("exec", container, "cat", "/data/journal").stdout.split()]

        values = appended(journal)
        assert_consecutive(values)
        more = appended(journal)
        assert len(more) > len(values) and more[:len(values)] == values
        volume = json.loads(second.docker("volume", "inspect", f"{stack.project}_data").stdout)[0]
        assert volume["Labels"]["com.docker.compose.project"] == stack.project
    finally:
        for name in second.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}").stdout.split():
            second.docker("rm", "-f", name.decode(), check=False)
        for volume in ("data", "site"):
            second.docker("volume", "rm", f"{stack.project}_{volume}", check=False)
        second.docker("network", "rm", f"{stack.project}_default", check=False)


def test_migrate_refuses_before_stopping_anything_when_the_target_lacks_a_bind_path(
        start_stack: Callable[..., Stack], second: SecondEngine, tmp_path: Path) -> None:
    second.copy_image_from_first(BUSYBOX)  # an image to check paths with
    bind_source = tmp_path / "only-here"
    bind_source.mkdir()
    stack = start_stack(f"""
services:
  app:
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    volumes: ["{bind_source}:/inner"]
""")
    # Both engines share this machine's files: remove the path (the running container keeps its mount),
    # so that the target host lacks it as another host would.
    bind_source.rmdir()
    failed = stack.ckpt("migrate", "--to", second.tcp)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "lacks host paths" in failed.stderr and str(bind_source) in failed.stderr and "nothing was stopped" in failed.stderr
    assert set(stack.states().values()) == {"running"}


def test_export_import_carries_layer_and_volume_copies(start_stack: Callable[..., Stack], tmp_path: Path) -> None:
    stack = start_stack(VOLUME_STACK.replace(APPENDER.format(file="/data/journal"),
                                             "echo made > /etc/made; " + APPENDER.format(file="/data/journal")))
    stack.ckpt_ok("snapshot", "--stop", "--with-volumes", "--name", "carried")
    archive = tmp_path / "carried.ckpt"
    stack.ckpt_ok("export", "carried", "-o", str(archive))
    stack.ckpt_ok("rm", "carried")
    stack.down()  # containers and volumes gone, as on another host
    stack.ckpt_ok("import", str(archive))
    stack.ckpt_ok("restore", "carried")
    (container,) = stack.containers("db")
    assert_consecutive(appended(lambda: numbers(stack, container, "/data/journal")))
    assert run_docker("exec", container, "cat", "/etc/made").stdout == "made\n"
    assert run_docker("exec", stack.containers("static")[0], "cat", "/site/index.html").stdout == "hello\n"


# Rewrites a value in place (same size), makes, renames and removes files and keeps a hard link, as fast
# as it can: many changes fall in the same second as the pre-copy, the case the racy rule is for.
CHURN_STACK = f"""
services:
  churn:
    image: {BUSYBOX}
    volumes: [data:/data]
    command: ["sh", "-c", "head -c 4194304 /dev/urandom > /data/static.bin; mkdir -p /data/sub; i=0;
      while true; do i=$$((i+1)); printf '%08d' $$i > /data/value; ln -f /data/value /data/sub/linked;
      echo $$i > /data/sub/n-$$((i % 7)); rm -f /data/sub/n-$$(((i + 3) % 7));
      mv /data/sub/n-$$((i % 7)) /data/sub/moved; done"]
volumes:
  data:
"""


def test_a_precopied_volume_holds_exactly_what_the_volume_held_at_the_freeze(
        start_stack: Callable[..., Stack], isolated_store: Path) -> None:
    stack = start_stack(CHURN_STACK)
    volume = f"{stack.project}_data"
    folder = Path(json.loads(run_docker("volume", "inspect", volume).stdout)[0]["Mountpoint"])
    wait_for("the churn to get going", (folder / "sub" / "moved").exists, interval=0.05)
    document = json.loads(stack.ckpt_ok("snapshot", "--stop", "--with-volumes", "--name", "churn", "--json").stdout)
    (copy,) = [v["copy"] for v in document["volumes"]]
    assert copy["reread"] is not None and copy["reread"] >= 1  # pre-copied, the changes read again while frozen
    assert "pre-copy volumes" in document["phases"]

    # --stop ended the writer at the freeze: the volume still holds what it held then.
    on_disk: dict[str, tuple[str, bytes]] = {}
    for top, folders, files in os.walk(folder):
        for name in folders:
            on_disk[os.path.relpath(Path(top, name), folder)] = ("dir", b"")
        for name in files:
            on_disk[os.path.relpath(Path(top, name), folder)] = ("file", Path(top, name).read_bytes())
    stored = isolated_store / "projects" / stack.project / "churn" / "volumes" / f"{volume}.tar.zst"
    in_copy: dict[str, tuple[str, bytes]] = {}
    links: list[tuple[str, str]] = []
    with stored.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as source, \
            tarfile.open(fileobj=source, mode="r|") as tar:
        for member in tar:
            name = os.path.relpath(member.name, "ckpt-tree")
            if member.isdir() and name != ".":
                in_copy[name] = ("dir", b"")
            elif member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                in_copy[name] = ("file", extracted.read())
            elif member.islnk():
                links.append((name, os.path.relpath(member.linkname, "ckpt-tree")))
    for name, target in links:
        in_copy[name] = in_copy[target]
    assert in_copy.keys() == on_disk.keys()
    assert in_copy == on_disk


def test_a_snapshot_removes_the_precopies_a_killed_snapshot_of_its_project_left(
        start_stack: Callable[..., Stack], isolated_store: Path) -> None:
    stack = start_stack(VOLUME_STACK)
    tmp = isolated_store / "tmp"
    tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
    left = tmp / f"precopy-snapshot-{stack.project}-{'a' * 32}"
    others = [tmp / f"precopy-snapshot-{stack.project}-x-{'b' * 32}",  # project `<ours>-x`
              tmp / f"precopy-migrate-{stack.project}-{'c' * 32}"]  # a live migration's, maybe under way
    for folder in (left, *others):
        (folder / "ckpt-tree").mkdir(parents=True, mode=0o700)
        (folder / "ckpt-tree" / "data").write_bytes(b"volume content")
    stack.ckpt_ok("snapshot", "static", "--name", "after-a-kill")
    assert not left.exists()
    assert all(folder.exists() for folder in others)
