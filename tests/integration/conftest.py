"""Fixtures for tests against the real Docker engine with CRIU.

Everything a test creates carries the label `compose-ckpt.test=<unique id>` or a
unique compose project name, and is removed in teardown. Without an engine the
tests skip, except under CI=true, where a missing engine is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from compose_ckpt.domain.stack.holders import needs_holders
from compose_ckpt.engine import Engine
from compose_ckpt.errors import CkptError
from tests.integration.second_engine import SecondEngine, start_second_engine
from tests.integration.stack import ENGINE_28_HOST, Stack, engine_under_test
from tests.polling import let_run

TEST_LABEL = "compose-ckpt.test"

if engine_under_test() == "28":  # before any fixture connects or runs docker
    os.environ["DOCKER_HOST"] = ENGINE_28_HOST


def engine_missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the Docker engine is required under CI: {reason}")
    pytest.skip(f"no Docker engine with CRIU: {reason} (run `make engine`)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that stop and start the default engine break whatever else uses it meanwhile (another pytest run,
    a developer's stack): they run only where the engine is ours alone, under `make test` and CI, which set
    COMPOSE_CKPT_TEST_RESTART_ENGINE=1."""
    if os.environ.get("COMPOSE_CKPT_TEST_RESTART_ENGINE") == "1" or os.environ.get("CI") == "true":
        return
    skip = pytest.mark.skip(reason="restarts the shared engine: set COMPOSE_CKPT_TEST_RESTART_ENGINE=1 (make test does)")
    for item in items:
        if item.get_closest_marker("restarts_engine"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    try:
        connected = Engine.connect()
        info = connected.info()
    except CkptError as exc:
        engine_missing(str(exc))
        raise
    if not info.experimental:
        engine_missing("the daemon does not run with experimental features")
    yield connected
    connected.close()


@pytest.fixture(scope="session")
def second(engine: Engine) -> Iterator[SecondEngine]:
    """A second dockerd standing in for another host; started once, stopped at the end."""
    started = start_second_engine()
    yield started
    started.stop()


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def labelled(test_id: str, engine: Engine) -> Iterator[dict[str, str]]:
    """Labels to put on what a test creates; everything carrying them is removed afterwards."""
    labels = {TEST_LABEL: test_id}
    yield labels
    for container in engine.list_containers(labels):
        engine.remove(container.id)


def adopt_if_needed(engine: Engine, stack: Stack) -> None:
    """On an engine that restores only adopted containers (Docker 28+), `compose-ckpt adopt` the stack."""
    if needs_holders(engine.info().server_version):
        stack.ckpt_ok("adopt", "--yes", "-t", "0")  # a cold restart either way: no need to wait for the stop


@pytest.fixture
def project_name(test_id: str) -> str:
    return f"ckpttest{test_id}"


@pytest.fixture
def start_stack(engine: Engine, tmp_path: Path, project_name: str) -> Iterator[Callable[..., Stack]]:
    """start_stack(compose_text): write the file, `up -d` under this test's project name, let it run a moment.
    On an engine that restores only adopted containers (Docker 28+), `compose-ckpt adopt` it first unless
    `adopt=False`. Every stack started is taken down (with its volumes and holders) afterwards."""
    started: list[Stack] = []

    def start(compose_text: str, settle: float = 1.0, adopt: bool | None = None,
              files: dict[str, str] | None = None) -> Stack:
        """`files`: more files of the project (relative path -> text), e.g. included or extended ones."""
        folder = tmp_path / f"stack-{len(started)}"
        folder.mkdir()
        (folder / "compose.yaml").write_text(compose_text)
        for relative, text in (files or {}).items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(text)
        stack = Stack(folder, project_name)
        started.append(stack)
        stack.compose("up", "-d")
        if adopt is not False:
            adopt_if_needed(engine, stack)
        let_run(settle)  # the stack runs a moment: its state grows before the test looks
        return stack

    yield start
    for stack in started:
        stack.down()
