"""Snapshots restored on another engine whose mounts propagate differently, and across Docker 26 and 28.

Docker makes its data root a shared mount, so on most hosts a container's root file system and its volumes
are slaves of the host's mounts, and CRIU records that. Where the target's are private (a daemon root on a
slave mount; engine-28 here, see docs/engine.md), CRIU's restore failed with `mnt-v2: Failed to copy
sharing ...`: compose-ckpt now restores those mounts private, as that host gives them to any container.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from compose_ckpt.const import ENV_HOME
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import Engine
from compose_ckpt.engine.criu_images import external_slaves, read_mounts
from compose_ckpt.errors import CkptError
from tests.integration.conftest import engine_missing
from tests.integration.second_engine import SecondEngine, start_second_engine
from tests.integration.stack import BUSYBOX, COUNTER, ENGINE_28_HOST, Stack

pytestmark = pytest.mark.engine

DOCKER_26_HOST = "unix:///var/run/docker.sock"

# A counter in memory, and one that also copies its count into a named volume (a mount under Docker's
# data root) from a second process.
STACK = f"""
services:
  counter:
    image: {BUSYBOX}
    command: ["sh", "-c", "{COUNTER}"]
  keeper:
    image: {BUSYBOX}
    command: ["sh", "-c", "(while true; do cp /tmp/count /data/count.new; mv /data/count.new /data/count; sleep 0.2; done) & {COUNTER}"]
    volumes: [kept:/data]
volumes:
  kept:
"""
CONTAINERS = ("counter-1", "keeper-1")


@pytest.fixture(scope="module")
def private_engine(engine: Engine) -> Iterator[SecondEngine]:
    """A Docker 26 daemon whose containers' root file systems are private mounts."""
    started = start_second_engine(private_mounts=True)
    yield started
    started.stop()


@pytest.fixture
def on(tmp_path: Path, project_name: str) -> Iterator[Callable[[str], Stack]]:
    """on(HOST): the test's stack (same folder and project) on the engine at HOST; taken down on each."""
    (tmp_path / "compose.yaml").write_text(STACK)
    stacks: dict[str, Stack] = {}

    def stack_on(host: str) -> Stack:
        return stacks.setdefault(host, Stack(tmp_path, project_name, host=host))

    yield stack_on
    for stack in stacks.values():
        stack.down()


def engine_28() -> str:
    try:
        with closing(Engine.connect(ENGINE_28_HOST)) as connected:
            version = connected.info().server_version
    except CkptError as exc:
        engine_missing(f"engine-28: {exc} (run `make engine-28`)")
        raise
    if not version.startswith("28."):
        engine_missing(f"{ENGINE_28_HOST} runs Docker {version}, not 28")
    return ENGINE_28_HOST


def started(stack: Stack, adopt: bool) -> dict[str, int]:
    """Start the stack, adopt it when asked (Docker 28 restores only adopted containers), let the counters
    run a while, return them."""
    stack.compose("up", "-d")
    if adopt:
        stack.ckpt_ok("adopt", "--yes", "-t", "0")
    stack.wait_counting("counter", "keeper")
    return counts(stack)


def counts(stack: Stack) -> dict[str, int]:
    return {name: stack.count(f"{stack.project}-{name}") for name in CONTAINERS}


def assert_carried_on(stack: Stack, before: dict[str, int]) -> None:
    """Each counter went on from where it was (a fresh start counts from 1), and the volume came along."""
    stack.assert_counting_on({f"{stack.project}-{name}": before[name] for name in CONTAINERS})
    assert int(stack.docker("exec", f"{stack.project}-keeper-1", "cat", "/data/count").stdout) >= before["keeper-1"]


def root_propagation(engine: Engine, container: str) -> str:
    """The optional fields of the container's root mount (`master:N`, `shared:N` or nothing)."""
    info = engine.inspect(container)
    assert info is not None and info.pid
    root = next(line for line in Path(f"/proc/{info.pid}/mountinfo").read_text().splitlines()
                if line.split()[4] == "/")
    fields = root.split()
    return " ".join(fields[6:fields.index("-")])


def test_a_snapshot_restores_where_the_mounts_are_private(
        on: Callable[[str], Stack], private_engine: SecondEngine, isolated_store: Path) -> None:
    source = on(DOCKER_26_HOST)
    before = started(source, adopt=False)
    with closing(Engine.connect(DOCKER_26_HOST)) as first:
        assert root_propagation(first, f"{source.project}-counter-1").startswith("master:")  # the mismatch

    moved = json.loads(source.ckpt_ok("--progress", "plain", "migrate", "--to", private_engine.unix, "--json").stdout)

    assert {c["verified"] for c in moved["containers"]} == {"memory layout"}
    target = on(private_engine.unix)
    assert_carried_on(target, before)
    with closing(Engine.connect(private_engine.unix)) as second:
        assert root_propagation(second, f"{target.project}-counter-1") == ""  # restored private
    # Only the copy placed in Docker's folder was changed: the store keeps the checkpoint as CRIU wrote it.
    store = SnapshotStore(isolated_store)
    folder = store.checkpoint_dir(target.project, moved["snapshot"], f"{target.project}-counter-1")
    image = next(folder.glob("mountpoints-*.img"))
    assert [m.mountpoint for m in external_slaves(read_mounts(image.read_bytes()))] == ["/"]


def test_a_docker_26_snapshot_restores_on_docker_28_and_back(
        on: Callable[[str], Stack], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """26 -> 28 by migrate, 28 -> 26 by export and import (into another store, as on another host)."""
    on_28 = engine_28()
    first = on(DOCKER_26_HOST)
    before = started(first, adopt=True)
    first.ckpt_ok("migrate", "--to", on_28)
    assert first.states() == {}
    second = on(on_28)
    assert_carried_on(second, before)

    before = counts(second)
    second.ckpt_ok("snapshot", "--stop", "--with-volumes", "--name", "back")
    archive = tmp_path / "back.ckpt"
    second.ckpt_ok("export", "back", "-o", str(archive))
    second.compose("down", "-t", "0", "--remove-orphans")
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "store-of-the-26-host"))
    first.ckpt_ok("import", str(archive))
    first.ckpt_ok("restore", "back")
    assert_carried_on(first, before)
