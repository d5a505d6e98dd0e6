"""A one-shot job that finished (exit 0), or a service that never ran, does not block a snapshot of the
stack: it is skipped with a note, recorded as skipped, and restore leaves it alone. A service that
crashed (non-zero exit) still blocks it: its state would be lost silently."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.stack import BUSYBOX, Stack, counter_services

pytestmark = pytest.mark.engine

WITH_AN_INIT_JOB = f"""
services:
  init:
    image: {BUSYBOX}
    command: ["sh", "-c", "echo prepared > /tmp/done"]
  app:
    image: {BUSYBOX}
    command: ["sh", "-c", "i=0; while true; do i=$$((i+1)); echo $$i > /tmp/count; sleep 0.1; done"]
    depends_on:
      init:
        condition: service_completed_successfully
""" + counter_services("later")


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    stack = start_stack(WITH_AN_INIT_JOB, settle=1.5)
    stack.compose("rm", "-s", "-f", "later")
    stack.compose("create", "later")  # created, never started
    return stack


def test_finished_and_never_started_services_are_skipped_and_left_alone(stack: Stack) -> None:
    init = stack.containers("init")[0]
    taken = stack.ckpt("snapshot", "--name", "s1", "--json")
    assert taken.returncode == 0, taken.stderr
    document = json.loads(taken.stdout)
    assert document["services"] == ["app"]
    assert set(document["skipped"]) == {"init", "later"}
    assert "exited with code 0" in document["skipped"]["init"]
    assert "never started" in document["skipped"]["later"]
    assert "note: skipped init" in taken.stderr

    restored = stack.ckpt("restore", "s1", "--force", "--json")
    assert restored.returncode == 0, restored.stderr
    assert [c["service"] for c in json.loads(restored.stdout)["containers"]] == ["app"]
    assert stack.containers("init") == [init]
    states = stack.states()
    assert states[f"{stack.project}-init-1"] == "exited" and states[f"{stack.project}-later-1"] == "created"

    asked = stack.ckpt("restore", "s1", "init")
    assert asked.returncode == 2 and "init was skipped (" in asked.stderr


def test_a_crashed_service_still_blocks_the_snapshot(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack("services:\n" + counter_services("app") + f"""  crashing:
    image: {BUSYBOX}
    command: ["sh", "-c", "exit 3"]
""")
    done = stack.ckpt("snapshot")
    assert done.returncode == 6 and "crashing-1 is exited with code 3" in done.stderr, done.stderr
    assert stack.snapshots() == []


def test_nothing_running_at_all_is_refused(stack: Stack) -> None:
    stack.compose("rm", "-s", "-f", "app")
    stack.compose("create", "app")
    done = stack.ckpt("snapshot")
    assert done.returncode == 6 and "no service" in done.stderr, done.stderr
