"""A stack holding TCP connections comes back after `docker compose down`: restore recreates its network with
the recorded subnet and its containers at their recorded addresses (a connection comes back only at the
address it was made from; Docker gives a recreated network the next free subnet). When that cannot be, it
is refused before anything is killed, naming what is in the way.

tcp-established comes from the per-container annotation `org.criu.config` (see test_connected_services.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.stack import BUSYBOX, COUNTER, DEBIAN, Stack
from tests.integration.test_connected_services import APP
from tests.polling import wait_for

pytestmark = pytest.mark.engine

# Holds its connection without a request while /tmp/hold exists. A request in flight when the database is
# frozen (containers are paused in parallel, not at one instant) is answered right after the database's
# restore, to an app not restored yet; its network comes up before CRIU has its socket back, and it answers
# the retransmitted reply with a reset (Docker restores one container at a time; nothing locks a restoring
# container's network). That race is not what these tests are about: the apps hold still for the snapshot.
HOLDING_APP = APP.replace("while True:\\n", "while True:\\n    if os.path.exists('/tmp/hold'):\\n"
                                              "        time.sleep(0.1)\\n        continue\\n")


def replicated_compose(criu_config: Path) -> str:
    """A database and two replicas of an app, each replica with its own connection to it."""
    annotations = f"    annotations:\n      org.criu.config: {criu_config}\n"
    return f"""services:
  db:
    image: {DEBIAN}
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
{annotations}  app:
    image: {DEBIAN}
    command: ["python3", "-c", "{HOLDING_APP}"]
    depends_on: [db]
    deploy:
      replicas: 2
{annotations}"""


def client_ids(stack: Stack) -> set[str]:
    """Redis's ids of the apps' connections: a reconnect gets a new one."""
    clients = stack.docker("exec", stack.containers("db")[0], "redis-cli", "client", "list").stdout
    return {m.group(1) for line in clients.splitlines() if "cmd=incr" in line and (m := re.search(r"\bid=(\d+)", line))}


def counts(stack: Stack) -> dict[str, int]:
    """Each app replica's own count."""
    read = "cat /tmp/count 2>/dev/null || echo 0"  # 0 until its first reply
    return {c: int(stack.docker("exec", c, "sh", "-c", read).stdout.split()[0]) for c in stack.containers("app")}


def hold(stack: Stack, holding: bool) -> dict[str, int]:
    """Make every app replica hold still (or go on); returns their counts once they do."""
    for container in stack.containers("app"):
        stack.docker("exec", container, "touch" if holding else "rm", "/tmp/hold")
    last = [counts(stack)]

    def settled() -> dict[str, int] | None:
        now, before = counts(stack), last[0]
        last[0] = now
        return now if (now == before if holding else all(now[c] > before[c] for c in now)) else None

    return wait_for(f"the apps to {'hold still' if holding else 'go on'}", settled, timeout=20, interval=0.2)


def subnet(stack: Stack) -> str:
    network = json.loads(stack.docker("network", "inspect", f"{stack.project}_default").stdout)[0]
    return str(network["IPAM"]["Config"][0]["Subnet"])


@pytest.fixture
def connected_stack(start_stack: Callable[..., Stack], tmp_path: Path) -> Stack:
    config = tmp_path / "criu-tcp.conf"
    config.write_text("tcp-established\n")
    stack = start_stack(replicated_compose(config), settle=3.0)
    assert len(client_ids(stack)) == 2
    return stack


def test_a_stack_with_connections_comes_back_after_compose_down(connected_stack: Stack) -> None:
    stack = connected_stack
    clients, recorded_subnet, before = client_ids(stack), subnet(stack), hold(stack, True)
    stack.ckpt_ok("snapshot", "--stop", "--name", "before-down")
    stack.compose("down", "-t", "0")  # containers and network gone

    restored = stack.ckpt("restore", "before-down")

    assert restored.returncode == 0, restored.stderr + "".join(
        stack.docker("logs", c, check=False).stderr for c in stack.containers("app"))
    assert subnet(stack) == recorded_subnet
    assert set(stack.states().values()) == {"running"}, stack.states()
    assert sorted(counts(stack).values()) == sorted(before.values())  # recreated: new ids, the counts of before
    hold(stack, False)  # each replica's next requests go over its connection of before
    assert client_ids(stack) == clients  # both replicas' connections carried on: no reconnect


def test_what_keeps_the_recorded_addresses_away_is_named_before_anything_is_killed(connected_stack: Stack) -> None:
    stack = connected_stack
    recorded_subnet = subnet(stack)
    stack.ckpt_ok("snapshot", "--stop", "--name", "s")
    stack.compose("down", "-t", "0")
    blocker = f"{stack.project}-blocker"  # holds the recorded subnet (Docker 28 would give it to `up` again)
    stack.docker("network", "create", "--subnet", recorded_subnet, "--label", f"com.docker.compose.project={blocker}",
                 blocker)
    try:
        stack.compose("up", "-d")  # a fresh stack, on a network with another subnet
        assert subnet(stack) != recorded_subnet

        refused = stack.ckpt("restore", "s", "--force")

        assert refused.returncode == 6, refused.stderr
        assert f"network {stack.project}_default has other subnets" in refused.stderr, refused.stderr
        assert "hold TCP connections" in refused.stderr and "Nothing was changed" in refused.stderr
        assert set(stack.states().values()) == {"running"}  # nothing killed

        stack.compose("down", "-t", "0")
        refused = stack.ckpt("restore", "s")
        assert refused.returncode == 6, refused.stderr
        assert (f"cannot recreate network {stack.project}_default with its recorded subnet {recorded_subnet}: "
                f"network {blocker} (compose project {blocker}) holds it") in refused.stderr.replace("\n", " ")
        assert stack.states() == {}  # nothing created
    finally:
        stack.docker("network", "rm", blocker)


def test_networks_given_their_subnets_and_fixed_addresses_come_back_as_compose_made_them(
        start_stack: Callable[..., Stack], project_name: str) -> None:
    """No TCP connection here: the networks' own config (a subnet, ip range and gateway; a subnet and gateway, which
    Docker shows as it shows those it picks: the compose files say it was given) and the service's `ipv4_address`
    are what `docker compose up` made, and a restore after `down` makes them the same."""
    octet = 100 + sum(project_name.encode()) % 150  # a subnet of this test's own
    stack = start_stack(f"""services:
  counter:
    image: {BUSYBOX}
    command: ["sh", "-c", "{COUNTER}"]
    networks:
      front:
        ipv4_address: 10.213.{octet}.10
      back: {{}}
networks:
  front:
    ipam:
      config:
        - subnet: 10.213.{octet}.0/24
          ip_range: 10.213.{octet}.8/29
          gateway: 10.213.{octet}.1
  back:
    ipam:
      config:
        - subnet: 10.214.{octet}.0/24
          gateway: 10.214.{octet}.1
""")
    front, back = f"{stack.project}_front", f"{stack.project}_back"
    recorded = [json.loads(stack.docker("network", "inspect", name).stdout)[0]["IPAM"]["Config"] for name in (front, back)]
    (before,) = stack.wait_counting("counter").values()
    stack.ckpt_ok("snapshot", "--stop", "--name", "s")
    stack.compose("down", "-t", "0")

    restored = stack.ckpt("restore", "s")

    assert restored.returncode == 0, restored.stderr
    assert [json.loads(stack.docker("network", "inspect", name).stdout)[0]["IPAM"]["Config"]
            for name in (front, back)] == recorded
    (counter,) = stack.containers("counter")
    owner = json.loads(stack.docker("inspect", counter).stdout)[0]  # on Docker 28 (adopted), its holder's
    mode = owner["HostConfig"]["NetworkMode"]
    if mode.startswith("container:"):
        owner = json.loads(stack.docker("inspect", mode.removeprefix("container:")).stdout)[0]
    assert owner["NetworkSettings"]["Networks"][front]["IPAddress"] == f"10.213.{octet}.10"
    assert stack.count(counter) >= before  # recreated (a new id), counting on from its state


def test_connections_carry_on_through_network_holders_made_anew(start_stack: Callable[..., Stack], tmp_path: Path) -> None:
    """An adopted stack (the form Docker 28 restores) after `docker compose down`: its network holders are made
    anew before the restore, namespaces that would answer a peer restored first with resets (the namespace a
    container was dumped in keeps CRIU's lock on its connections; a new one has none). restore keeps them from
    answering until every container is back, and the connections carry on."""
    config = tmp_path / "criu-tcp.conf"
    config.write_text("tcp-established\n")
    stack = start_stack(replicated_compose(config), settle=0, adopt=False)
    stack.ckpt_ok("adopt", "--yes", "-t", "0")
    wait_for("both replicas connected", lambda: len(client_ids(stack)) == 2)
    clients = client_ids(stack)
    before = hold(stack, True)
    stack.ckpt_ok("snapshot", "--stop", "--name", "s")
    stack.compose("down", "-t", "0")

    restored = stack.ckpt("restore", "s")

    assert restored.returncode == 0, restored.stderr
    assert "were lost" not in restored.stderr, restored.stderr
    assert sorted(counts(stack).values()) == sorted(before.values())
    hold(stack, False)  # each replica's next requests go over its connection of before
    assert client_ids(stack) == clients
