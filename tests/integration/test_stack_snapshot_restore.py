"""Whole-stack snapshot and restore through the CLI, against the real engine."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.stack import THREE_SERVICES, Stack, counter_services, engine_script
from tests.polling import holds_for, wait_for

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    stack = start_stack(THREE_SERVICES, settle=1.5)
    stack.redis("set", "visits", "41")
    stack.redis("incr", "visits")
    return stack


def assert_continued(before: dict[str, int], after: dict[str, int]) -> None:
    """Every counter resumed from its checkpoint (a fresh start counts from 1 again)."""
    assert after.keys() == before.keys()
    for container, value in before.items():
        assert after[container] >= value > 5, f"{container}: {value} at the snapshot, {after[container]} after restore"


def test_snapshot_stop_then_restore_keeps_memory_state(stack: Stack) -> None:
    assert len(stack.containers("counter")) == 2  # the scaled service is taken whole
    done = stack.ckpt_ok("--progress", "plain", "snapshot", "--stop", "--name", "first", "--json")
    document = json.loads(done.stdout)
    assert document["status"] == "complete" and document["stopped"] is True
    # Where the time went, in the order it was spent; recorded in the manifest, so inspect shows the same.
    assert list(document["phases"]) == ["startup", "resolve", "record", "hold policies", "pause", "dump", "copy files",
                                        "stop", "save"]
    assert json.loads(stack.ckpt_ok("inspect", "first", "--json").stdout)["phases"] == document["phases"]
    progress = [line.split(None, 1)[1] for line in done.stderr.splitlines()]
    # Each dump went straight into the store through the daemon's own runtime: nothing is saved after it.
    assert {(c["dump_path"], c["dump_fallback"]) for c in document["containers"]} == {("runtime", None)}
    for container in {c["container"] for c in document["containers"]}:
        assert progress.count(f"{container}: dumping") == 1 and progress.count(f"{container}: saving") == 0
    assert {c["service"] for c in document["containers"]} == {"kv", "counter", "web"}
    assert len(document["containers"]) == 4 and all(c["size"] > 0 for c in document["containers"])
    holds_for("not restarted by Docker's restart policy", lambda: set(stack.states().values()) == {"exited"}, 2)

    restored = json.loads(stack.ckpt_ok("restore", "--json").stdout)
    assert restored["snapshot"] == "first"
    assert [c["service"] for c in restored["containers"]][0] == "kv"  # dependencies first
    assert {c["verified"] for c in restored["containers"]} == {"memory layout"}
    assert list(restored["phases"]) == ["startup", "prepare", "restore", "verify"]
    assert all(list(c["seconds"]) == ["copy_in", "restore", "clean_up", "verify"] for c in restored["containers"])
    assert set(stack.states().values()) == {"running"}
    assert stack.redis("get", "visits") == "42"
    stack.assert_counting_on(stack.counts())


def test_snapshot_leaves_the_stack_running_and_restore_force_goes_back(stack: Stack) -> None:
    stack.ckpt_ok("snapshot", "--name", "live")
    assert set(stack.states().values()) == {"running"}
    at_snapshot = stack.counts()
    stack.redis("set", "visits", "1000")
    wait_for("the counters to run 40 past the snapshot",
             lambda: all(count >= at_snapshot[c] + 40 for c, count in stack.counts().items()))
    refused = stack.ckpt("restore", "live")
    assert refused.returncode == 6 and "running" in refused.stderr and "--force" in refused.stderr
    stack.compose("up", "-d", "--no-recreate", "--scale", "counter=3")  # one more replica than the snapshot holds
    live = stack.counts()  # about 40 counts past the snapshot by now

    done = stack.ckpt_ok("restore", "live", "--force", "--json")
    extra = f"{stack.project}-counter-3"
    assert json.loads(done.stdout)["not_in_snapshot"] == [{"service": "counter", "container": extra, "state": "running"}]
    assert f"note: {extra} (running) is not in snapshot live, which holds 2 of counter's" in done.stderr, done.stderr
    after = stack.counts()
    assert stack.redis("get", "visits") == "42"  # the value at the snapshot, not the later one
    for container, value in at_snapshot.items():
        # Back to the snapshot's count and going on from there, well below where the live counter was.
        assert value <= after[container] < live[container], (value, after[container], live[container])
    assert stack.containerd_copies() == []


def test_restore_recreates_removed_containers_and_network(stack: Stack) -> None:
    stack.ckpt_ok("snapshot", "--stop", "--name", "gone")
    stack.compose("down")  # removes the containers and the project network, keeps the volume
    assert stack.states() == {}
    restored = json.loads(stack.ckpt_ok("restore", "gone", "--json").stdout)
    assert all(c["recreated"] for c in restored["containers"])
    assert stack.redis("get", "visits") == "42"
    assert set(stack.states().values()) == {"running"}
    # compose still recognises the recreated containers as its own (on Docker 28 it lists the holders too)
    services = [c for service in ("kv", "counter", "web") for c in stack.containers(service)]
    assert len(services) == 4 and set(services) <= set(stack.compose("ps", "-q", "--no-trunc").stdout.split())


@pytest.mark.restarts_engine
def test_restore_after_the_daemon_restarts(stack: Stack) -> None:
    stack.ckpt_ok("snapshot", "--stop", "--name", "reboot")
    for step in ("stop", "up"):
        done = subprocess.run([str(engine_script()), step], capture_output=True, text=True)
        assert done.returncode == 0, f"{engine_script().name} {step}: {done.stdout}{done.stderr}"
    stack.ckpt_ok("restore")
    assert stack.redis("get", "visits") == "42"
    assert set(stack.states().values()) == {"running"}


def test_restore_of_selected_services_only(stack: Stack) -> None:
    stack.ckpt_ok("snapshot", "--stop", "--name", "part")
    restored = json.loads(stack.ckpt_ok("restore", "part", "kv", "--json").stdout)
    assert [c["service"] for c in restored["containers"]] == ["kv"]
    running = sorted(name for name, state in stack.states().items() if state == "running")
    assert running == [f"{stack.project}-kv-1"]
    assert stack.redis("get", "visits") == "42"


def test_policies_held_back_come_back_when_the_stack_is_started_without_restore(
        start_stack: Callable[..., Stack]) -> None:
    """`docker compose up -d` instead of `restore` after `snapshot --stop`: the containers must not keep `no`."""
    stack = start_stack("services:\n" + counter_services("worker") + "    restart: always\n", settle=0.5)
    worker = f"{stack.project}-worker-1"
    stack.ckpt_ok("snapshot", "--stop", "--name", "first")
    assert stack.restart_policies()[worker] == "no"  # (on Docker 28 its network holder is listed too)
    ps = json.loads(stack.ckpt_ok("ps", "--json").stdout)["containers"]
    assert [(row["container"], row["state"], row["held_policy"]) for row in ps] == [(worker, "exited", "always")]
    assert "always of " + worker in stack.ckpt("doctor").stdout  # exit 1 where CRIU cannot work: not this test's

    stack.compose("up", "-d")  # started fresh, with the policy `no` the snapshot set
    second = json.loads(stack.ckpt_ok("snapshot", "--stop", "--name", "second", "--json").stdout)
    assert [c["restart_policy"] for c in second["containers"]] == ["always"]  # not lost, not `null`

    stack.compose("up", "-d")
    ps = json.loads(stack.ckpt_ok("ps", "--json").stdout)["containers"]
    assert [(row["state"], row["held_policy"]) for row in ps] == [("running", None)]
    assert stack.restart_policies()[worker] == "always"  # put back by `ps`, which found it running


def test_a_live_snapshot_leaves_a_healthchecked_service_unhealthy_until_its_next_probe_and_says_so(
        start_stack: Callable[..., Stack]) -> None:
    """What README's Limits claim: Docker marks a paused container unhealthy without any probe failing (so
    nothing we do resets it), `docker compose up --wait` fails on it, and the next probe makes it healthy."""
    stack = start_stack("services:\n" + counter_services("db") + """    healthcheck:
      test: ["CMD", "true"]
      interval: 10s  # longer than the snapshot takes after the resume, even on a loaded machine
      start_period: 2s
      start_interval: 1s
""", settle=0)
    db = f"{stack.project}-db-1"

    def health() -> tuple[str, int]:
        status, streak = stack.docker("inspect", "-f", "{{.State.Health.Status}} {{.State.Health.FailingStreak}}",
                                      db).stdout.split()
        return status, int(streak)

    wait_for("db healthy", lambda: health()[0] == "healthy")
    done = stack.ckpt_ok("snapshot", "--name", "live")
    assert f"note: Docker shows {db} unhealthy until its next health probe, 10 s after the resume" in done.stderr
    assert health() == ("unhealthy", 0)  # no probe failed: Docker set it when it paused the container
    assert "is unhealthy" in stack.compose("up", "-d", "--wait", "db", check=False).stderr
    wait_for("db's next probe", lambda: health() == ("healthy", 0), timeout=60)
