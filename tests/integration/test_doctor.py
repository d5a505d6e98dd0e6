"""`compose-ckpt doctor` against the real engine, and against one that is not there."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from compose_ckpt.const import RUNC_CRIU_CONFIG
from compose_ckpt.engine import Engine, procfs
from tests.integration.stack import Stack

pytestmark = pytest.mark.engine


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compose_ckpt", *args], capture_output=True, text=True, timeout=120)


def test_doctor_json_passes_on_the_provisioned_engine(engine: Engine) -> None:
    done = doctor("doctor", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert report["ok"] is True
    assert checks["experimental"]["status"] == "ok"
    assert checks["criu"]["status"] == "ok" and "criu 4." in checks["criu"]["detail"]
    assert checks["criu-check"]["detail"] == "Looks good."
    assert {check["status"] for check in report["checks"]} <= {"ok", "warn", "fail"}


def test_doctor_says_whether_the_kernel_tracks_dirty_memory_as_criu_does(engine: Engine) -> None:
    """The truth is CRIU's own answer (this machine's kernel has no soft-dirty bits: pre-copy cannot work)."""
    criu = subprocess.run(["criu", "check", "--feature", "mem_dirty_track"], capture_output=True, text=True, check=False)
    checks = {check["name"]: check for check in json.loads(doctor("doctor", "--json").stdout)["checks"]}
    tracking = checks["memory-tracking"]
    if criu.returncode == 0:
        assert tracking["status"] == "ok" and tracking["detail"].startswith("on:")
    else:
        assert "Dirty tracking is OFF" in criu.stdout + criu.stderr
        assert tracking["status"] == "warn" and "pre-copy cannot work here" in tracking["detail"]


def test_doctor_fails_clearly_when_the_daemon_is_unreachable(tmp_path: Path) -> None:
    done = doctor("-H", f"unix://{tmp_path}/missing.sock", "doctor", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    daemon = report["checks"][0]
    assert daemon["name"] == "daemon" and daemon["status"] == "fail"
    assert "Cannot reach the Docker daemon" in daemon["detail"]
    assert "make engine" in daemon["remedy"]


def test_doctor_names_the_labelled_services_whose_restores_lack_their_criu_options(
        start_stack: Callable[..., Stack], tmp_path: Path) -> None:
    """The label reaches dumps only; a restore gets what the container's org.criu.config file (else runc.conf) holds."""
    own = tmp_path / "criu.conf"
    own.write_text("file-locks\n")
    stack = start_stack(f"""
services:
  bare:
    image: local/busybox:latest
    command: ["sleep", "3600"]
    labels:
      compose-ckpt.criu-options: "file-locks"
  annotated:
    image: local/busybox:latest
    command: ["sleep", "3600"]
    labels:
      compose-ckpt.criu-options: "file-locks"
    annotations:
      org.criu.config: {own}
""", settle=0)
    checks = {check["name"]: check for check in json.loads(stack.ckpt("doctor", "--json").stdout)["checks"]}
    detail = checks["restore options"]["detail"]
    if "file-locks" in procfs.criu_config_options(RUNC_CRIU_CONFIG):
        assert checks["restore options"]["status"] == "ok"  # this host gives every container's restores the option
    else:
        assert checks["restore options"]["status"] == "warn"
        assert f"{stack.project}-bare-1 lacks file-locks (not in {RUNC_CRIU_CONFIG})" in detail
    assert f"{stack.project}-annotated-1 lacks" not in detail
