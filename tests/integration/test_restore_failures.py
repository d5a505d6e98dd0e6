"""A restore that fails says why (CRIU's own log lines, read before containerd deletes them, and a
remedy), and `restore --force` then leaves the services as they were before the command."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.stack import BUSYBOX, COUNTER, DEBIAN, Stack, counter_services, established_to, run_docker
from tests.polling import wait_for

pytestmark = pytest.mark.engine

AOF_REDIS = f"""
services:
  kv:
    image: {DEBIAN}
    command: ["redis-server", "--appendonly", "yes", "--save", "", "--dir", "/data", "--protected-mode", "no"]
    volumes: [data:/data]
volumes:
  data:
"""


def rewrite_append_only_file(stack: Stack) -> None:
    """redis replaces its open append-only file: the one the checkpoint holds open is gone."""
    assert "started" in stack.redis("bgrewriteaof")
    wait_for("the rewrite to end", lambda: "aof_rewrite_in_progress:0" in stack.redis("info", "persistence"))


def test_a_failed_restore_shows_criu_log_lines_and_a_remedy(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(AOF_REDIS)
    stack.redis("set", "key", "before")
    stack.ckpt_ok("snapshot", "--name", "aof")
    rewrite_append_only_file(stack)

    failed = stack.ckpt("restore", "aof", "--force")

    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "Can't open file data/appendonlydir/" in failed.stderr  # CRIU's own line, from its deleted log
    assert "A file the process had open at checkpoint time is gone" in failed.stderr


def test_a_failed_forced_restore_puts_back_what_ran_before(start_stack: Callable[..., Stack],
                                                           isolated_store: Path) -> None:
    stack = start_stack(AOF_REDIS.replace("volumes:\n  data:", counter_services("side") + "volumes:\n  data:"))
    stack.redis("set", "key", "before")
    stack.ckpt_ok("snapshot", "--name", "aof")
    stack.redis("set", "key", "after")  # the current state, newer than the snapshot
    rewrite_append_only_file(stack)
    side_before = stack.counts_of("side")

    failed = stack.ckpt("restore", "aof", "--force")

    assert failed.returncode == 1, failed.stderr
    assert f"{stack.project}-kv-1: running again with its state from before the restore" in failed.stderr
    # its safety checkpoint was dumped by the daemon's runtime into the store, its bytes shown
    assert re.search(rf"{stack.project}-kv-1: saving current state \d+\.\d \w?i?B", failed.stderr), failed.stderr
    assert list((isolated_store / "projects" / stack.project / ".safety").iterdir()) == []  # put back: removed
    assert set(stack.states().values()) == {"running"}, stack.states()
    assert stack.redis("get", "key") == "after"  # its state from just before the command
    side_after = stack.counts_of("side")
    assert all(side_after[c] >= side_before[c] for c in side_before), "a counter started over"
    assert not any(line.strip() for c in stack.containers("kv") + stack.containers("side")
                   for line in run_docker("checkpoint", "ls", c).stdout.splitlines()[1:])
    assert stack.containerd_copies() == []  # of the failed restore and of the ones putting back


def test_a_container_that_cannot_be_saved_stops_a_forced_restore_before_anything_is_killed(
        start_stack: Callable[..., Stack]) -> None:
    # Connects to itself once told to: an established TCP connection, which CRIU refuses (without
    # tcp-established), made after the snapshot.
    stack = start_stack(f"""
services:
  web:
    image: {BUSYBOX}
    command: ["sh", "-c", "({COUNTER}) & nc -l -p 9000 -e cat & while [ ! -f /tmp/connect ]; do sleep 0.1; done; tail -f /dev/null | nc 127.0.0.1 9000"]
""")
    stack.ckpt_ok("snapshot", "--name", "quiet")
    web = stack.containers("web")[0]
    at_snapshot = stack.count(web)
    run_docker("exec", web, "touch", "/tmp/connect")
    wait_for("the connection to port 9000", lambda: established_to(web, 9000))
    # Far enough past the snapshot that a restore of it reads clearly lower, however slow the restore.
    wait_for("the counter to run 50 past the snapshot", lambda: stack.count(web) >= at_snapshot + 50)
    before = stack.counts_of("web")

    refused = stack.ckpt("restore", "quiet", "--force")

    assert refused.returncode == 1, refused.stderr
    assert "nothing was changed" in refused.stderr and "--no-safety-checkpoint" in refused.stderr
    assert set(stack.states().values()) == {"running"}
    stack.assert_counting_on(before)  # not killed, not restored: still counting on
    stack.ckpt_ok("restore", "quiet", "--force", "--no-safety-checkpoint")
    assert stack.counts_of("web")[web] < before[web]  # the snapshot's state, the connection discarded
