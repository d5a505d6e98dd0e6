"""`doctor -H` checks the CRIU of the very daemon it addresses (found through its unix socket), not the
default one's; a dump on a daemon without CRIU on its PATH names the remedy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.second_engine import remove_daemon_folders, stop_daemon
from tests.integration.stack import BUSYBOX
from tests.polling import wait_for

pytestmark = pytest.mark.engine

WITHOUT_CRIU = "/usr/bin:/bin"  # /usr/local/sbin holds CRIU 4.2's wrapper, /usr/sbin Debian's 3.17


@dataclass
class BareDaemon:
    """A dockerd in a network namespace of its own, without a default bridge, on a PATH of our choice."""

    root: Path
    exec_root: Path
    unix: str
    process: subprocess.Popen[bytes]

    def docker(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["docker", "-H", self.unix, *args], capture_output=True, input=input)

    def stop(self) -> None:
        stop_daemon(self.process)
        remove_daemon_folders(self.root, self.exec_root)


def start_bare_daemon(search_path: str) -> BareDaemon:
    tag = uuid.uuid4().hex[:8]
    root, exec_root = Path(f"/var/lib/ckpt-bare-{tag}"), Path(f"/run/ckptb-{tag}")
    root.mkdir(parents=True)
    exec_root.mkdir(parents=True)
    (root / "daemon.json").write_text("{}")
    unix = f"unix://{exec_root}/docker.sock"
    log = open(root / "dockerd.log", "ab")
    # Its own network namespace: a dockerd with `--bridge none` deletes the host's docker0, which the
    # default engine's containers need.
    process = subprocess.Popen(
        ["unshare", "--net", "/usr/sbin/dockerd", "--experimental", "--config-file", str(root / "daemon.json"),
         "--data-root", str(root / "data"), "--exec-root", str(exec_root), "--pidfile", str(exec_root / "docker.pid"),
         "-H", unix, "--bridge", "none", "--iptables=false", "--ip-masq=false", "--userland-proxy=false"],
        stdout=log, stderr=log, env={**os.environ, "PATH": search_path}, start_new_session=True,
    )
    daemon = BareDaemon(root, exec_root, unix, process)
    try:
        return wait_for("the bare dockerd to answer", lambda: daemon if daemon.docker("info").returncode == 0 else None,
                        timeout=60)
    except AssertionError:
        pass
    tail = (root / "dockerd.log").read_text(errors="replace")[-1500:]
    daemon.stop()
    raise RuntimeError(f"the bare dockerd did not start:\n{tail}")


@pytest.fixture
def daemon() -> Iterator[BareDaemon]:
    started = start_bare_daemon(WITHOUT_CRIU)
    saved = subprocess.run(["docker", "save", BUSYBOX], check=True, capture_output=True).stdout
    assert started.docker("load", input=saved).returncode == 0
    yield started
    started.stop()


def ckpt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compose_ckpt", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_doctor_checks_the_criu_of_the_daemon_it_addresses(daemon: BareDaemon) -> None:
    done = ckpt("-H", daemon.unix, "doctor", "--json")
    report = json.loads(done.stdout)
    criu = next(check for check in report["checks"] if check["name"] == "criu")
    assert f"pid {daemon.process.pid}" in criu["detail"], criu
    assert criu["status"] == "fail" and "no criu on the PATH" in criu["detail"], criu
    assert "Install CRIU 4.2 or newer" in criu["remedy"]
    assert done.returncode == 1 and report["ok"] is False
    default = json.loads(ckpt("doctor", "--json").stdout)  # the default daemon still has CRIU 4.2
    assert next(c for c in default["checks"] if c["name"] == "criu")["status"] == "ok"


def test_a_dump_without_usable_criu_names_the_remedy(daemon: BareDaemon, tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(f"""
services:
  app:
    image: {BUSYBOX}
    network_mode: none
    command: ["sh", "-c", "while true; do sleep 1; done"]
""")
    project = f"ckptbare{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DOCKER_HOST": daemon.unix}
    subprocess.run(["docker", "compose", "-p", project, "up", "-d"], cwd=tmp_path, check=True, capture_output=True,
                   env=env)
    done = subprocess.run([sys.executable, "-m", "compose_ckpt", "-H", daemon.unix, "-p", project, "snapshot"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Install CRIU 4.2 or newer" in done.stderr, done.stderr
    assert "left running as before" in done.stderr
    inspect = json.loads(subprocess.run([sys.executable, "-m", "compose_ckpt", "-p", project, "ls", "--json"],
                                        cwd=tmp_path, capture_output=True, text=True).stdout)
    assert [s["status"] for s in inspect] == ["failed"]
