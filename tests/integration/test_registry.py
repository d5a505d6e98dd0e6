"""push and pull against a real registry (distribution 2.8, `make registry`), restore on another daemon."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import engine_missing
from tests.integration.second_engine import SecondEngine
from tests.integration.stack import Stack
from tests.integration.test_export_import import on_target, private_image, stack  # noqa: F401 (fixtures)

pytestmark = pytest.mark.engine

REGISTRY = "127.0.0.1:5000"
STORAGE = Path("/var/lib/compose-ckpt/registry/storage/docker/registry/v2")


def registry_api(path: str, method: str = "GET", accept: str = "application/vnd.oci.image.manifest.v1+json") -> bytes:
    request = urllib.request.Request(f"http://{REGISTRY}/v2/{path}", method=method, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


@pytest.fixture(scope="session")
def registry() -> str:
    try:
        registry_api("")
    except OSError as exc:
        engine_missing(f"no registry at {REGISTRY} ({exc}); run `make registry`")
    return REGISTRY


@pytest.fixture
def repository(registry: str, test_id: str) -> Iterator[str]:
    """A repository of this test alone; its manifests are deleted afterwards."""
    name = f"ckpttest/{test_id}"
    yield f"{registry}/{name}"
    try:
        tags = json.loads(registry_api(f"{name}/tags/list")).get("tags") or []
    except OSError:
        return
    for tag in tags:
        try:
            request = urllib.request.Request(f"http://{REGISTRY}/v2/{name}/manifests/{tag}", method="HEAD",
                                             headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                digest = response.headers["Docker-Content-Digest"]
            registry_api(f"{name}/manifests/{digest}", method="DELETE")
        except OSError:
            continue


def push(source: Stack, *args: str) -> dict:
    return json.loads(source.ckpt_ok("push", *args, "--json").stdout)


def test_push_pull_and_restore_on_another_daemon(stack: Stack, second: SecondEngine, tmp_path: Path,  # noqa: F811
                                                 repository: str) -> None:
    stack.ckpt_ok("snapshot", "--stop", "--name", "moving")
    pushed = push(stack, "moving", repository, "--with-images")
    assert pushed["reference"] == f"{repository}:moving" and pushed["uploaded_blobs"] == pushed["blobs"]
    home = tmp_path / "other-host"

    pulled = on_target(second, home, "pull", f"{repository}:moving", "--json")
    assert pulled.returncode == 0, pulled.stderr.decode()
    document = json.loads(pulled.stdout)
    assert document["snapshot"] == "moving" and document["digest"] == pushed["digest"]
    assert sorted(document["created_containers"]) == [f"{stack.project}-one-1", f"{stack.project}-two-1"]
    assert document["loaded_images"]
    assert not list((home / "tmp").iterdir())  # staging and blob cache gone

    restored = on_target(second, home, "-p", stack.project, "restore", "--json")
    assert restored.returncode == 0, restored.stderr.decode()
    for service in ("one", "two"):
        count = int(second.docker("exec", f"{stack.project}-{service}-1", "cat", "/tmp/count").stdout)
        assert count > 5, f"{service} started fresh on the target"


def test_pull_by_digest_and_under_another_name(stack: Stack, repository: str) -> None:  # noqa: F811
    stack.ckpt_ok("snapshot", "--name", "first")
    pushed = push(stack, "first", f"{repository}:v1")
    digest_reference = f"{repository}@{pushed['digest']}"

    pulled = json.loads(stack.ckpt_ok("pull", digest_reference, "--name", "copy", "--json").stdout)

    assert pulled["snapshot"] == "copy" and pulled["digest"] == pushed["digest"]
    assert sorted(s["name"] for s in stack.snapshots()) == ["copy", "first"]
    refused = stack.ckpt("pull", digest_reference, "--name", "copy")
    assert refused.returncode == 6  # the name is taken: nothing overwritten


def test_a_second_push_of_an_unchanged_snapshot_uploads_almost_nothing(stack: Stack, repository: str) -> None:  # noqa: F811
    stack.ckpt_ok("snapshot", "--name", "same")
    first = push(stack, "same", f"{repository}:a")
    again = push(stack, "same", f"{repository}:b")

    assert first["uploaded_bytes"] > 0 and again["uploaded_bytes"] < 0.05 * first["uploaded_bytes"]
    assert again["digest"] == first["digest"]


def test_a_tampered_blob_is_refused_with_exit_7_and_nothing_stored(stack: Stack, repository: str) -> None:  # noqa: F811
    stack.ckpt_ok("snapshot", "--name", "victim")
    push(stack, "victim", repository)
    stack.ckpt_ok("rm", "victim")
    manifest = json.loads(registry_api(f"{repository.split('/', 1)[1]}/manifests/victim"))
    # The config blob holds this test's unique project name: no other test shares it.
    blob = STORAGE / "blobs" / "sha256" / manifest["config"]["digest"][7:9] / manifest["config"]["digest"][7:] / "data"
    original = blob.read_bytes()
    blob.write_bytes(original.replace(b"victim", b"vict1m"))
    try:
        refused = stack.ckpt("pull", f"{repository}:victim")
    finally:
        blob.write_bytes(original)

    assert refused.returncode == 7, refused.stderr
    assert "tampered" in refused.stderr and "Traceback" not in refused.stderr
    assert stack.snapshots() == []


def test_missing_tags_and_repositories_exit_4_and_an_unreachable_registry_5(stack: Stack, repository: str) -> None:  # noqa: F811
    stack.ckpt_ok("snapshot", "--name", "here")
    push(stack, "here", repository)

    assert stack.ckpt("pull", f"{repository}:absent").returncode == 4
    assert stack.ckpt("pull", f"{repository}-nothing:here").returncode == 4
    unreachable = stack.ckpt("pull", "127.0.0.1:9/x/y:z")
    assert unreachable.returncode == 5 and "Connection refused" in unreachable.stderr
    assert stack.ckpt("push", "absent", repository).returncode == 4
    assert stack.ckpt("push", "here", "Bad/Ref").returncode == 2
