"""A restore that fails says why (CRIU's own log lines, read before containerd deletes them, and a
remedy), and `restore --force` then leaves the services as they were before the command."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.integration.stack import DEBIAN, Stack

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
    for _ in range(50):
        if stack.redis("info", "persistence").find("aof_rewrite_in_progress:0") >= 0:
            return
        time.sleep(0.1)


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
