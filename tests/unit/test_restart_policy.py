"""Restart policies as a --stop snapshot records them, and the kind of a snapshot: pure values, no engine."""

from __future__ import annotations

from typing import Any

import pytest

from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, ManifestError, SnapshotStatus, now_iso
from compose_ckpt.engine import ContainerInfo, RestartPolicy


@pytest.mark.parametrize("text, policy", [
    ("no", RestartPolicy("no")), ("always", RestartPolicy("always")),
    ("unless-stopped", RestartPolicy("unless-stopped")), ("on-failure", RestartPolicy("on-failure")),
    ("on-failure:3", RestartPolicy("on-failure", 3)),
])
def test_policies_read_and_write_as_docker_run_takes_them(text: str, policy: RestartPolicy) -> None:
    assert RestartPolicy.from_text(text) == policy
    assert policy.as_text() == text


@pytest.mark.parametrize("text", ["", "sometimes", "always:3", "on-failure:", "on-failure:-1", "on-failure:x",
                                  "on-failure:\u0663", "no:0", "ALWAYS", " always"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        RestartPolicy.from_text(text)


@pytest.mark.parametrize("recorded, expected, restarts", [
    ({"Name": "always", "MaximumRetryCount": 0}, "always", True),
    ({"Name": "on-failure", "MaximumRetryCount": 5}, "on-failure:5", True),
    ({"Name": "", "MaximumRetryCount": 0}, "no", False),  # what `docker create` without --restart records
    (None, "no", False),
])
def test_a_containers_policy_comes_from_its_host_config(recorded: Any, expected: str, restarts: bool) -> None:
    container = ContainerInfo.from_inspect({"Id": "abc", "HostConfig": {"RestartPolicy": recorded}})
    assert container.restart_policy.as_text() == expected
    assert container.restart_policy.restarts is restarts


def snapshot(stopped: bool, status: SnapshotStatus, policy: str | None = None) -> Manifest:
    record = ContainerRecord(service="web", container_id="a" * 64, container_name="proj-web-1", number=1, image="i",
                             image_id="sha256:" + "1" * 64, checkpoint="ckpt-s", restart_policy=policy)
    return Manifest(name="s", project="proj", created=now_iso(), status=status, stopped=stopped, compose_files=[],
                    compose_hash="", services=["web"], dependencies={}, containers=[record])


@pytest.mark.parametrize("stopped, status, kind", [
    (True, SnapshotStatus.COMPLETE, "clean-stop"),
    (True, SnapshotStatus.INCOMPLETE, "clean-stop"),
    (True, SnapshotStatus.FAILED, "live"),  # rolled back: the stack ran on
    (True, SnapshotStatus.INVALID, "live"),  # cannot be trusted
    (False, SnapshotStatus.COMPLETE, "live"),
])
def test_kind(stopped: bool, status: SnapshotStatus, kind: str) -> None:
    assert snapshot(stopped, status).kind == kind


def test_the_held_policy_survives_the_manifest_round_trip() -> None:
    written = snapshot(True, SnapshotStatus.COMPLETE, "on-failure:3")
    read = Manifest.from_dict(written.to_dict(), "test")
    assert read.containers[0].held_policy == RestartPolicy("on-failure", 3)


@pytest.mark.parametrize("tampered", ["sometimes", "always; rm -rf /", 3, ["always"]])
def test_a_tampered_policy_is_a_manifest_error(tampered: Any) -> None:
    document = snapshot(True, SnapshotStatus.COMPLETE).to_dict()
    document["containers"][0]["restart_policy"] = tampered
    with pytest.raises(ManifestError):
        Manifest.from_dict(document, "test")


def test_an_older_manifest_without_the_field_reads_as_none_held() -> None:
    document = snapshot(True, SnapshotStatus.COMPLETE).to_dict()
    del document["containers"][0]["restart_policy"]
    assert Manifest.from_dict(document, "test").containers[0].held_policy is None
