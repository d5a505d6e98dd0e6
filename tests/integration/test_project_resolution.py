"""Finding a project's containers: container_name, labels, scaled services, and the errors around them."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.stack import COUNTER, Stack

pytestmark = pytest.mark.engine


@pytest.fixture
def stack(start_stack: Callable[..., Stack], project_name: str) -> Stack:
    return start_stack(f"""
services:
  named:
    image: local/busybox:latest
    container_name: {project_name}-custom
    command: ["sh", "-c", "{COUNTER}"]
  scaled:
    image: local/busybox:latest
    command: ["sh", "-c", "{COUNTER}"]
    scale: 3
  later:
    image: local/busybox:latest
    command: ["sleep", "600"]
    profiles: [extra]
""")


def test_ps_resolves_container_name_and_scaled_services(stack: Stack) -> None:
    document = json.loads(stack.ckpt_ok("ps", "--json").stdout)
    assert document["project"] == stack.project
    rows = {(r["service"], r["container"]) for r in document["containers"]}
    assert rows == {("named", f"{stack.project}-custom")} | {("scaled", f"{stack.project}-scaled-{n}") for n in (1, 2, 3)}
    assert all(r["state"] == "running" and r["snapshot"] for r in document["containers"])


def test_snapshot_takes_every_replica_and_the_named_container(stack: Stack) -> None:
    document = json.loads(stack.ckpt_ok("snapshot", "--json").stdout)
    assert sorted(c["container"] for c in document["containers"]) == sorted(
        [f"{stack.project}-custom"] + [f"{stack.project}-scaled-{n}" for n in (1, 2, 3)])


def test_unknown_service_is_named(stack: Stack) -> None:
    done = stack.ckpt("snapshot", "nosuch")
    assert done.returncode == 2 and "no such service" in done.stderr and "named, scaled" in done.stderr


def test_a_service_disabled_by_its_profile_says_how_to_enable_it(stack: Stack) -> None:
    done = stack.ckpt("snapshot", "later")
    assert done.returncode == 2 and "--profile" in done.stderr


def test_a_stopped_service_is_refused_and_nothing_is_frozen(stack: Stack) -> None:
    stack.compose("stop", "-t", "0", "named")
    done = stack.ckpt("snapshot")
    assert done.returncode == 6 and "named is not running" in done.stderr
    states = stack.states()
    assert [state for name, state in states.items() if "scaled" in name] == ["running"] * 3
    assert stack.snapshots() == []


def test_a_service_without_containers_is_refused(stack: Stack) -> None:
    stack.compose("rm", "-s", "-f", "named")
    done = stack.ckpt("snapshot")
    assert done.returncode == 4 and "service named" in done.stderr and "has no container" in done.stderr
