"""pull against a registry that lies (tests/hostile_registry.py: a real HTTP server on 127.0.0.1): what it
serves is refused before the engine is touched, whatever its manifest says."""

from __future__ import annotations

import copy
import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.artifact import CHUNK_SIZE
from compose_ckpt.domain.transport.pull import pull_snapshot
from compose_ckpt.domain.transport.push import push_snapshot
from compose_ckpt.domain.transport.transfer import import_snapshot
from compose_ckpt.errors import ArchiveError, CkptError, NotFoundError, RegistryError, UsageError
from compose_ckpt.registry import deadline
from compose_ckpt.registry.client import RegistryClient, transfer_deadline
from compose_ckpt.registry.credentials import Credentials
from compose_ckpt.registry.reference import parse_reference
from tests.fakes import UntouchableEngine
from tests.hostile_registry import HostileRegistry, serving
from tests.unit.test_registry_push import random_bytes, snapshot

PAGES = "checkpoints/proj-web-1/pages-1.img"


def client(registry: HostileRegistry, reference: str = "team/app:v1") -> RegistryClient:
    return RegistryClient(parse_reference(f"{registry.address}/{reference}"), credentials=Credentials())


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[HostileRegistry]:
    """A registry holding one honest snapshot whose pages-1.img is three chunks (33 MiB)."""
    with serving() as hostile:
        store = SnapshotStore(tmp_path / "source")
        snapshot(store, "snap", random_bytes(2 * CHUNK_SIZE + 1024**2, 1))
        with client(hostile) as pusher:
            push_snapshot(store, "proj", "snap", pusher, ["v1"])
        yield hostile


def pull(registry: HostileRegistry, tmp_path: Path, reference: str = "team/app:v1") -> None:
    with client(registry, reference) as puller:
        pull_snapshot(SnapshotStore(tmp_path / "target"), UntouchableEngine(), puller)


def pages_layers(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [layer for layer in document["layers"] if layer["annotations"]["org.opencontainers.image.title"] == PAGES]


def swap(document: dict[str, Any]) -> None:
    first, second = pages_layers(document)[:2]
    for key in ("digest", "size"):
        first[key], second[key] = second[key], first[key]


def duplicate(document: dict[str, Any]) -> None:
    first, second = pages_layers(document)[:2]
    second["digest"], second["size"] = first["digest"], first["size"]


def drop_last(document: dict[str, Any]) -> None:
    document["layers"].remove(pages_layers(document)[-1])


def amplify(document: dict[str, Any]) -> None:
    """Thousands of layers of 16 MiB each, all one tiny blob (a member the snapshot does not have)."""
    tiny = next(layer for layer in document["layers"] if layer["size"] < 100)
    for index in range(200):
        document["layers"].append({**copy.deepcopy(tiny), "annotations": {
            "org.opencontainers.image.title": "checkpoints/proj-web-1/zeros.img",
            "compose-ckpt.offset": str(index * CHUNK_SIZE), "compose-ckpt.size": str(CHUNK_SIZE)}})


@pytest.mark.parametrize("tamper", [swap, duplicate, drop_last, amplify])
def test_chunks_the_snapshot_manifest_does_not_list_in_that_order_are_refused(
        registry: HostileRegistry, tmp_path: Path, tamper: Any) -> None:
    document = registry.manifest("v1")
    tamper(document)
    registry.put("v1", document)

    with pytest.raises(ArchiveError, match="do not match the snapshot's own file list") as refused:
        pull(registry, tmp_path)

    assert refused.value.exit_code == 7
    assert registry.blob_gets == [document["config"]["digest"]]  # nothing else downloaded
    assert not list((tmp_path / "target" / "tmp").glob("pull-*/*.partial"))


def test_an_artifact_without_a_file_list_is_refused_by_tag_and_accepted_by_digest(
        registry: HostileRegistry, tmp_path: Path) -> None:
    """What versions before the file list pushed: their manifest, pinned by digest, is trusted as before."""
    document = registry.manifest("v1")
    config = registry.blobs[document["config"]["digest"]]
    old = json.loads(config)
    del old["files"]
    old_config = json.dumps(old).encode()
    document["config"].update(digest=registry.add_blob(old_config), size=len(old_config))
    digest = registry.put("old", document)

    with pytest.raises(ArchiveError, match="lists no files"):
        pull(registry, tmp_path, "team/app:old")
    with pytest.raises(AssertionError, match="engine"):  # all verified: it goes on to the engine
        pull(registry, tmp_path / "again", f"team/app@{digest}")


def test_a_pull_that_would_not_fit_is_refused_before_downloading(
        registry: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.statvfs

    def nearly_full(path: Any) -> Any:
        status = real(path)
        return os.statvfs_result((status.f_bsize, 4096, status.f_blocks, 0, 256, *tuple(status)[5:]))
    monkeypatch.setattr(os, "statvfs", nearly_full)

    with pytest.raises(CkptError, match="only 1048576 are free"):
        pull(registry, tmp_path)

    assert len(registry.blob_gets) == 1  # the snapshot's manifest only


def test_an_endless_error_body_is_read_a_few_kib_only(registry: HostileRegistry, tmp_path: Path) -> None:
    registry.error_body = 300 * 1024**2
    registry.fail_blobs = True

    with pytest.raises(RegistryError, match="answered GET with 500") as failed:
        pull(registry, tmp_path)
    with pytest.raises(NotFoundError):
        pull(registry, tmp_path, "team/app:absent")

    assert failed.value.exit_code == 5
    assert registry.sent < 64 * 1024**2  # what the sockets' buffers took before we hung up; not 2 x 300 MB


def test_a_registry_trickling_a_blob_is_cut_off_at_the_blobs_deadline(
        registry: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPOSE_CKPT_PULL_MIN_SECONDS", "1")
    monkeypatch.setenv("COMPOSE_CKPT_PULL_MIN_RATE", "1000000")
    registry.trickle_delay = 0.02  # the config blob alone would take a minute

    with pytest.raises(RegistryError, match="too slowly") as failed:
        pull(registry, tmp_path)

    assert failed.value.exit_code == 5 and "resumes" in (failed.value.hint or "")
    partial = list((tmp_path / "target" / "tmp").glob("pull-*/*.partial"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size  # kept: the next pull resumes from there


def test_a_registry_trickling_its_manifest_is_cut_off(
        registry: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer read whole has the deadline of its size limit: here 1 s, for a manifest of a few KiB
    sent at 50 bytes/s (a minute)."""
    monkeypatch.setenv("COMPOSE_CKPT_PULL_MIN_SECONDS", "1")
    monkeypatch.setenv("COMPOSE_CKPT_PULL_MIN_RATE", "1000000000")
    registry.trickle_delay, registry.trickle_manifests = 0.02, True

    with pytest.raises(RegistryError, match="sending its manifest too slowly") as failed:
        pull(registry, tmp_path)

    assert failed.value.exit_code == 5 and registry.blob_gets == []


def test_a_registry_silent_longer_than_the_deadline_is_cut_off(
        registry: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline bounds the wait for an answer too, not only its bytes: one that comes after 20 s (the
    default would wait for it) is not waited for past the 1 s set here."""
    monkeypatch.setenv("COMPOSE_CKPT_PULL_MIN_SECONDS", "1")
    registry.stall_manifests = 20

    with pytest.raises(RegistryError, match="answered too slowly"):
        pull(registry, tmp_path)

    assert registry.blob_gets == []


@pytest.mark.parametrize(("trickled", "token"), [
    (r"/v2/", False), (r"/v2/.+/manifests/.+", False), (r"/token.*", True)],
    ids=["scheme probe", "manifest", "token"])
def test_a_registry_trickling_its_headers_is_cut_off_at_the_deadline(
        registry: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trickled: str, token: bool) -> None:
    """A byte of status line or header every 0.2 s never lets a read time out: the request's own deadline
    (here 1 s) cuts it, and the pull fails without leaving anything in the store or a thread behind."""
    monkeypatch.setenv("COMPOSE_CKPT_PULL_MIN_SECONDS", "1")
    registry.trickle_head, registry.require_token = trickled, token

    with pytest.raises(RegistryError, match="answered too slowly: no answer within 1 s") as failed:
        pull(registry, tmp_path)

    assert failed.value.exit_code == 5 and "COMPOSE_CKPT_PULL_MIN_SECONDS" in (failed.value.hint or "")
    assert registry.head_bytes < 50  # about a second's worth (5), not the 30 s the registry would take
    assert registry.blob_gets == [] and not (tmp_path / "target" / "tmp").exists()
    assert deadline.TIMER_NAME not in [thread.name for thread in threading.enumerate()]


def test_a_push_to_a_registry_trickling_its_headers_is_cut_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPOSE_CKPT_PULL_MIN_SECONDS", "1")
    store = SnapshotStore(tmp_path / "source")
    snapshot(store, "snap", b"pages")
    with serving() as hostile, client(hostile) as pusher:
        hostile.trickle_head = r"/v2/.+/blobs/.+"
        with pytest.raises(RegistryError, match="answered too slowly"):
            push_snapshot(store, "proj", "snap", pusher, ["v1"])
        assert hostile.head_bytes < 50 and hostile.manifests == {}


def test_an_honest_token_service_is_still_answered_in_time(
        registry: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPOSE_CKPT_PULL_MIN_SECONDS", "1")
    registry.require_token = True

    with pytest.raises(AssertionError, match="engine"):  # all downloaded and verified: it goes on to the engine
        pull(registry, tmp_path)


def test_an_error_answer_trickled_is_read_until_its_deadline_only(
        registry: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPOSE_CKPT_PULL_MIN_SECONDS", "1")
    registry.fail_blobs, registry.error_body = True, 4096
    registry.trickle_delay, registry.trickle_errors = 0.02, True  # 4 KiB: 80 s

    with pytest.raises(RegistryError, match="answered GET with 500"):
        pull(registry, tmp_path)

    manifest_bytes = len(registry.manifests["v1"])
    assert registry.sent - manifest_bytes < 1024  # a second's worth of the error answer, not its 4 KiB


def test_a_tag_list_whose_pages_never_end_is_cut_off(registry: HostileRegistry) -> None:
    registry.endless_tags = True
    with client(registry) as lister, pytest.raises(RegistryError, match="more than 100000 tags"):
        lister.tags()


def test_bad_deadline_settings_are_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert transfer_deadline(10) == 120 and transfer_deadline(64 * 1024 * 1000) == 1000
    monkeypatch.setenv("COMPOSE_CKPT_PULL_MIN_RATE", "0")
    with pytest.raises(UsageError, match="COMPOSE_CKPT_PULL_MIN_RATE"):
        transfer_deadline(1)


def leave(store: SnapshotStore, name: str, size: int = 1000) -> Path:
    """What a pull or import killed mid-way leaves: its folder with checkpoint bytes, and its (free) lock file."""
    folder = store.staging_dir() / name
    (folder / "checkpoints" / "proj-web-1").mkdir(parents=True)
    (folder / "checkpoints" / "proj-web-1" / "pages-1.img").write_bytes(b"m" * size)
    (store.staging_dir() / f"{name}.lock").touch()
    return folder


KILLED_PULL, KILLED_IMPORT, OTHER_CACHE, BUSY = "pull-" + "1" * 32, "import-" + "2" * 32, "pull-" + "3" * 64, "pull-" + "4" * 32


def test_the_next_pull_removes_what_killed_pulls_left_but_not_what_is_in_use(
        registry: HostileRegistry, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "target")
    for name in (KILLED_PULL, KILLED_IMPORT, OTHER_CACHE, BUSY):
        leave(store, name)
    (store.staging_dir() / "pull-notours").mkdir()
    document = registry.manifest("v1")
    swap(document)
    registry.put("v1", document)

    with store.using_staging(BUSY), pytest.raises(ArchiveError):  # another command works in BUSY meanwhile
        pull(registry, tmp_path)

    assert sorted(p.name for p in store.staging_dir().iterdir()) == [  # a cache may be resumed; the rest is not ours
        OTHER_CACHE, f"{OTHER_CACHE}.lock", BUSY, f"{BUSY}.lock", "pull-notours"]


def test_a_second_pull_of_the_same_artifact_meanwhile_is_refused(registry: HostileRegistry, tmp_path: Path) -> None:
    from compose_ckpt.errors import ConflictError

    store = SnapshotStore(tmp_path / "target")
    digest = registry.put("v1", registry.manifest("v1"))
    with store.using_staging(f"pull-{digest[7:]}"), pytest.raises(ConflictError, match="another compose-ckpt"):
        pull(registry, tmp_path)


def test_prune_removes_and_doctor_reports_what_killed_imports_and_pulls_left(
        isolated_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from compose_ckpt.cli.main import run
    from compose_ckpt.domain.host.doctor import Status, _staging_leftovers

    store = SnapshotStore(isolated_store)
    assert _staging_leftovers(isolated_store).status is Status.OK  # no store yet: nothing made
    for name in (KILLED_PULL, KILLED_IMPORT, OTHER_CACHE, BUSY):
        leave(store, name, size=3 * 1024**2)

    with store.using_staging(BUSY):
        check = _staging_leftovers(isolated_store)
        assert check.status is Status.WARN and "3 folders" in check.detail and BUSY not in check.detail
        assert f"{OTHER_CACHE} (3.0 MiB, resumable)" in check.detail and "prune" in check.remedy
        assert run(["-p", "proj", "prune", "--keep", "1"]) == 0

    output = capsys.readouterr().out
    assert all(name in output for name in (KILLED_PULL, KILLED_IMPORT, OTHER_CACHE)) and BUSY not in output
    assert sorted(p.name for p in store.staging_dir().iterdir()) == [BUSY, f"{BUSY}.lock"]
    assert _staging_leftovers(isolated_store).status is Status.WARN  # BUSY, now free, is a leftover too


def test_the_next_import_removes_them_too(isolated_store: Path) -> None:
    store = SnapshotStore(isolated_store)
    for name in (KILLED_PULL, KILLED_IMPORT, OTHER_CACHE):
        leave(store, name)

    with pytest.raises(ArchiveError):
        import_snapshot(store, UntouchableEngine(), io.BytesIO(b"not an archive"))

    assert sorted(p.name for p in store.staging_dir().iterdir()) == [OTHER_CACHE, f"{OTHER_CACHE}.lock"]
