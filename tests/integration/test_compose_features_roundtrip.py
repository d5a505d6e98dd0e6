"""A project using include, extends from another file, !reset/!override and an implicit dependency
(``network_mode: service:vpn``), resolved, snapshotted and restored against the real engine.

The implicit dependency is what makes the order matter: `app` lives in `vpn`'s network namespace, so
after `snapshot --stop` Docker cannot start `app` before `vpn` runs again; restore must bring `vpn`
back first, although no depends_on says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.stack import BUSYBOX, COUNTER, Stack, run_docker

pytestmark = pytest.mark.engine

MAIN = """
include:
  - path: network/vpn.yaml
    env_file: network/vpn.env
services:
  app:
    extends: {file: common/base.yaml, service: counter}
    network_mode: "service:vpn"
  worker:
    extends: {file: common/base.yaml, service: counter}
    depends_on: [app]
    labels: {role: worker, tier: back}
"""
OVERRIDE = """
services:
  worker:
    depends_on: !reset []
    labels: !override {role: override}
"""
FILES = {
    "compose.override.yaml": OVERRIDE,
    "common/base.yaml": f"""
services:
  counter:
    image: {BUSYBOX}
    command: ["sh", "-c", "{COUNTER}"]
    env_file: counter.env
""",
    "common/counter.env": "MODE=counting\n",
    "network/vpn.yaml": """
services:
  vpn:
    image: "${VPN_IMAGE}"
    command: ["sh", "-c", "while true; do sleep 3600; done"]
""",
    "network/vpn.env": f"VPN_IMAGE={BUSYBOX}\n",
}


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack(MAIN, settle=1.5, files=FILES)


def config(stack: Stack, *env: str) -> dict[str, Any]:
    done = subprocess.run(["env", *env, sys.executable, "-m", "compose_ckpt", "-p", stack.project, "config", "--json"],
                          cwd=stack.folder, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_config_shows_the_project_as_compose_resolves_it(stack: Stack) -> None:
    expected = {
        "name": stack.project,
        "services": {
            "app": {"image": BUSYBOX, "container_name": None, "network_mode": "service:vpn", "replicas": 1,
                    "depends_on": {"vpn": {"condition": "service_started", "required": True}}},
            "vpn": {"image": BUSYBOX, "container_name": None, "network_mode": None, "replicas": 1, "depends_on": {}},
            "worker": {"image": BUSYBOX, "container_name": None, "network_mode": None, "replicas": 1, "depends_on": {}},
        },
    }
    assert config(stack) == expected
    assert config(stack, "COMPOSE_CKPT_COMPOSE=builtin") == expected  # a host without compose sees the same
    labels = json.loads(stack.compose("config", "--format", "json").stdout)["services"]["worker"]["labels"]
    assert labels == {"role": "override"}  # !override replaced the mapping, compose agrees


def test_snapshot_stop_and_restore_bring_vpn_back_before_the_app_in_its_namespace(stack: Stack) -> None:
    app, vpn = stack.containers("app")[0], stack.containers("vpn")[0]
    assert run_docker("inspect", "-f", "{{.HostConfig.NetworkMode}}", app).stdout.strip() == f"container:{vpn}"
    before = stack.counts_of("app", "worker")
    stack.ckpt_ok("snapshot", "--stop", "--name", "features")
    assert set(stack.states().values()) == {"exited"}

    restored = json.loads(stack.ckpt_ok("restore", "--json").stdout)
    order = [c["service"] for c in restored["containers"]]
    assert order.index("vpn") < order.index("app")
    assert {c["verified"] for c in restored["containers"]} == {"memory layout"}
    assert set(stack.states().values()) == {"running"}
    assert all(value > 5 for value in before.values()), before
    stack.assert_counting_on(before)
    # Still in the holder's namespace: the same network interfaces as vpn.
    assert run_docker("exec", app, "cat", "/sys/class/net/eth0/address").stdout == \
        run_docker("exec", vpn, "cat", "/sys/class/net/eth0/address").stdout


def test_restore_after_down_recreates_vpn_first_and_the_app_joined_to_the_new_one(stack: Stack) -> None:
    def counts() -> dict[str, int]:  # by service: the containers are new after the restore
        return {service: stack.count(stack.containers(service)[0]) for service in ("app", "worker")}

    before = counts()
    stack.ckpt_ok("snapshot", "--stop", "--name", "gone")
    stack.compose("down", "-t", "0")
    assert stack.states() == {}

    restored = json.loads(stack.ckpt_ok("restore", "--json").stdout)
    assert all(c["recreated"] for c in restored["containers"])
    app, vpn = stack.containers("app")[0], stack.containers("vpn")[0]
    assert run_docker("inspect", "-f", "{{.HostConfig.NetworkMode}}", app).stdout.strip() == f"container:{vpn}"
    assert all(value > 5 for value in before.values()), before
    stack.assert_counting_on({stack.containers(service)[0]: value for service, value in before.items()})
