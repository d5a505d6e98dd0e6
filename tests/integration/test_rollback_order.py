"""A failed `restore --force` puts back what it killed dependencies first, each at its address of before, so a
client's connection to its database carries on; and a rollback cut short (the command killed) is finished by
`recover`, which knows about it from the store.

The database's restore is made to fail the way the issue saw it: CRIU refuses its snapshot because a file it had
open is gone (redis rewrote its append-only file). With `--parallel 1` the client comes first in every list of the
restore (compose order), so only a rollback in dependency order puts both back: the first container started gets
the lowest free address, which was the database's, and CRIU cannot bind the client's socket there."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.stack import DEBIAN, Stack
from tests.integration.test_recorded_addresses import HOLDING_APP, hold
from tests.integration.test_restore_failures import rewrite_append_only_file
from tests.polling import wait_for

pytestmark = pytest.mark.engine


def compose(criu_config: Path) -> str:
    annotations = f"    annotations:\n      org.criu.config: {criu_config}\n"
    app = HOLDING_APP.replace("('db', 6379)", "('kv', 6379)")
    return f"""services:
  app:
    image: {DEBIAN}
    command: ["python3", "-c", "{app}"]
    depends_on: [kv]
{annotations}  kv:
    image: {DEBIAN}
    command: ["redis-server", "--appendonly", "yes", "--save", "", "--dir", "/data", "--protected-mode", "no"]
    volumes: [data:/data]
{annotations}volumes:
  data:
"""


def client_ids(stack: Stack) -> set[str]:
    return {m.group(1) for line in stack.redis("client", "list").splitlines()
            if "cmd=incr" in line and (m := re.search(r"\bid=(\d+)", line))}


@pytest.fixture
def stack(start_stack: Callable[..., Stack], tmp_path: Path) -> Stack:
    """The stack with a snapshot `s` whose restore CRIU refuses, the client holding still over its connection."""
    config = tmp_path / "criu-tcp.conf"
    config.write_text("tcp-established\n")
    stack = start_stack(compose(config), settle=3.0)
    assert len(client_ids(stack)) == 1
    hold(stack, True)
    stack.ckpt_ok("snapshot", "--name", "s")
    stack.redis("set", "key", "after")  # the current state, newer than the snapshot
    rewrite_append_only_file(stack)
    return stack


def addresses(stack: Stack) -> dict[str, str]:
    """Container name -> its IPv4 address now."""
    template = "{{.Name}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    lines = stack.docker("inspect", "--format", template, *stack.states()).stdout.splitlines()
    return dict(line.lstrip("/").split(" ", 1) for line in lines)


def assert_as_before(stack: Stack, before: dict[str, str]) -> None:
    """Both run again with their state from before the command, each at its address of before (their TCP
    sockets were bound back there: CRIU refuses another address). Whether the connection then carries on is
    left out: the one put back first may reach the other's network before its socket is back (README, Limits)."""
    assert set(stack.states().values()) == {"running"}, stack.states()
    assert addresses(stack) == before
    assert stack.redis("get", "key") == "after"  # the state from just before the failed command


def test_a_failed_forced_restore_puts_back_the_database_before_its_client(stack: Stack) -> None:
    before = addresses(stack)

    failed = stack.ckpt("restore", "s", "--force", "--parallel", "1")

    assert failed.returncode == 1, failed.stderr
    assert "Can't open file data/appendonlydir/" in failed.stderr  # the database's restore is what failed
    for service in ("kv", "app"):
        assert f"{stack.project}-{service}-1: running again with its state from before the restore" in failed.stderr, \
            failed.stderr
    assert_as_before(stack, before)
    assert "nothing to recover" in stack.ckpt_ok("recover").stdout


def test_recover_finishes_a_rollback_cut_short(stack: Stack) -> None:
    before = addresses(stack)
    command = [sys.executable, "-m", "compose_ckpt", "--progress", "plain", "-p", stack.project,
               "restore", "s", "--force", "--parallel", "1"]
    restore = subprocess.Popen(command, cwd=stack.folder, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert restore.stderr is not None
    seen = []
    for line in restore.stderr:  # both killed and set aside; the database's restore under way
        seen.append(line)
        if f"{stack.project}-kv-1: restoring" in line:
            restore.send_signal(signal.SIGKILL)
            break
    restore.wait(timeout=60)
    assert restore.returncode == -signal.SIGKILL, "".join(seen)
    # the daemon's own end of the database's restore, which fails
    wait_for("the killed restore's containers to stop", lambda: "running" not in stack.states().values(), timeout=20)

    recovered = stack.ckpt("recover")

    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    for service in ("kv", "app"):
        assert f"{stack.project}-{service}-1: running again with its state from before the restore" in recovered.stdout
    assert_as_before(stack, before)
