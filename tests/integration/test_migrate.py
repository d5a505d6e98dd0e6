"""Moving a running stack to a second Docker engine (another dockerd on this machine, reached over tcp)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from compose_ckpt.engine import Engine
from tests.integration.conftest import adopt_if_needed
from tests.integration.second_engine import SecondEngine
from tests.integration.stack import THREE_SERVICES, Stack, counter_services

pytestmark = pytest.mark.engine


@pytest.fixture
def stack(engine: Engine, tmp_path: Path, project_name: str, second: SecondEngine) -> Iterator[Stack]:
    (tmp_path / "compose.yaml").write_text(THREE_SERVICES)
    stack = Stack(tmp_path, project_name)
    stack.compose("up", "-d")
    adopt_if_needed(engine, stack)
    stack.redis("set", "visits", "42")
    stack.wait_counting("counter", "web", at_least=6)  # past what a fresh start shows (see the first test)
    yield stack
    stack.down()
    for container in second_containers(second, project_name):
        second.docker("rm", "-f", container, check=False)
    second.docker("volume", "rm", f"{project_name}_site", check=False)
    second.docker("network", "rm", f"{project_name}_default", check=False)


def second_containers(second: SecondEngine, project: str) -> list[str]:
    """The project's containers on the second engine, without network holders (an adopted stack has them)."""
    listing = second.docker("ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                            "--format", '{{.Names}} {{.Label "compose-ckpt.holder-for"}}').stdout.decode()
    return sorted(line.split()[0] for line in listing.splitlines() if len(line.split()) == 1)


def placed_pages(second: SecondEngine, container: str) -> list[str]:
    """What is left of page images placed at the top of a container's root (read from the host: the second
    engine runs here): the entries with the page folders' prefix that are not empty files."""
    upper = Path(json.loads(second.docker("inspect", container).stdout)[0]["GraphDriver"]["Data"]["UpperDir"])
    return sorted(entry.name for entry in upper.iterdir() if entry.name.startswith(".compose-ckpt-pages-")
                  and (entry.is_dir() or entry.stat().st_size > 0))


def read_on_second(second: SecondEngine, container: str, *command: str) -> str:
    return second.docker("exec", container, *command).stdout.decode().strip()


def test_migrate_moves_the_running_stack_with_its_state(stack: Stack, second: SecondEngine) -> None:
    helpers_before = second.helpers()  # other tests' leftovers on the shared engine are theirs to answer for
    done = stack.ckpt_ok("migrate", "--to", second.tcp, "--json")
    document = json.loads(done.stdout)

    assert set(document["seconds"]) == {"snapshot", "transfer", "restore"}
    assert document["source_removed"] is True
    assert {c["service"] for c in document["containers"]} == {"kv", "counter", "web"}
    # A remote engine: the page images went into each container's root through its archive endpoint...
    assert {c["pages"] for c in document["containers"]} == {"container-root"}
    assert stack.states() == {}  # gone from the source
    moved = second_containers(second, stack.project)
    assert len(moved) == 4
    assert read_on_second(second, f"{stack.project}-kv-1", "redis-cli", "get", "visits") == "42"
    for container in moved:
        if "-kv-" not in container:
            first = int(read_on_second(second, container, "cat", "/tmp/count"))
            assert first > 5, f"{container} started fresh on the target"
        # ...and were removed after the restore: an empty file of the folder's name is all that stays
        assert placed_pages(second, container) == [], f"page images left in the root of {container}"
    assert second.helpers() - helpers_before == set(), "helper containers were left behind"
    # the project's snapshot records the move and can still be listed
    assert [s["status"] for s in stack.snapshots()] == ["complete"]


def test_a_failure_on_the_target_leaves_the_stack_running_on_the_source(stack: Stack, second: SecondEngine) -> None:
    # A different container already holds the web service's name on the target.
    second.copy_image_from_first("local/debian:bookworm")
    squatter = f"{stack.project}-web-1"
    second.docker("run", "-d", "--name", squatter, "--label", f"com.docker.compose.project={stack.project}",
                  "local/debian:bookworm", "sleep", "600")
    before = stack.counts()

    failed = stack.ckpt("migrate", "--to", second.tcp)

    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "runs on the source again" in failed.stderr and squatter in failed.stderr
    assert set(stack.states().values()) == {"running"}
    stack.assert_counting_on(before)  # the source stack kept its state
    assert stack.redis("get", "visits") == "42"
    assert second_containers(second, stack.project) == [squatter]  # nothing else left on the target


def test_a_docker_context_names_the_target(stack: Stack, second: SecondEngine, test_id: str) -> None:
    context = f"ckpt2-{test_id}"
    subprocess.run(["docker", "context", "create", context, "--docker", f"host={second.tcp}"],
                   check=True, capture_output=True)
    try:
        done = stack.ckpt_ok("migrate", "--to", context, "--keep-source", "--json")
        assert json.loads(done.stdout)["source_removed"] is False
        assert set(stack.states().values()) == {"exited"}  # kept, stopped
        assert len(second_containers(second, stack.project)) == 4
    finally:
        subprocess.run(["docker", "context", "rm", "-f", context], capture_output=True)


def test_an_unknown_context_is_a_clear_error(stack: Stack) -> None:
    done = stack.ckpt("migrate", "--to", "no-such-context-here")
    assert done.returncode == 5 and "no-such-context-here" in done.stderr and "Traceback" not in done.stderr
    assert set(stack.states().values()) == {"running"}  # nothing was touched


def test_a_read_only_root_takes_containerd_way_on_a_remote_engine(
        engine: Engine, tmp_path: Path, project_name: str, second: SecondEngine) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n" + counter_services("ro") + "    read_only: true\n"
                                           "    tmpfs: [/tmp]\n")
    stack = Stack(tmp_path, project_name)
    stack.compose("up", "-d")
    try:
        adopt_if_needed(engine, stack)
        stack.wait_counting("ro", at_least=6)

        document = json.loads(stack.ckpt_ok("migrate", "--to", second.tcp, "--json").stdout)

        # The archive endpoint refuses a read-only root: the page images went through containerd instead.
        assert {c["pages"] for c in document["containers"]} == {"containerd"}
        (moved,) = second_containers(second, project_name)
        assert int(read_on_second(second, moved, "cat", "/tmp/count")) > 5, "started fresh on the target"
    finally:
        stack.down()
        for container in second_containers(second, project_name):
            second.docker("rm", "-f", container, check=False)
        second.docker("network", "rm", f"{project_name}_default", check=False)
