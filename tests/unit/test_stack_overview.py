"""What `ps` decides about a stack (domain/stack/overview.py), on a fake stack: which containers a snapshot would take,
which this engine could restore, services without a container, restart policies still held back. The real
engine's side: tests/integration (test_holders.py, test_project_resolution.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from compose_ckpt.domain.ports import ComposePort
from compose_ckpt.domain.stack.held_policies import HeldPolicy, hold
from compose_ckpt.domain.stack.overview import MISSING, ContainerOverview, StackOverview, stack_overview
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import RestartPolicy
from tests.fakes import DOCKER_26, FakeStack

STACK = {"db": (), "web": ("db",)}


def no_compose() -> ComposePort:
    raise AssertionError("docker compose is run only for an adopted project whose files changed")


def overview(stack: FakeStack, tmp_path: Path) -> StackOverview:
    return stack_overview(stack.project(), SnapshotStore(tmp_path), no_compose)


def test_every_running_container_in_its_own_namespace_is_taken_on_docker_26(tmp_path: Path) -> None:
    seen = overview(FakeStack(STACK), tmp_path)
    assert seen.containers == [
        ContainerOverview("db", "p-db-1", "running", True, "own netns", True, None),
        ContainerOverview("web", "p-web-1", "running", True, "own netns", True, None),
    ]
    assert (seen.project, seen.engine_version, seen.stale_joins, seen.abandoned_holders, seen.drift) == \
        ("p", "26.1.5", [], [], None)


def test_on_docker_28_a_container_with_its_own_namespace_is_neither_restorable_nor_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = FakeStack(STACK)
    monkeypatch.setattr(stack, "info", lambda: dataclasses.replace(DOCKER_26, server_version="28.5.2"))
    seen = overview(stack, tmp_path)
    assert seen.engine_version == "28.5.2"
    assert [(c.container, c.restorable, c.snapshot) for c in seen.containers] == \
        [("p-db-1", False, False), ("p-web-1", False, False)]


def test_a_stopped_container_is_not_taken_and_shows_the_policy_held_back_for_it(tmp_path: Path) -> None:
    stack = FakeStack(STACK)
    web = stack.by_name("p-web-1")
    web.status = "exited"
    hold(SnapshotStore(tmp_path), "p", [HeldPolicy(web.id, web.name, RestartPolicy("always"), "s")])
    [db, stopped] = overview(stack, tmp_path).containers
    assert (db.snapshot, db.held_policy) == (True, None)
    assert (stopped.state, stopped.snapshot, stopped.restorable, stopped.held_policy) == ("exited", False, True, "always")


def test_a_service_without_a_container_is_listed_missing_after_the_others(tmp_path: Path) -> None:
    stack = FakeStack(STACK)
    del stack.containers[stack.by_name("p-db-1").id]
    assert overview(stack, tmp_path).containers == [
        ContainerOverview("web", "p-web-1", "running", True, "own netns", True, None),
        ContainerOverview("db", None, MISSING, False, None, False, None),
    ]

