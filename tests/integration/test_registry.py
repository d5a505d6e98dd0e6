"""push and pull against a real registry (distribution 2.8, `make registry`), restore on another daemon."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.const import ENV_HOME
from tests.integration.conftest import engine_missing
from tests.integration.second_engine import SecondEngine, free_port
from tests.integration.stack import Stack, run_docker
from tests.integration.test_export_import import on_target, private_image, stack  # noqa: F401 (fixtures)
from tests.integration.test_sidecar import CONFIG_DIR, counter_service, sidecar_image  # noqa: F401
from tests.polling import wait_for

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


def push(source: Stack, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(source.ckpt_ok("push", *args, "--json").stdout)
    return result


def test_push_pull_and_restore_on_another_daemon(stack: Stack, second: SecondEngine, tmp_path: Path,  # noqa: F811
                                                 repository: str) -> None:
    # 3 MiB of random bytes in a container's filesystem: its layer copy does not compress, so push
    # stores it as raw zstd blocks; pull and restore must give back the very bytes.
    one = f"{stack.project}-one-1"
    stack.docker("exec", one, "busybox", "dd", "if=/dev/urandom", "of=/random", "bs=1048576", "count=3")
    written = stack.docker("exec", one, "busybox", "sha256sum", "/random").stdout
    stack.ckpt_ok("snapshot", "--stop", "--name", "moving")
    pushed = push(stack, "moving", repository, "--with-images")
    assert pushed["reference"] == f"{repository}:moving" and pushed["uploaded_blobs"] == pushed["blobs"]
    layers = json.loads(registry_api(f"{repository.split('/', 1)[1]}/manifests/moving"))["layers"]
    copy = next(layer for layer in layers if layer["annotations"]["org.opencontainers.image.title"] == f"layers/{one}.tar.zst")
    frame = registry_api(f"{repository.split('/', 1)[1]}/blobs/{copy['digest']}", accept="*/*")
    assert frame[:6] == bytes.fromhex("28b52ffd8038") and copy["size"] > 3 * 1024**2  # stored: no checksum, 128 KiB window
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
    assert second.docker("exec", one, "busybox", "sha256sum", "/random").stdout.decode() == written


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


def test_migrate_via_a_registry_then_pull_and_restore_on_the_other_host(
        stack: Stack, second: SecondEngine, tmp_path: Path, repository: str) -> None:  # noqa: F811
    before = {f"{stack.project}-{service}-1": count
              for service, count in zip(("one", "two"), stack.counts_of("one", "two").values())}
    moved = json.loads(stack.ckpt_ok("migrate", "--via", f"{repository}:move", "--json").stdout)
    assert moved["source_removed"] is False and moved["pull"] == f"{repository}@{moved['digest']}"
    assert set(stack.states().values()) == {"exited"}  # kept, stopped, on the source
    home = tmp_path / "other-host"
    # The images travel as they would between hosts without a shared image registry.
    second.copy_image_from_first(json.loads(stack.ckpt_ok("inspect", moved["snapshot"], "--json").stdout)
                                 ["containers"][0]["image"])

    pulled = on_target(second, home, "pull", moved["pull"])
    assert pulled.returncode == 0, pulled.stderr.decode()
    restored = on_target(second, home, "-p", stack.project, "restore", moved["snapshot"])
    assert restored.returncode == 0, restored.stderr.decode()
    for container, count in before.items():
        assert int(second.docker("exec", container, "cat", "/tmp/count").stdout) >= count


def test_migrate_via_an_unreachable_registry_leaves_the_stack_running_with_its_state(stack: Stack) -> None:  # noqa: F811
    before = stack.counts_of("one", "two")

    failed = stack.ckpt("migrate", "--via", "127.0.0.1:9/x/y")

    assert failed.returncode == 1 and "runs on the source again" in failed.stderr, failed.stderr
    assert set(stack.states().values()) == {"running"}
    after = stack.counts_of("one", "two")
    assert all(after[name] >= count for name, count in before.items())


# --- the sidecar pushes its scheduled snapshots ----------------------------------------------


def registry_tags(repository: str) -> list[str]:
    return json.loads(registry_api(f"{repository.split('/', 1)[1]}/tags/list")).get("tags") or []


def test_the_sidecar_pushes_each_snapshot_keeps_two_in_the_registry_and_retries_a_bad_one(
        sidecar_image: str, tmp_path: Path, repository: str, isolated_store: Path) -> None:  # noqa: F811
    prefix = project = f"ckptside{uuid.uuid4().hex[:8]}"
    port = free_port()
    labels = {"enable": "true", "schedule": "@every 3s", "keep": "2", "push": f"{repository}:latest",
              # a second job, pushing to a registry that is not there: it must not hold up anything. Its
              # snapshots come less often than its first retries (5 s, 15 s), so that neither a newer
              # snapshot nor retention replaces the one being retried before the second retry is due.
              "offline.schedule": "@every 20s", "offline.keep": "1", "offline.push": "127.0.0.1:9/x/y"}
    (tmp_path / "compose.yaml").write_text(f"services:\n  one:\n{counter_service(prefix, labels)}\n")
    config = tmp_path / "config"
    config.mkdir()
    (config / "sidecar.yaml").write_text(f"label-prefix: {prefix}\nhttp-port: {port}\n")
    labelled = Stack(tmp_path, project)
    name = f"{project}-sidecar"
    try:
        labelled.compose("up", "-d")
        # Host network: the registry listens on the host's loopback, where plain HTTP is allowed.
        run_docker("run", "-d", "--name", name, "--network", "host", "-v", "/var/run/docker.sock:/var/run/docker.sock",
                   "-v", f"{isolated_store}:{isolated_store}", "-e", f"{ENV_HOME}={isolated_store}",
                   "-v", f"{config}:{CONFIG_DIR}", sidecar_image, "serve")

        def logs() -> str:
            return run_docker("logs", name).stderr

        wait_for("four pushes", lambda: logs().count("event=push_done") >= 4, timeout=90)
        wait_for("a retried push", lambda: "retry_in_seconds=15" in logs(), timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        run_docker("stop", "-t", "60", name)
    finally:
        output = run_docker("logs", name, check=False).stderr
        run_docker("rm", "-f", name, check=False)
        labelled.down()

    assert "registry_pruned=auto-default-" in output, output
    assert re.search(rf'pushes_total{{project="{project}",job="default"}} ([4-9]|\d\d)', metrics), metrics
    assert re.search(rf'push_failures_total{{project="{project}",job="offline"}} [1-9]', metrics), metrics
    assert output.count("event=run_done") >= 5  # local snapshots went on while pushes failed
    tags = registry_tags(repository)
    pushed = sorted(tag for tag in tags if tag.startswith("auto-default-"))
    assert 2 <= len(pushed) <= 3 and "latest" in tags, tags  # 3: stopped between a push and its retention
    first_pushed = re.findall(r"event=push_done project=\S+ job=default snapshot=(\S+)", output)
    assert first_pushed[0] not in tags and first_pushed[-1] in pushed


# --- credentials: a second registry with htpasswd (Basic) auth --------------------------------


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[str]:
    """A registry demanding alice:s3cret, listening on all interfaces (to reach it off loopback too)."""
    folder = tmp_path / "auth-registry"
    folder.mkdir()
    hashed = subprocess.run(["htpasswd", "-Bbn", "alice", "s3cret"], check=True, capture_output=True, text=True).stdout
    (folder / "htpasswd").write_text(hashed)
    port = free_port()
    (folder / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {folder}/storage\n"
        f"http:\n  addr: 0.0.0.0:{port}\nauth:\n  htpasswd:\n    realm: test\n    path: {folder}/htpasswd\n")
    process = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("the auth registry", lambda: _answers(f"http://127.0.0.1:{port}/v2/"), timeout=20)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # 401: it is up
    except OSError:
        return False
    return True


def docker_config(folder: Path, document: dict[str, Any]) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(document))
    return {"DOCKER_CONFIG": str(folder)}


def auths(registry: str, password: str) -> dict[str, Any]:
    return {"auths": {registry: {"auth": base64.b64encode(f"alice:{password}".encode()).decode()}}}


def test_credentials_from_docker_config_and_helpers_and_plain_http_off_loopback(
        stack: Stack, auth_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    stack.ckpt_ok("snapshot", "--name", "secret")
    target = f"{auth_registry}/team/app:v1"

    assert stack.ckpt("push", "secret", target).returncode == 5  # no credentials at all
    monkeypatch.setenv("DOCKER_CONFIG", docker_config(tmp_path / "wrong", auths(auth_registry, "nope"))["DOCKER_CONFIG"])
    wrong = stack.ckpt("push", "secret", target)
    assert wrong.returncode == 5 and "refused the credentials" in wrong.stderr and "docker login" in wrong.stderr

    monkeypatch.setenv("DOCKER_CONFIG", docker_config(tmp_path / "right", auths(auth_registry, "s3cret"))["DOCKER_CONFIG"])
    stack.ckpt_ok("push", "secret", target)

    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread server\necho \'{"Username":"alice","Secret":"s3cret"}\'\n')
    helper.chmod(0o700)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", docker_config(tmp_path / "helper", {"credsStore": "fake"})["DOCKER_CONFIG"])
    pulled = stack.ckpt("pull", target, "--name", "fromhelper")
    assert pulled.returncode == 0, pulled.stderr

    # The same registry at an address that is not loopback: plain HTTP only with --insecure.
    outside = next(address for address in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
                   if ":" not in address)  # an IPv4 address of this host that is not loopback
    remote = target.replace("127.0.0.1", outside)
    monkeypatch.setenv("DOCKER_CONFIG", docker_config(tmp_path / "remote", auths(remote.split("/")[0], "s3cret"))
                       ["DOCKER_CONFIG"])
    refused = stack.ckpt("push", "secret", remote)
    assert refused.returncode == 5 and "--insecure" in refused.stderr, refused.stderr
    stack.ckpt_ok("push", "secret", remote, "--insecure")
