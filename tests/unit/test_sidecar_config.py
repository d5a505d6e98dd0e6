import io
from datetime import UTC, timedelta
from pathlib import Path

import pytest

from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import UsageError
from compose_ckpt.sidecar.config import SidecarConfig, load_config
from compose_ckpt.sidecar.daemon import Sidecar
from compose_ckpt.sidecar.log import Log
from compose_ckpt.sidecar.policy import BootMode, JobSettings
from compose_ckpt.sidecar.schedule import parse_schedule

UTC = UTC
REPO = Path(__file__).resolve().parents[2]

FULL = """
label-prefix: acme.ckpt
concurrency: 3
resync-interval: 30s
run-timeout: 5m
http-port: 8080
trigger-dir: /srv/trigger
defaults:
  keep: 10
  max-age: 7d
  leave-running: false
  restore-on-boot: yes
jobs:
  nightly:
    schedule: "0 3 * * *"
    keep: 7
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    return path


def test_a_missing_or_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.yaml", UTC) == SidecarConfig()
    assert load_config(write(tmp_path, ""), UTC) == SidecarConfig()


def test_every_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), UTC)
    assert (config.label_prefix, config.concurrency, config.http_port) == ("acme.ckpt", 3, 8080)
    assert (config.resync_interval, config.run_timeout) == (timedelta(seconds=30), timedelta(minutes=5))
    assert config.trigger_dir == Path("/srv/trigger")
    assert config.defaults == JobSettings(keep=10, max_age=timedelta(days=7), leave_running=False)
    assert config.restore_on_boot is BootMode.SAFE
    assert config.jobs == {"nightly": JobSettings(schedule=parse_schedule("0 3 * * *", UTC), keep=7)}
    assert config.rules(UTC).prefix == "acme.ckpt"


@pytest.mark.parametrize("text, message", [
    ("label-prefx: x", "unknown key 'label-prefx'"),
    ("concurrency: 0", "concurrency: expected a whole number"),
    ("http-port: 70000", "http-port: expected a whole number"),
    ("resync-interval: soon", "resync-interval: invalid duration"),
    ("label-prefix: 'bad prefix'", "invalid label prefix"),
    ("defaults: {keep: many}", "defaults.keep: invalid keep"),
    ("defaults: {restore-on-boot: perhaps}", "defaults.restore-on-boot: invalid restore-on-boot"),
    ("defaults: {colour: red}", "defaults: unknown key 'colour'"),
    ("jobs: {nightly: {keep: 3}}", "jobs.nightly: a job needs a schedule"),
    ("jobs: {nightly: {schedule: 'at three'}}", "jobs.nightly.schedule: invalid schedule"),
    ("jobs: {'night.ly': {schedule: '@daily'}}", "invalid job name"),
    ("jobs: [a, b]", "jobs must be a mapping"),
    ("- just\n- a list", "the config must be a mapping"),
    ("key: [unclosed", "invalid YAML"),
])
def test_invalid_configs_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        load_config(path, UTC)
    assert str(path) in caught.value.message and message in caught.value.message


def sidecar(tmp_path: Path, text: str) -> tuple[Sidecar, io.StringIO]:
    out = io.StringIO()
    config = write(tmp_path, text)
    return Sidecar(config, UTC, SnapshotStore(tmp_path / "store"), Log(out)), out


def test_reload_applies_a_valid_change_and_keeps_the_old_config_on_an_invalid_one(tmp_path: Path) -> None:
    daemon, out = sidecar(tmp_path, f"http-port: 0\ntrigger-dir: {tmp_path / 't'}\nconcurrency: 1\n")
    write(tmp_path, f"http-port: 0\ntrigger-dir: {tmp_path / 't'}\nconcurrency: 4\n")
    daemon._reload()
    assert daemon.config.concurrency == 4
    assert "event=config_reloaded" in out.getvalue()

    write(tmp_path, "concurrency: lots\n")
    daemon._reload()
    assert daemon.config.concurrency == 4
    last = out.getvalue().splitlines()[-1]
    assert "level=error event=config_invalid" in last and "concurrency" in last


def test_an_invalid_config_at_start_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        sidecar(tmp_path, "concurrency: -1\n")


def test_the_shipped_example_config_is_valid() -> None:
    assert load_config(REPO / "examples/sidecar/config/sidecar.yaml", UTC) != SidecarConfig()
