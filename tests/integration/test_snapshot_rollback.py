"""A snapshot that fails on one service leaves the whole stack as it was, and is never listed complete."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest

from compose_ckpt.engine.procfs import runc_tcp_established
from tests.integration.stack import COUNTER, Stack, counter_services, established_to, run_docker
from tests.polling import wait_for

pytestmark = pytest.mark.engine

# Five services; `talker` holds an established TCP connection to itself: without tcp-established
# CRIU refuses it.
HEALTHY = ("one", "two", "three", "four")
WITH_A_CONNECTION = "services:\n" + counter_services(*HEALTHY) + f"""  talker:
    image: local/busybox:latest
    command: ["sh", "-c", "nc -l -p 9000 -e cat & sleep 0.5; tail -f /dev/null | nc 127.0.0.1 9000 & {COUNTER}"]
"""


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    if runc_tcp_established():
        pytest.fail("/etc/criu/runc.conf allows tcp-established; this test needs it off")
    return start_stack(WITH_A_CONNECTION, settle=1.5)


@pytest.mark.parametrize("mode", [[], ["--stop"]], ids=["leave-running", "stop"])
def test_failed_dump_rolls_every_service_back(stack: Stack, mode: list[str]) -> None:
    containers = {service: stack.containers(service)[0] for service in (*HEALTHY, "talker")}
    before = {service: stack.count(c) for service, c in containers.items()}

    failed = stack.ckpt("snapshot", "--name", "doomed", *mode)

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "talker" in failed.stderr and "left running" in failed.stderr
    assert "Connected TCP socket" in failed.stderr  # the key line of CRIU's log
    assert "tcp-established" in failed.stderr  # the remedy
    assert "Traceback" not in failed.stderr
    assert set(stack.states().values()) == {"running"}
    stack.assert_counting_on({container: before[service] for service, container in containers.items()})
    for container in containers.values():
        assert run_docker("checkpoint", "ls", container).stdout.strip() in ("", "CHECKPOINT NAME")

    listed = stack.snapshots()
    assert [(s["name"], s["status"]) for s in listed] == [("doomed", "failed")]
    refused = stack.ckpt("restore", "doomed")
    assert refused.returncode != 0 and "failed" in refused.stderr
    no_complete = stack.ckpt("restore")
    assert no_complete.returncode == 4 and "no complete snapshot" in no_complete.stderr

    # The retry (without the service that cannot be dumped) takes the failed snapshot's name over.
    stack.ckpt_ok("snapshot", *HEALTHY, "--name", "doomed", *mode)
    assert [(s["name"], s["status"], s["services"]) for s in stack.snapshots()] == [("doomed", "complete", list(HEALTHY))]
    taken = stack.ckpt("snapshot", *HEALTHY, "--name", "doomed")
    assert taken.returncode == 2 and "already exists (complete)" in taken.stderr, taken.stderr


def test_snapshot_of_healthy_services_alone_succeeds(stack: Stack) -> None:
    stack.ckpt_ok("snapshot", "one", "two", "--name", "healthy")
    assert [(s["name"], s["status"], s["services"]) for s in stack.snapshots()] == [("healthy", "complete", ["one", "two"])]


def test_a_process_of_another_uid_without_the_capability_rolls_back(start_stack: Callable[..., Stack]) -> None:
    """Where CRIU lacks CAP_SYS_RESOURCE (this sandbox), a non-root process cannot be dumped."""
    from compose_ckpt.engine.procfs import CAP_SYS_RESOURCE, daemon_pid, has_capability

    if has_capability(daemon_pid(), CAP_SYS_RESOURCE):
        pytest.skip("the daemon holds CAP_SYS_RESOURCE here: CRIU can dump any uid, nothing to fail")
    stack = start_stack(f"""
services:
  root:
    image: local/busybox:latest
    command: ["sh", "-c", "{COUNTER}"]
  nobody:
    image: local/busybox:latest
    user: "65534"
    command: ["sleep", "600"]
""")
    before = stack.count(stack.containers("root")[0])
    failed = stack.ckpt("snapshot", "--stop")
    assert failed.returncode == 1 and "nobody" in failed.stderr and "Traceback" not in failed.stderr
    assert "CAP_SYS_RESOURCE" in failed.stderr  # the remedy names the missing capability
    assert set(stack.states().values()) == {"running"}
    stack.assert_counting_on({stack.containers("root")[0]: before})


# `server` listens on a unix socket in a shared volume, `client` (another container) connects to it; `db` listens
# on one of its own, where a `docker compose exec` session connects; `talker` holds a TCP connection. CRIU
# refuses each: the unix ones with a bare `External socket is used` or `Unix socket N not found`.
# The server removes the socket file an earlier one left in the shared volume (adopt restarts it on Docker 28).
UNIX_SERVER = ("import socket,os\\nif os.path.exists('{path}'): os.unlink('{path}')\\n"
               "s=socket.socket(socket.AF_UNIX)\\ns.bind('{path}'); s.listen()\\n"
               "held=[]\\nwhile True: held.append(s.accept())")
UNIX_CLIENT = ("import socket,time,os\\nwhile True:\\n  try:\\n    s=socket.socket(socket.AF_UNIX); s.connect('{path}'); break\\n"
               "  except OSError: time.sleep(0.1)\\nopen('/tmp/connected','w').close()\\ntime.sleep(100000)")
SHARED_SOCKETS = f"""
services:
  server:
    image: local/debian:bookworm
    command: ["python3", "-c", "{UNIX_SERVER.format(path='/sock/app.sock')}"]
    volumes: [sock:/sock]
  client:
    image: local/debian:bookworm
    command: ["python3", "-c", "{UNIX_CLIENT.format(path='/sock/app.sock')}"]
    volumes: [sock:/sock]
  db:
    image: local/debian:bookworm
    command: ["python3", "-c", "{UNIX_SERVER.format(path='/tmp/db.sock')}"]
  talker:
    image: local/busybox:latest
    command: ["sh", "-c", "nc -l -p 9000 -e cat & sleep 0.5; tail -f /dev/null | nc 127.0.0.1 9000 & {COUNTER}"]
volumes:
  sock:
"""


def test_unix_sockets_to_outside_name_both_ends_and_each_cause_its_remedy(start_stack: Callable[..., Stack]) -> None:
    if runc_tcp_established():
        pytest.fail("/etc/criu/runc.conf allows tcp-established; this test needs it off")
    stack = start_stack(SHARED_SOCKETS, settle=0)
    db = stack.containers("db")[0]
    session = subprocess.Popen(["docker", "compose", "-p", stack.project, "exec", "-T", "db", "python3", "-c",
                                UNIX_CLIENT.format(path="/tmp/db.sock").replace("\\n", "\n")],
                               cwd=stack.folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        for service in ("client", "db"):
            wait_for(f"{service}'s connection", lambda s=service: stack.docker(  # type: ignore[misc]
                "exec", stack.containers(s)[0], "test", "-e", "/tmp/connected", check=False).returncode == 0)
        wait_for("talker's TCP connection", lambda: established_to(stack.containers("talker")[0], 9000))
        failed = stack.ckpt("snapshot", "client", "db", "talker")
    finally:
        session.kill()
        session.wait()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    p = stack.project  # server is not in this snapshot: named as a container, not as a service
    assert re.search(rf"service client {p}-client-1 \(pid \d+ python3\) holds unix socket /sock/app.sock, "
                     rf"connected to {p}-server-1 \(pid \d+ python3\)", failed.stderr), failed.stderr
    assert re.search(rf"service db {p}-db-1 \(pid \d+ python3\) holds unix socket /tmp/db.sock, connected to "
                     rf"a `docker exec` session in {p}-db-1 \(pid \d+ python3, not started by its main process\)",
                     failed.stderr), failed.stderr
    hint = failed.stderr[failed.stderr.index("hint:"):]
    assert "End the exec session" in hint and "tcp-established" in hint  # both causes, both remedies
    assert set(stack.states().values()) == {"running"} and db in stack.containers("db")
