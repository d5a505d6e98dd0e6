import json
from pathlib import Path

import pytest

from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, ManifestError, SnapshotStatus, now_iso
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import NotFoundError, UsageError


def manifest(name: str = "snap1", status: SnapshotStatus = SnapshotStatus.COMPLETE) -> Manifest:
    record = ContainerRecord(service="web", container_id="a" * 64, container_name="proj-web-1", number=1,
                             image="img", image_id="sha256:" + "1" * 64, checkpoint=f"ckpt-{name}", size=10)
    return Manifest(name=name, project="proj", created=now_iso(), status=status, stopped=False,
                    compose_files=["/x/compose.yaml"], compose_hash="", services=["web"],
                    dependencies={"web": []}, containers=[record])


def with_checkpoint(store: SnapshotStore, name: str = "snap1") -> SnapshotStore:
    (store.new_checkpoint_dir("proj", name, "proj-web-1") / "pages-1.img").write_bytes(b"pages")
    return store


def test_write_then_load_round_trips_and_leaves_no_temp_file(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(manifest())
    with_checkpoint(store)
    loaded = store.load("proj", "snap1")
    assert loaded.to_dict() | {"created": None} == manifest().to_dict() | {"created": None}
    assert sorted(p.name for p in store.snapshot_dir("proj", "snap1").iterdir()) == ["checkpoints", "manifest.json"]


def test_list_is_oldest_first_and_latest_complete_skips_failed(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(manifest("a"))
    with_checkpoint(store, "a")
    store.write(manifest("b", SnapshotStatus.FAILED))
    store.write(manifest("c", SnapshotStatus.INCOMPLETE))
    assert [m.name for m in store.list("proj")] == ["a", "b", "c"]
    assert store.latest_complete("proj").name == "a"


def test_no_complete_snapshot_is_not_found(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(manifest("x", SnapshotStatus.INCOMPLETE))
    with pytest.raises(NotFoundError, match="no complete snapshot"):
        store.latest_complete("proj")


@pytest.mark.parametrize("bad", ["../evil", "a/b", "", ".hidden", "x" * 101, "tab\there", "new\nline"])
def test_names_with_traversal_or_control_characters_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError, match="invalid snapshot name"):
        SnapshotStore(tmp_path).snapshot_dir("proj", bad)


@pytest.mark.parametrize("field, value", [
    ("name", "../../etc"), ("status", "done"), ("format", 99), ("containers", "nope"),
])
def test_a_tampered_manifest_is_refused_with_a_clear_error(tmp_path: Path, field: str, value: object) -> None:
    store = SnapshotStore(tmp_path)
    store.write(manifest())
    path = store.snapshot_dir("proj", "snap1") / "manifest.json"
    document = json.loads(path.read_text())
    document[field] = value
    path.write_text(json.dumps(document))
    with pytest.raises(ManifestError, match="invalid manifest|names snapshot"):
        store.load("proj", "snap1")
    [listed] = store.list("proj")  # listed as invalid, so never restored, and removable
    assert listed.status is SnapshotStatus.INVALID and listed.error and "snap1" in listed.error


def test_a_record_naming_a_container_path_is_refused(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(manifest())
    path = store.snapshot_dir("proj", "snap1") / "manifest.json"
    document = json.loads(path.read_text())
    document["containers"][0]["container_name"] = "../../../root"
    path.write_text(json.dumps(document))
    with pytest.raises(ManifestError, match=r"containers\[0\].container_name is not a valid value"):
        store.load("proj", "snap1")


def test_remove_deletes_the_folder(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(manifest())
    store.remove("proj", "snap1")
    assert store.list("proj") == []
    with pytest.raises(NotFoundError):
        store.remove("proj", "snap1")


def test_the_store_is_private_to_its_owner(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "home")
    with store.locked("proj"):
        pass
    assert (tmp_path / "home").stat().st_mode & 0o077 == 0


def test_a_complete_snapshot_without_a_checkpoint_it_dumped_is_invalid(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(manifest())  # size 10: the container's checkpoint was saved, and is gone now
    with pytest.raises(ManifestError, match="proj-web-1 is missing"):
        store.load("proj", "snap1")
    assert [m.status for m in store.list("proj")] == [SnapshotStatus.INVALID]
