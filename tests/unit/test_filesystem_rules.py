"""Filesystem state rules: manifests with layer and volume copies, sharing of equal copies, hostile copies."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from compose_ckpt.domain.stack.filesystem import (
    bind_mounts,
    check_tree,
    fingerprint,
    layer_intact,
    layer_path,
    named_volumes,
    read_tree,
    store_tree,
    stored_copies,
    volume_path,
)
from compose_ckpt.domain.store.manifest import (
    ContainerRecord,
    Manifest,
    ManifestError,
    SnapshotStatus,
    TreeCopy,
    VolumeRecord,
    now_iso,
)
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.archive import ArchiveWriter
from compose_ckpt.domain.transport.transfer import import_snapshot
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.errors import ArchiveError
from tests.fakes import UntouchableEngine

SHA = "ab" * 32
CONTAINER_ID = "0123456789abcdef" * 4
IMAGE_ID = "sha256:" + "fedcba9876543210" * 4


def manifest(name: str = "snap1", **fields: Any) -> Manifest:
    record = ContainerRecord(service="web", container_id=CONTAINER_ID, container_name="proj-web-1", number=1,
                             image="img", image_id=IMAGE_ID, checkpoint="ckpt", size=5,
                             inspect={"Id": CONTAINER_ID, "Name": "/proj-web-1", "State": {"StartedAt": "t1"},
                                      "Config": {"Image": "img"}, "HostConfig": {}, "NetworkSettings": {"Networks": {}}})
    return Manifest(name=name, project="proj", created=now_iso(), status=SnapshotStatus.COMPLETE,
                    stopped=True, compose_files=[], compose_hash="ab" * 32, services=["web"],
                    dependencies={"web": []}, containers=[record], **fields)


def tree_tar(*members: tarfile.TarInfo) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return raw.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = 1 if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def test_manifest_round_trip_keeps_copies_and_binds_and_old_manifests_still_load() -> None:
    original = manifest(volume_records=[VolumeRecord("proj_data", "3:10:99", TreeCopy(10, 4, 0.5, SHA))])
    original.containers[0].layer = TreeCopy(20, 8, 0.1, SHA)
    loaded = Manifest.from_dict(json.loads(json.dumps(original.to_dict())), "test")
    assert loaded == original and loaded.has_volumes and loaded.size == 5 + 8 + 4
    old = original.to_dict()
    for key in ("volume_records", "binds"):
        del old[key]
    del old["containers"][0]["layer"]
    assert not Manifest.from_dict(old, "old").has_volumes


@pytest.mark.parametrize("edit", [
    {"volume_records": [{"name": "../x"}]},
    {"volume_records": [{"name": "v", "copy": {"size": 1, "stored": 1, "seconds": 0, "sha256": "nothex"}}]},
    {"volume_records": [{"name": "v", "copy": {"size": -1, "stored": 1, "seconds": 0, "sha256": SHA}}]},
    {"binds": [{"container": "c", "source": 5, "destination": "/d", "read_only": False}]},
    {"volume_records": [{"name": "v", "unknown": 1}]},
], ids=["volume-traversal", "bad-sha", "negative-size", "bind-type", "unknown-key"])
def test_manifest_refuses_bad_copies(edit: dict[str, Any]) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_dict({**manifest().to_dict(), **edit}, "test")


def test_mounts_split_into_named_volumes_and_binds() -> None:
    inspect = {"Mounts": [{"Type": "volume", "Name": "proj_data", "Destination": "/data"},
                          {"Type": "bind", "Source": "/srv/site", "Destination": "/site", "RW": False},
                          {"Type": "tmpfs", "Destination": "/scratch"}]}
    assert named_volumes(inspect) == ["proj_data"]
    (bind,) = bind_mounts("web-1", inspect)
    assert (bind.source, bind.destination, bind.read_only) == ("/srv/site", "/site", True)


def container(cid: str, started: str) -> ContainerInfo:
    return ContainerInfo(id=cid, name="proj-web-1", image="img", image_id="sha256:1", status="exited", pid=0,
                         exit_code=0, labels={}, started_at=started, attrs={})


def test_layer_is_intact_only_for_the_same_container_stopped_by_the_snapshot_and_not_started_since() -> None:
    snap = manifest()
    record = snap.containers[0]
    assert layer_intact(snap, record, container(CONTAINER_ID, "t1"))
    assert not layer_intact(snap, record, container(CONTAINER_ID, "t2"))  # started again since
    assert not layer_intact(snap, record, container("new", "t1"))  # another container
    snap.stopped = False  # it ran on after the snapshot
    assert not layer_intact(snap, record, container(CONTAINER_ID, "t1"))


def test_fingerprint_changes_with_any_write_and_does_not_follow_links(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"1")
    (tmp_path / "link").symlink_to("/etc")
    first = fingerprint(tmp_path)
    assert fingerprint(tmp_path) == first
    (tmp_path / "d" / "f").write_bytes(b"12")
    assert fingerprint(tmp_path) != first


def test_equal_copies_share_one_file_and_removing_a_snapshot_keeps_the_other(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "home")
    data = tree_tar(member("ckpt-tree", tarfile.DIRTYPE), member("ckpt-tree/f"))
    first = manifest("one")
    first.volume_records = [VolumeRecord("proj_data")]
    store.write(first)
    store.private_folder("proj", "one", "checkpoints", "proj-web-1")
    first.volume_records[0].copy = store_tree(volume_path(store, "proj", "one", "proj_data"), [data])
    store.write(first)
    second = manifest("two")
    store.write(second)
    shared = stored_copies(store, "proj")
    copy = store_tree(volume_path(store, "proj", "two", "proj_data"), [data[:100], data[100:]], shared)
    assert copy.sha256 == first.volume_records[0].copy.sha256
    paths = [volume_path(store, "proj", name, "proj_data") for name in ("one", "two")]
    assert paths[0].stat().st_ino == paths[1].stat().st_ino
    assert paths[1].stat().st_mode & 0o777 == 0o600
    store.remove("proj", "one")
    assert b"".join(read_tree(paths[1])) == data
    other = store_tree(layer_path(store, "proj", "two", "proj-web-1"), [data + b"\0" * 512], shared)
    assert other.sha256 != copy.sha256  # different content: its own file


@pytest.mark.parametrize(("members", "layer", "problem"), [
    ([member("ckpt-tree/../../etc/passwd")], False, "outside"),
    ([member("/etc/passwd")], True, "outside"),
    ([member("elsewhere/f")], False, "outside"),
    ([member("ckpt-tree/l", tarfile.LNKTYPE, linkname="/etc/shadow")], False, "hard link"),
    ([member("ckpt-tree/l", tarfile.LNKTYPE, linkname="ckpt-tree/../../x")], True, "hard link"),
    ([member("ckpt-tree/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)], True, "device"),
    ([member("ckpt-tree/mem", tarfile.CHRTYPE, devmajor=1, devminor=1)], True, "device"),
    ([member("ckpt-tree/wh", tarfile.CHRTYPE, devmajor=0, devminor=0)], False, "device"),
    ([member("ckpt-tree/etc", tarfile.SYMTYPE, linkname="/etc"), member("ckpt-tree/etc/cron.d/x")], False,
     "below the symbolic link"),
    ([member("ckpt-tree/d", tarfile.SYMTYPE, linkname="/"), member("ckpt-tree/h", tarfile.LNKTYPE,
                                                                       linkname="ckpt-tree/d/etc/shadow")],
     True, "below the symbolic link"),
    ([member("ckpt-tree/./s", tarfile.SYMTYPE, linkname="/root"), member("ckpt-tree/s/.ssh/x")], False,
     "below the symbolic link"),
], ids=["dotdot", "absolute", "outside-top", "hardlink-absolute", "hardlink-dotdot", "block-device",
        "char-device", "whiteout-in-volume", "through-symlink", "hardlink-through-symlink", "dot-spelled-symlink"])
def test_hostile_copies_are_refused(tmp_path: Path, members: list[tarfile.TarInfo], layer: bool, problem: str) -> None:
    path = tmp_path / "copy.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(tree_tar(member("ckpt-tree", tarfile.DIRTYPE), *members)))
    with pytest.raises(ArchiveError, match=problem):
        check_tree(path, layer=layer)


def test_whiteouts_and_symlinks_in_a_layer_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "copy.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(tree_tar(
        member("ckpt-tree", tarfile.DIRTYPE), member("ckpt-tree/bin/nc", tarfile.CHRTYPE, devmajor=0, devminor=0),
        member("ckpt-tree/s", tarfile.SYMTYPE, linkname="/etc/passwd"),
        member("ckpt-tree/h", tarfile.LNKTYPE, linkname="ckpt-tree/s"))))
    check_tree(path, layer=True)


def archive_with(manifest_doc: dict[str, Any], *trees: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with ArchiveWriter(out) as writer:
        writer.add_bytes("manifest.json", json.dumps(manifest_doc).encode())
        writer.add_bytes("checkpoints/proj-web-1/pages-1.img", b"pages")
        for name, data in trees:
            writer.add_bytes(name, data)
    return out.getvalue()


HOSTILE = zstandard.ZstdCompressor().compress(tree_tar(member("ckpt-tree/../../../etc/cron.d/x")))


@pytest.mark.parametrize(("trees", "edit", "message"), [
    ([("volumes/proj_data.tar.zst", HOSTILE)],
     {"volume_records": [{"name": "proj_data", "copy": {"size": 1, "stored": 1, "seconds": 0, "sha256": SHA}}]},
     "unsafe member"),
    ([("layers/proj-web-1.tar.zst", HOSTILE)], {}, "do not match"),
    ([], {"volume_records": [{"name": "proj_data", "copy": {"size": 1, "stored": 1, "seconds": 0, "sha256": SHA}}]},
     "do not match"),
], ids=["escaping-volume", "layer-not-in-manifest", "volume-missing"])
def test_import_refuses_bad_layer_and_volume_copies_before_the_engine(tmp_path: Path, trees: list[tuple[str, bytes]],
                                                                      edit: dict[str, Any], message: str) -> None:
    store = SnapshotStore(tmp_path / "home")
    engine = UntouchableEngine()
    with pytest.raises(ArchiveError, match=message):
        import_snapshot(store, engine, io.BytesIO(archive_with({**manifest().to_dict(), **edit}, *trees)))
    assert engine.used == [] and not (store.home / "projects").exists()


@pytest.mark.parametrize("name", ["layers/x.tar", "layers/a/b.tar.zst", "volumes/../x.tar.zst", "volumes/.x.tar.zst"])
def test_archive_layout_refuses_odd_tree_member_names(name: str) -> None:
    with pytest.raises(ArchiveError), ArchiveWriter(io.BytesIO()) as writer:
        writer.add_bytes(name, b"")
