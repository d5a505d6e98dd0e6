"""Restore recreates a container from the very image it was checkpointed on, not from what its tag names now:
its memory belongs with that image's files. When that image is gone, restore refuses (exit 4) naming tag and
id, unless --allow-other-image, and then the memory layout is no proof of anything (the files are new)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.integration.stack import BUSYBOX, Stack, counter_services, run_docker

pytestmark = pytest.mark.engine


@pytest.fixture
def build(test_id: str) -> Iterator[Callable[[str], str]]:
    """build(label): a new build of the tag `ckpttest<id>/app:latest` from local/busybox; returns its image id."""
    tag = f"ckpttest{test_id}/app:latest"
    built: list[str] = []

    def one(label: str) -> str:
        dockerfile = f"FROM {BUSYBOX}\nLABEL compose-ckpt.test.build={test_id}-{label}\n"
        done = subprocess.run(["docker", "build", "--network", "none", "-t", tag, "-"], input=dockerfile,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        image_id = run_docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
        built.append(image_id)
        return image_id

    yield one
    run_docker("rmi", "-f", tag, *built, check=False)


def image_of(stack: Stack, service: str) -> str:
    return str(json.loads(stack.docker("inspect", stack.containers(service)[0]).stdout)[0]["Image"])


def test_restore_recreates_from_the_recorded_image_and_refuses_when_it_is_gone(
        start_stack: Callable[..., Stack], build: Callable[[str], str], test_id: str) -> None:
    old = build("old")
    stack = start_stack("services:\n" + counter_services("app", image=f"ckpttest{test_id}/app:latest"))
    before = stack.count(stack.containers("app")[0])
    stack.ckpt_ok("snapshot", "--stop", "--name", "s")
    stack.compose("rm", "-f")
    new = build("new")  # the tag moves to a new build; the old image is still here
    assert new != old

    restored = stack.ckpt("restore", "s")

    assert restored.returncode == 0, restored.stderr
    assert image_of(stack, "app") == old
    assert stack.count(stack.containers("app")[0]) >= before  # carried on, not started over

    stack.compose("rm", "-sf")
    run_docker("rmi", old)  # the very image is gone now
    refused = stack.ckpt("restore", "s")
    assert refused.returncode == 4, refused.stderr
    message = refused.stderr.replace("\n", " ")
    assert f"ckpttest{test_id}/app:latest ({old})" in message and "--allow-other-image" in message, message
    assert stack.states() == {}  # nothing created

    forced = stack.ckpt("restore", "s", "--allow-other-image", "--json")
    assert forced.returncode == 0, forced.stderr
    result = json.loads(forced.stdout)
    assert [c["verified"] for c in result["containers"]] == ["running, on another image"]  # not "memory layout"
    assert any("another image" in warning for warning in result["warnings"])
    assert image_of(stack, "app") == new
