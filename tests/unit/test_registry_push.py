"""push, registry retention and the sidecar's pusher against an in-memory registry (the real one: tests/integration)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
import zstandard

from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, SnapshotStatus
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.artifact import CHUNK_SIZE, parse_manifest
from compose_ckpt.domain.transport.push import prune_registry, push_snapshot
from compose_ckpt.errors import NotFoundError, RegistryError
from compose_ckpt.registry.client import ManifestResponse
from compose_ckpt.registry.reference import Reference, parse_reference
from compose_ckpt.sidecar.log import Log
from compose_ckpt.sidecar.metrics import Metrics
from compose_ckpt.sidecar.policy import Retention, StackJob, parse_push
from compose_ckpt.sidecar.pusher import Pusher
from compose_ckpt.sidecar.schedule import parse_schedule
from tests.polling import wait_for


class FakeRegistry:
    """Blobs and manifests in dicts; `failures` makes the next connections fail. It honours Range requests
    unless `ranges` is false, and records the offset of each blob download."""

    def __init__(self, ranges: bool = True) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}  # digest -> body
        self.tags: dict[str, str] = {}  # tag -> digest
        self.uploads = 0
        self.failures = 0
        self.ranges = ranges
        self.offsets: list[int] = []
        self.lock = threading.Lock()


class FakeBlobResponse:
    def __init__(self, data: bytes, status: int) -> None:
        self.data, self.status_code = data, status

    def __enter__(self) -> FakeBlobResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        for start in range(0, len(self.data), 7):  # small pieces, whatever was asked: a download's worst case
            yield self.data[start:start + 7]


class FakeClient:
    """The RegistryPort of one repository of a FakeRegistry."""

    def __init__(self, registry: FakeRegistry, reference: Reference) -> None:
        self.registry = registry
        self.reference = reference

    def __enter__(self) -> FakeClient:
        if self.registry.failures:
            self.registry.failures -= 1
            raise RegistryError("cannot reach the registry: Connection refused")
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def want_push(self) -> None:
        pass

    def blob_exists(self, digest: str) -> bool:
        return digest in self.registry.blobs

    def upload_blob(self, digest: str, data: bytes | memoryview, size: int) -> None:
        assert hashlib.sha256(data).hexdigest() == digest[7:] and len(data) == size
        with self.registry.lock:
            self.registry.blobs[digest] = bytes(data)  # push reuses its buffer: keep a copy, as a registry would
            self.registry.uploads += 1

    def open_blob(self, digest: str, offset: int = 0, deadline: float | None = None) -> FakeBlobResponse:
        self.registry.offsets.append(offset)
        if digest not in self.registry.blobs:
            raise NotFoundError(f"no blob {digest}")
        data = self.registry.blobs[digest]
        if self.registry.ranges and offset:
            return FakeBlobResponse(data[offset:], 206)
        return FakeBlobResponse(data, 200)

    def put_manifest(self, tag_or_digest: str, body: bytes) -> None:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.registry.manifests[digest] = body
        self.registry.tags[tag_or_digest] = digest

    def get_manifest(self, tag_or_digest: str) -> ManifestResponse:
        digest = self.registry.tags.get(tag_or_digest, tag_or_digest)
        if digest not in self.registry.manifests:
            raise NotFoundError(f"no manifest {tag_or_digest}")
        return ManifestResponse(self.registry.manifests[digest], digest, "application/vnd.oci.image.manifest.v1+json")

    def tags(self) -> list[str]:
        return sorted(self.registry.tags)

    def delete_manifest(self, digest: str) -> None:
        del self.registry.manifests[digest]
        for tag in [t for t, d in self.registry.tags.items() if d == digest]:
            del self.registry.tags[tag]


def snapshot(store: SnapshotStore, name: str, pages: bytes, created: str = "2026-03-01T12:00:00.000Z") -> Manifest:
    record = ContainerRecord(service="web", container_id="a" * 64, container_name="proj-web-1", number=1,
                             image="img", image_id="sha256:" + "1" * 64, checkpoint=f"ckpt-{name}", size=len(pages))
    manifest = Manifest(name=name, project="proj", created=created, status=SnapshotStatus.COMPLETE, stopped=False,
                        compose_files=[], compose_hash="", services=["web"], dependencies={"web": []},
                        containers=[record])
    store.new_snapshot_folder("proj", name)
    folder = store.new_checkpoint_dir("proj", name, "proj-web-1")
    (folder / "pages-1.img").write_bytes(pages)
    (folder / "core-1.img").write_bytes(name.encode())
    (folder / "empty.img").write_bytes(b"")
    store.write(manifest)
    return manifest


def random_bytes(size: int, seed: int) -> bytes:
    out = io.BytesIO()
    block = hashlib.sha256(str(seed).encode()).digest()
    while out.tell() < size:
        block = hashlib.sha256(block).digest()
        out.write(block * 128)
    return out.getvalue()[:size]


REF = parse_reference("127.0.0.1:5000/team/app")


def test_push_chunks_members_and_a_newer_snapshot_sends_only_changed_chunks(tmp_path: Path) -> None:
    store, registry = SnapshotStore(tmp_path), FakeRegistry()
    pages = random_bytes(2 * CHUNK_SIZE + 1000, 1)
    snapshot(store, "one", pages)
    first = push_snapshot(store, "proj", "one", FakeClient(registry, REF), ["one"])
    changed = bytearray(pages)
    changed[-10] ^= 1  # one dirty page, in the last chunk
    snapshot(store, "two", bytes(changed))
    second = push_snapshot(store, "proj", "two", FakeClient(registry, REF), ["two"])

    artifact = parse_manifest(registry.manifests[registry.tags["one"]], "one")
    assert [c.raw_size for c in artifact.members["checkpoints/proj-web-1/pages-1.img"]] == [CHUNK_SIZE, CHUNK_SIZE, 1000]
    assert [c.raw_size for c in artifact.members["checkpoints/proj-web-1/empty.img"]] == [0]
    assert json.loads(registry.blobs[artifact.config.digest])["name"] == "one"
    assert first.uploaded_blobs == first.blobs == 6  # config, 3 page chunks, core, empty
    assert second.uploaded_blobs == 3  # config, core, the last page chunk
    assert second.uploaded_bytes < 0.05 * first.uploaded_bytes



def test_chunks_that_do_not_compress_are_stored_as_raw_zstd_blocks_and_unpack_like_compressed_ones(
        tmp_path: Path) -> None:
    from compose_ckpt.domain.transport.pull import _stage_artifact

    store, registry = SnapshotStore(tmp_path / "store"), FakeRegistry()
    noise = random.Random(1).randbytes
    compressible = noise(4096) * (CHUNK_SIZE // 4096)  # one page over and over
    pages = noise(CHUNK_SIZE) + compressible + noise(5 * 1024**2 + 3)
    snapshot(store, "one", pages)
    push_snapshot(store, "proj", "one", FakeClient(registry, REF), ["one"])

    artifact = parse_manifest(registry.manifests[registry.tags["one"]], "one")
    chunks = artifact.members["checkpoints/proj-web-1/pages-1.img"]
    stored = [registry.blobs[chunk.blob.digest] for chunk in chunks]
    # Random chunks: the 10-byte frame header, then 128 KiB raw blocks of 3-byte headers each.
    assert [len(blob) for blob in stored] == [CHUNK_SIZE + 10 + 3 * 128, len(stored[1]), 5 * 1024**2 + 3 + 10 + 3 * 41]
    assert len(stored[1]) < CHUNK_SIZE // 100
    assert [zstandard.ZstdDecompressor().decompressobj().decompress(blob) for blob in stored] == [
        pages[:CHUNK_SIZE], compressible, pages[2 * CHUNK_SIZE:]]

    cache = tmp_path / "cache"
    cache.mkdir()
    for digest, data in registry.blobs.items():
        (cache / digest[7:]).write_bytes(data)
    staged = _stage_artifact(artifact, cache, tmp_path / "staging", lambda item, phase: None)
    assert (staged.checkpoints["proj-web-1"] / "pages-1.img").read_bytes() == pages

def job(push: str | None, keep: int | None = 2) -> StackJob:
    return StackJob("proj", "default", ("web",), "auto-default-", True, parse_schedule("@every 1h", UTC),
                    Retention(keep), parse_push(push) if push else None)


def test_registry_retention_deletes_the_oldest_of_this_job_only(tmp_path: Path) -> None:
    store, registry = SnapshotStore(tmp_path), FakeRegistry()
    for index in range(4):
        name = f"auto-default-2026030{index + 1}"
        snapshot(store, name, random_bytes(1000, index), created=f"2026-03-0{index + 1}T00:00:00.000Z")
        push_snapshot(store, "proj", name, FakeClient(registry, REF), [name])
    snapshot(store, "other", b"x")
    push_snapshot(store, "proj", "other", FakeClient(registry, REF), ["other"])  # not this job's: kept

    pruned = prune_registry(FakeClient(registry, REF), "proj", 2, tag_prefix="auto-default-")

    assert pruned.removed_tags == ["auto-default-20260302", "auto-default-20260301"]
    assert sorted(registry.tags) == ["auto-default-20260303", "auto-default-20260304", "other"]


def test_the_pusher_retries_with_backoff_counts_failures_and_prunes(tmp_path: Path) -> None:
    store, registry, metrics = SnapshotStore(tmp_path), FakeRegistry(), Metrics()
    log = io.StringIO()
    registry.failures = 2
    pusher = Pusher(store, metrics, Log(log), backoff=(0.05, 0.05, 0.05),
                    connect=lambda reference: FakeClient(registry, reference))
    pusher.start()
    try:
        for index in range(3):
            name = f"auto-default-2026030{index + 1}"
            snapshot(store, name, random_bytes(1000, index), created=f"2026-03-0{index + 1}T00:00:00.000Z")
            pusher.submit(job("127.0.0.1:5000/team/app:latest"), name)
            wait_for(f"{name} to be pushed", lambda: name in registry.tags, timeout=10, interval=0.02)  # noqa: B023
    finally:
        pusher.stop()
    text = metrics.render()
    assert 'compose_ckpt_sidecar_push_failures_total{project="proj",job="default"} 2' in text
    assert 'compose_ckpt_sidecar_pushes_total{project="proj",job="default"} 3' in text
    assert 'compose_ckpt_sidecar_registry_pruned_total{project="proj",job="default"} 1' in text
    assert sorted(registry.tags) == ["auto-default-20260302", "auto-default-20260303", "latest"]
    assert registry.tags["latest"] == registry.tags["auto-default-20260303"]
    assert log.getvalue().count("event=push_failed") == 2 and "retry_in_seconds=0.05" in log.getvalue()


def test_the_pusher_gives_up_after_its_backoff_and_drops_removed_snapshots(tmp_path: Path) -> None:
    store, registry, metrics = SnapshotStore(tmp_path), FakeRegistry(), Metrics()
    log = io.StringIO()
    registry.failures = 100
    pusher = Pusher(store, metrics, Log(log), backoff=(0.01, 0.01),
                    connect=lambda reference: FakeClient(registry, reference))
    snapshot(store, "auto-default-1", b"x")
    pusher.submit(job("127.0.0.1:5000/team/app"), "auto-default-1")
    pusher.submit(job("127.0.0.1:5000/team/other"), "gone")  # same job: supersedes the first, then is dropped
    pusher.start()
    wait_for("the push to be dropped", lambda: "push_dropped" in log.getvalue(), timeout=5, interval=0.02)
    assert "event=push_superseded" in log.getvalue() and "event=push_dropped" in log.getvalue()
    pusher.submit(job("127.0.0.1:5000/team/app"), "auto-default-1")
    wait_for("the pusher to give up", lambda: "push_gave_up" in log.getvalue(), timeout=5, interval=0.02)
    pusher.stop()
    assert "event=push_gave_up" in log.getvalue() and "attempts=3" in log.getvalue()
    assert 'push_failures_total{project="proj",job="default"} 3' in metrics.render()


@pytest.mark.parametrize("bad", ["reg.io/app@sha256:" + "a" * 64, "Bad/Ref", ""])
def test_bad_push_labels_are_refused(bad: str) -> None:
    with pytest.raises(Exception, match="invalid"):
        parse_push(bad)


def test_an_interrupted_download_resumes_with_a_range_and_a_bad_blob_is_refused(tmp_path: Path) -> None:
    from compose_ckpt.domain.transport.artifact import Blob
    from compose_ckpt.domain.transport.pull import _download
    from compose_ckpt.errors import ArchiveError

    def serving(data: bytes, digest: str, ranges: bool = True) -> tuple[FakeClient, FakeRegistry]:
        registry = FakeRegistry(ranges)
        registry.blobs[digest] = data
        return FakeClient(registry, REF), registry

    data = random_bytes(100, 7)
    blob = Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    (tmp_path / (blob.digest[7:] + ".partial")).write_bytes(data[:40])  # what an interrupted pull left
    client, registry = serving(data, blob.digest)
    assert _download(client, blob, tmp_path) == (60, 40)
    assert registry.offsets == [40] and (tmp_path / blob.digest[7:]).read_bytes() == data
    assert _download(client, blob, tmp_path) == (0, 100)  # verified, not fetched again

    (tmp_path / blob.digest[7:]).unlink()
    (tmp_path / (blob.digest[7:] + ".partial")).write_bytes(data[:40])
    ignoring, _ = serving(data, blob.digest, ranges=False)  # a registry that ignores Range: start over
    assert _download(ignoring, blob, tmp_path) == (100, 0)

    tampered = bytearray(data)
    tampered[50] ^= 1
    (tmp_path / "other").mkdir()
    with pytest.raises(ArchiveError, match="does not match its digest"):
        _download(serving(bytes(tampered), blob.digest)[0], Blob(blob.digest, blob.size), tmp_path / "other")
    longer = Blob("sha256:" + hashlib.sha256(data[:50]).hexdigest(), 50)
    with pytest.raises(ArchiveError, match="larger than its manifest says"):
        _download(serving(data, longer.digest)[0], longer, tmp_path)
    assert not list(tmp_path.glob("*.partial"))


def test_push_pull_and_export_report_their_bytes_as_they_move(tmp_path: Path) -> None:
    from compose_ckpt.domain.stack.parallel import ProgressEvent, SharedCount
    from compose_ckpt.domain.transport.artifact import Blob
    from compose_ckpt.domain.transport.pull import _download
    from compose_ckpt.domain.transport.transfer import export_snapshot

    store, registry = SnapshotStore(tmp_path / "store"), FakeRegistry()
    pages = random_bytes(2 * CHUNK_SIZE + 1000, 3)
    snapshot(store, "one", pages)
    events: list[tuple[str, str | ProgressEvent]] = []
    push_snapshot(store, "proj", "one", FakeClient(registry, REF), ["one"],
                  progress=lambda item, phase: events.append((item, phase)))
    uploaded = [phase.done or 0 for item, phase in events
                if isinstance(phase, ProgressEvent) and phase.phase == "uploading"]
    assert uploaded == sorted(uploaded) and len(uploaded) >= 3 and uploaded[-1] == len(pages) + len(b"one")

    out = io.BytesIO()
    events.clear()
    result = export_snapshot(store, "proj", "one", out, progress=lambda item, phase: events.append((item, phase)))
    written = [phase.done or 0 for item, phase in events if isinstance(phase, ProgressEvent) and item == "one"]
    assert written == sorted(written) and len(written) >= 3 and written[-1] == result.bytes_in

    data = random_bytes(100, 7)
    blob = Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    (tmp_path / (blob.digest[7:] + ".partial")).write_bytes(data[:40])  # resumed: the 40 bytes count as done
    registry = FakeRegistry()
    registry.blobs[blob.digest] = data
    downloaded: list[int] = []
    _download(FakeClient(registry, REF), blob, tmp_path, SharedCount(downloaded.append))
    assert downloaded[0] == 40 and downloaded[-1] == 100 and downloaded == sorted(downloaded)
