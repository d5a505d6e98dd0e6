"""An app holding a TCP connection to its database: snapshot and `restore --force` of the stack carry the
connection on (both ends frozen together, CRIU's tcp-established), and without tcp-established the failure
says how to turn it on and which service talks to a peer outside the snapshot.

tcp-established comes from the per-container annotation `org.criu.config` naming a config file (runc reads
it instead of /etc/criu/runc.conf), so this machine-wide file is never changed by the tests."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from compose_ckpt.const import RUNC_CRIU_CONFIG
from compose_ckpt.engine import procfs
from tests.integration.stack import DEBIAN, Stack
from tests.polling import wait_for, wait_for_change

pytestmark = pytest.mark.engine

# Counts in memory and over one connection: INCR on the database, once per tick. If the connection
# breaks, recv returns nothing and the app exits: a restart would show as a new client id in redis.
APP = (
    "import os, socket, time\\n"
    "conn = socket.create_connection(('db', 6379))\\n"
    "i = 0\\n"
    "while True:\\n"
    "    i += 1\\n"
    "    conn.sendall(b'INCR hits\\\\r\\\\n')\\n"
    "    reply = conn.recv(64)\\n"
    "    if not reply: raise SystemExit('connection closed')\\n"
    "    open('/tmp/count.new', 'w').write(f'{i} {reply.decode().strip()}')\\n"
    "    os.replace('/tmp/count.new', '/tmp/count')\\n"
    "    time.sleep(0.1)\\n"
)


def compose(criu_config: Path | None) -> str:
    annotations = f"    annotations:\n      org.criu.config: {criu_config}\n" if criu_config else ""
    return f"""services:
  db:
    image: {DEBIAN}
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
{annotations}  app:
    image: {DEBIAN}
    command: ["python3", "-c", "{APP}"]
    depends_on: [db]
{annotations}"""


def app_state(stack: Stack) -> tuple[int, int]:
    """(the app's own count, the last INCR reply it read)."""
    mine, reply = stack.docker("exec", stack.containers("app")[0], "cat", "/tmp/count").stdout.split()
    return int(mine), int(reply.lstrip(":"))


def db_cli(stack: Stack, *args: str) -> str:
    return stack.docker("exec", stack.containers("db")[0], "redis-cli", *args).stdout.strip()


def app_client_id(stack: Stack) -> str:
    """Redis's id of the app's connection: a reconnect gets a new one."""
    clients = stack.docker("exec", stack.containers("db")[0], "redis-cli", "client", "list").stdout
    ids = [m.group(1) for line in clients.splitlines() if "cmd=incr" in line and (m := re.search(r"\bid=(\d+)", line))]
    assert len(ids) == 1, clients
    return ids[0]


def test_the_apps_connection_to_its_database_carries_on_across_restore_force(
        start_stack: Callable[..., Stack], tmp_path: Path) -> None:
    config = tmp_path / "criu-tcp.conf"
    config.write_text("tcp-established\n")
    stack = start_stack(compose(config), settle=3.0)
    client = app_client_id(stack)

    stack.ckpt_ok("snapshot", "--name", "connected")
    at_snapshot = app_state(stack)
    wait_for("the app to run on past the snapshot", lambda: app_state(stack)[0] > at_snapshot[0] + 5)
    db_cli(stack, "set", "after-the-snapshot", "1")

    restored = stack.ckpt("restore", "connected", "--force")
    assert restored.returncode == 0, restored.stderr + stack.docker("logs", stack.containers("app")[0]).stderr
    # The app exits when its connection breaks: it must go on over it.
    mine, reply = wait_for_change("the app to go on over its connection", lambda: app_state(stack), app_state(stack))
    assert set(stack.states().values()) == {"running"}, stack.states()
    assert db_cli(stack, "exists", "after-the-snapshot") == "0"  # the database went back to the snapshot
    # ... and the app with it: had it not, its own count would be ahead of the database's. Every INCR went over
    # the one connection.
    assert at_snapshot[0] <= mine and reply == mine
    assert app_client_id(stack) == client  # no reconnect


def test_without_tcp_established_the_failure_names_the_command_and_the_peer_outside(
        start_stack: Callable[..., Stack]) -> None:
    if procfs.runc_tcp_established():
        pytest.fail(f"{RUNC_CRIU_CONFIG} allows tcp-established; this test needs it off")
    stack = start_stack(compose(None), settle=2.0)
    db_address = stack.docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                              stack.containers("db")[0]).stdout.strip()

    failed = stack.ckpt("snapshot", "app")  # the database is not in this snapshot
    assert failed.returncode == 1 and "Connected TCP socket" in failed.stderr
    assert "compose-ckpt host install" in failed.stderr and "--tcp-established" in failed.stderr
    assert re.search(rf"service app \(\S+\) is connected to {re.escape(db_address)}:6379, outside the snapshot",
                     failed.stderr.replace("\n", " ")), failed.stderr
    assert set(stack.states().values()) == {"running"}

    whole = stack.ckpt("snapshot")  # both ends in it: the connection is inside, nobody named
    assert whole.returncode == 1 and "is connected to" not in whole.stderr
