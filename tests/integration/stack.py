"""A compose stack for integration tests: unique project, helpers to read its state, removed afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from compose_ckpt.const import LABEL_HOLDER_FOR
from tests.polling import wait_for, wait_for_change

BUSYBOX = "local/busybox:latest"
DEBIAN = "local/debian:bookworm"

# COMPOSE_CKPT_TEST_ENGINE=28 runs the tests against `make engine-28` (Docker 28.5.2, in its own network
# namespace) instead of the default Docker 26: the conftest points DOCKER_HOST at it.
ENGINE_28_HOST = "unix:///run/docker28/docker.sock"
ENGINE_28_NETNS = "ckpt-docker28"
REPO = Path(__file__).resolve().parents[2]


def engine_under_test() -> str:
    return os.environ.get("COMPOSE_CKPT_TEST_ENGINE", "26")


def engine_script() -> Path:
    """The script that provisions, starts and stops the engine under test."""
    return REPO / "scripts" / ("engine-28" if engine_under_test() == "28" else "engine")


def daemon_socket() -> str:
    """The host path of the unix socket of the engine DOCKER_HOST selects (for bind mounts)."""
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")


def http_get(port: int, path: str = "/") -> str:
    """GET a published port of the engine under test (engine-28 publishes inside its network namespace)."""
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=10).read().decode())"
    command = [sys.executable, "-c", fetch]
    if os.environ.get("DOCKER_HOST") == ENGINE_28_HOST:
        command = ["ip", "netns", "exec", ENGINE_28_NETNS, *command]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=30).stdout


def established_to(container: str, port: int) -> bool:
    """Whether the container holds an established TCP connection to `port` (from its /proc/net/tcp)."""
    rows = [line.split() for line in run_docker("exec", container, "cat", "/proc/net/tcp").stdout.splitlines()[1:]]
    return any(row[3] == "01" and row[2].endswith(f":{port:04X}") for row in rows)


def run_docker(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], cwd=cwd, check=check, capture_output=True, text=True)


COUNTER = "i=0; while true; do i=$$((i+1)); echo $$i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done"

def counter_services(*names: str, image: str = BUSYBOX) -> str:
    """Compose service blocks (indented, no `services:` line) of in-memory counters named `names`."""
    return "".join(f"  {name}:\n    image: {image}\n    command: [\"sh\", \"-c\", \"{COUNTER}\"]\n" for name in names)


# kv, counter (2 replicas) and web with a named volume and a tmpfs; state only in memory.
# kv has a restart policy, so `snapshot --stop` must stop it in a way Docker does not undo.
THREE_SERVICES = f"""
services:
  kv:
    image: local/debian:bookworm
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    restart: unless-stopped
  counter:
    image: local/busybox:latest
    command: ["sh", "-c", "{COUNTER}"]
    depends_on: [kv]
    deploy:
      replicas: 2
  web:
    image: local/busybox:latest
    command: ["sh", "-c", "httpd -p 8080 -h /srv; {COUNTER}"]
    depends_on:
      counter:
        condition: service_started
    volumes: [site:/srv]
    tmpfs: [/scratch]
volumes:
  site:
"""


@dataclass
class Stack:
    folder: Path
    project: str
    host: str | None = None  # another Docker daemon (its -H URL); None: the default engine

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_docker(*(("-H", self.host) if self.host else ()), *args, cwd=self.folder, check=check)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.docker("compose", "-p", self.project, *args, check=check)

    def ckpt(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in the stack's folder, as a user would."""
        host = ("-H", self.host) if self.host else ()
        return subprocess.run([sys.executable, "-m", "compose_ckpt", *host, "-p", self.project, *args],
                              cwd=self.folder, capture_output=True, text=True, timeout=300)

    def ckpt_ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.ckpt(*args)
        assert done.returncode == 0, f"compose-ckpt {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done

    def _service_containers(self, *filters: str, output: str) -> list[str]:
        """The project's service containers, as `output`: not one-offs (`run` containers), and not the network
        holders `adopt` adds as services of their own on Docker 28 (labelled compose-ckpt.holder-for)."""
        labels = [f"label=com.docker.compose.project={self.project}", "label=com.docker.compose.oneoff=False", *filters]
        lines = self.docker("ps", "-a", *(arg for label in labels for arg in ("--filter", label)),
                            "--no-trunc", "--format", f'{{{{.Label "{LABEL_HOLDER_FOR}"}}}}|{output}').stdout.splitlines()
        return [line.split("|", 1)[1] for line in lines if not line.split("|", 1)[0]]

    def containers(self, service: str) -> list[str]:
        return sorted(self._service_containers(f"label=com.docker.compose.service={service}", output="{{.ID}}"))

    def states(self) -> dict[str, str]:
        return dict(line.split(" ", 1) for line in self._service_containers(output="{{.Names}} {{.State}}"))

    def count(self, container: str) -> int:
        return int(self.docker("exec", container, "cat", "/tmp/count").stdout)

    def wait_counting(self, *services: str, at_least: int = 3) -> dict[str, int]:
        """Wait until every counter of `services` has counted to `at_least` (a fresh stack getting going);
        their counts then."""
        def counted() -> dict[str, int] | None:
            found = {c: self.docker("exec", c, "cat", "/tmp/count", check=False).stdout.strip()
                     for service in services for c in self.containers(service)}
            if found and all(value.isdigit() and int(value) >= at_least for value in found.values()):
                return {c: int(value) for c, value in found.items()}
            return None

        return wait_for(f"the counters of {', '.join(services)} to reach {at_least}", counted)

    def counts_of(self, *services: str) -> dict[str, int]:
        return {c: self.count(c) for service in services for c in self.containers(service)}

    def counts(self) -> dict[str, int]:
        return self.counts_of("counter", "web")

    def assert_counting_on(self, before: dict[str, int], read: Callable[[str], int] | None = None) -> None:
        """Every counter in `before` (container -> its count then) goes on from its state: it reads at least
        that now, and its next value is larger still. A fresh start counts from 1 again, so it fails one of
        the two, however long the wait."""
        read = read or self.count
        for container, then in before.items():
            now = read(container)
            assert now >= then, f"{container} started over: {then} before, {now} now"
            later = wait_for_change(f"{container}'s counter to move", partial(read, container), now)
            assert later > now, f"{container} started over: {now}, then {later}"

    def redis(self, *args: str) -> str:
        return self.docker("exec", self.containers("kv")[0], "redis-cli", *args).stdout.strip()

    def restart_policies(self) -> dict[str, str]:
        """Container name -> its restart policy as `docker run --restart` takes it (`on-failure:3`, `no`)."""
        names = self._service_containers(output="{{.ID}}")
        if not names:
            return {}
        template = "{{.Name}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}"
        policies = {}
        for line in self.docker("inspect", "--format", template, *names).stdout.splitlines():
            name, policy, count = line.split(" ")
            policies[name.lstrip("/")] = f"{policy or 'no'}:{count}" if count != "0" else (policy or "no")
        return policies

    def containerd_copies(self) -> list[Path]:
        """The copies of checkpoints of this stack's containers that containerd made for restores and left in
        its temp folder (/tmp here): `ctrd-checkpoint*` folders whose cgroup.img names one of the containers."""
        ids = [cid.encode() for cid in self._service_containers(output="{{.ID}}")]
        found = []
        for folder in Path("/tmp").glob("ctrd-checkpoint*"):
            try:
                cgroups = (folder / "cgroup.img").read_bytes()
            except OSError:  # not a restore's copy, or removed meanwhile
                continue
            if any(cid in cgroups for cid in ids):
                found.append(folder)
        return found

    def snapshots(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(self.ckpt_ok("ls", "--json").stdout)
        return listed

    def down(self) -> None:
        # First what compose does not own: holders an import or a restore recreated from a record without
        # compose labels, which would also keep the project's networks alive.
        named = self.docker("ps", "-aq", "--filter", f"name=^/{self.project}-", check=False).stdout.split()
        if named:
            self.docker("rm", "-f", *named, check=False)
        self.compose("down", "--volumes", "--remove-orphans", "-t", "0", check=False)
