"""A one-shot job that finished (exit 0) does not block a snapshot of the stack: it is skipped with a
note, recorded as skipped, and restore leaves it alone. A service that crashed (non-zero exit) or was
left `created` (never started, as when `docker compose up` fails half-way) blocks it: its state would be
left out without a word."""

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
    return start_stack(WITH_AN_INIT_JOB, settle=1.5)


def test_a_finished_job_is_skipped_and_left_alone_but_a_never_started_service_blocks(stack: Stack) -> None:
    stack.compose("rm", "-s", "-f", "later")
    stack.compose("create", "later")  # created, never started
    refused = stack.ckpt("snapshot", "--name", "s0")
    assert refused.returncode == 6 and "service later is not running" in refused.stderr, refused.stderr
    assert "later-1 is never started" in refused.stderr and stack.snapshots() == []
    stack.compose("rm", "-f", "later")

    init = stack.containers("init")[0]
    taken = stack.ckpt("snapshot", "--name", "s1", "--json", "app", "init")
    assert taken.returncode == 0, taken.stderr
    document = json.loads(taken.stdout)
    assert document["services"] == ["app"]
    assert set(document["skipped"]) == {"init"}
    assert "exited with code 0" in document["skipped"]["init"]
    assert "note: skipped init" in taken.stderr

    restored = stack.ckpt("restore", "s1", "--force", "--json")
    assert restored.returncode == 0, restored.stderr
    assert [c["service"] for c in json.loads(restored.stdout)["containers"]] == ["app"]
    assert stack.containers("init") == [init]
    assert stack.states()[f"{stack.project}-init-1"] == "exited"

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
    done = stack.ckpt("snapshot", "init")  # only the finished job
    assert done.returncode == 6 and "no service" in done.stderr, done.stderr
