"""Containers that join another's namespaces (`network_mode`/`ipc` `service:X`, `volumes_from`):
recreated with what Docker accepts, after the container they join (issue 9, item 4)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.stack import COUNTER, Stack, counter_services, engine_under_test, run_docker

pytestmark = pytest.mark.engine

JOINED = f"""
services:
  net:
    image: local/busybox:latest
    command: ["sh", "-c", "{COUNTER}"]
    ipc: shareable
    volumes: ["data:/data"]
    hostname: netbox
  side:
    image: local/busybox:latest
    command: ["sh", "-c", "{COUNTER}"]
    network_mode: service:net
    ipc: service:net
    volumes_from: [net]
volumes:
  data:
"""


@pytest.mark.parametrize("force", [False, True])
def test_removed_joined_pair_is_recreated_and_restored(start_stack: Callable[..., Stack], force: bool) -> None:
    stack = start_stack(JOINED, settle=1.5)
    stack.ckpt_ok("snapshot", "--name", "pair")
    at_snapshot = {service: stack.count(stack.containers(service)[0]) for service in ("net", "side")}
    run_docker("rm", "-f", *stack.containers("net"), *stack.containers("side"))
    args = ["restore", "pair", "--json", *(["--force"] if force else [])]
    restored = json.loads(stack.ckpt_ok(*args).stdout)
    assert [c["service"] for c in restored["containers"]] == ["net", "side"]  # the joined one after
    assert all(c["recreated"] and c["verified"] == "memory layout" for c in restored["containers"])
    side = stack.containers("side")[0]
    net = stack.containers("net")[0]
    modes = run_docker("inspect", side, "--format", "{{.HostConfig.NetworkMode}} {{.HostConfig.IpcMode}}").stdout.split()
    owner = run_docker("inspect", net, "--format", "{{.HostConfig.NetworkMode}}").stdout.strip()
    network = owner if owner.startswith("container:") else f"container:{net}"  # adopted: both join net's holder
    assert modes == [network, f"container:{net}"]
    assert run_docker("exec", side, "cat", "/etc/hostname").stdout.strip() == "netbox"  # the owner's
    assert run_docker("exec", side, "ls", "/data").returncode == 0  # volumes_from came back
    after = {service: stack.count(stack.containers(service)[0]) for service in ("net", "side")}
    assert all(after[c] >= at_snapshot[c] > 5 for c in at_snapshot), (at_snapshot, after)


@pytest.mark.skipif(engine_under_test() != "26", reason="a stack not adopted: Docker 28+ restores only adopted "
                    "ones; test_adopt_recreates_what_joins_a_holder_recreated_alone is the adopted case")
def test_a_join_to_a_recreated_container_is_named_not_dumped(start_stack: Callable[..., Stack]) -> None:
    """`up -d --force-recreate net` recreates net alone: side keeps the removed net's namespace, which no
    running container owns. ps says so and snapshot refuses with the remedy, before anything is frozen
    (issue 21, item 5)."""
    stack = start_stack(JOINED.replace("    ipc: service:net\n", ""), settle=0.5, adopt=False)
    stack.compose("up", "-d", "--force-recreate", "--no-deps", "net")
    rows = {row["service"]: row for row in json.loads(stack.ckpt_ok("ps", "--json").stdout)["containers"]}
    assert rows["side"]["network"] == "stale join" and not rows["side"]["snapshot"]
    refused = stack.ckpt("snapshot", "--name", "stale")
    assert refused.returncode == 6, refused.stderr
    assert "no longer exists" in refused.stderr and "docker compose up -d --force-recreate side" in refused.stderr
    assert stack.snapshots() == []
    stack.compose("up", "-d", "--force-recreate", "side")  # the remedy
    stack.ckpt_ok("snapshot", "--name", "joined")


@pytest.mark.skipif(engine_under_test() != "26", reason="a stack not adopted: Docker 28+ restores only adopted "
                    "ones; test_adopt_recreates_what_joins_a_holder_recreated_alone is the adopted case")
def test_restore_recreates_a_container_joined_to_one_since_replaced(start_stack: Callable[..., Stack]) -> None:
    """After `up -d --force-recreate net`, side still joins the removed net: restore recreates side joined to
    the net it restores into, instead of failing to start it (issue 21, item 5)."""
    stack = start_stack(JOINED.replace("    ipc: service:net\n", ""), settle=1.5, adopt=False)
    stack.ckpt_ok("snapshot", "--name", "pair")
    at_snapshot = stack.count(stack.containers("side")[0])
    stack.compose("up", "-d", "--force-recreate", "--no-deps", "net")
    stack.compose("stop", "-t", "0")
    stale_side = stack.containers("side")[0]
    restored = json.loads(stack.ckpt_ok("restore", "pair", "--json").stdout)
    by_service = {c["service"]: c for c in restored["containers"]}
    assert not by_service["net"]["recreated"] and by_service["side"]["recreated"]
    assert all(c["verified"] == "memory layout" for c in restored["containers"])
    side, net = stack.containers("side")[0], stack.containers("net")[0]
    assert side != stale_side
    mode = run_docker("inspect", side, "--format", "{{.HostConfig.NetworkMode}}").stdout.strip()
    assert mode in (f"container:{net}", f"container:{stack.project}-net-1")
    assert stack.count(side) >= at_snapshot > 5


def test_adopt_recreates_what_joins_a_holder_recreated_alone(start_stack: Callable[..., Stack]) -> None:
    """In an adopted stack, `up -d --force-recreate api-net` recreates the holder alone: api and worker keep
    the removed holder's namespace. ps names that (not `adopted`/`shared`), and `adopt` is what puts it right,
    not `nothing to change` (issue 21, item 5; on every engine: adopt works on Docker 26 too)."""
    stack = start_stack("services:\n" + counter_services("api", "worker") + "    network_mode: service:api\n",
                        settle=0.5, adopt=False)
    stack.ckpt_ok("adopt", "--yes", "-t", "0")
    stack.compose("up", "-d", "--force-recreate", "--no-deps", "api-net")
    rows = {row["service"]: row for row in json.loads(stack.ckpt_ok("ps", "--json").stdout)["containers"]}
    assert [rows[s]["network"] for s in ("api", "worker")] == ["stale join", "stale join"], rows
    assert "needs adopt" not in stack.ckpt_ok("ps").stdout  # the warning under the table says what to do

    planned = json.loads(stack.ckpt_ok("adopt", "--dry-run", "--json").stdout)
    assert sorted(planned["recreated"]) == [f"{stack.project}-api-1", f"{stack.project}-worker-1"], planned
    stack.ckpt_ok("adopt", "--yes", "-t", "0")

    rows = {row["service"]: row for row in json.loads(stack.ckpt_ok("ps", "--json").stdout)["containers"]}
    assert [(rows[s]["network"], rows[s]["snapshot"]) for s in ("api", "worker")] == [("adopted", True),
                                                                                      ("shared", True)], rows
    stack.ckpt_ok("snapshot", "--name", "joined")
