"""`compose-ckpt host install/uninstall` under a temporary root: the files, runc.conf kept, never the real /etc."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from compose_ckpt.cli.main import run
from compose_ckpt.domain.host.hostsetup import UNIT_NAME, installed_executable, with_tcp_established
from compose_ckpt.errors import UsageError

UNIT = Path("etc/systemd/system") / UNIT_NAME
WANTS = Path("etc/systemd/system/multi-user.target.wants") / UNIT_NAME
SCRIPT = Path("etc/init.d/compose-ckpt")
RUNC = Path("etc/criu/runc.conf")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_dry_run_prints_the_unit_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(capsys, "host", "install", "--project", "shop", "--project", "blog", "--init", "systemd",
                    "--tcp-established", "--dry-run", "--root", str(tmp_path))
    assert code == 0, out
    assert "After=docker.service" in out and "host shutdown --project shop --project blog" in out
    assert "+tcp-established" in out and "dry run: nothing written" in out
    assert list(tmp_path.iterdir()) == []


def test_install_writes_an_enabled_unit_that_systemd_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(capsys, "host", "install", "--project", "shop", "--init", "systemd", "--no-tcp-established",
                    "--root", str(tmp_path))
    assert code == 0, out
    unit = (tmp_path / UNIT).read_text()
    assert "Requires=docker.service" in unit and "RemainAfterExit=yes" in unit
    assert "ExecStop=" in unit and "host shutdown --project shop" in unit
    assert "ExecStart=-" in unit and "host boot --project shop" in unit
    assert os.readlink(tmp_path / WANTS) == f"/{UNIT}"
    assert (tmp_path / UNIT).stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / RUNC).exists()  # --no-tcp-established
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax was not verified")
    verified = subprocess.run(["systemd-analyze", "verify", str(tmp_path / UNIT)], capture_output=True, text=True)
    assert verified.returncode == 0 and "ExecStart" not in verified.stderr, verified.stderr


def test_script_hook_for_hosts_without_systemd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(capsys, "host", "install", "--project", "shop", "--root", str(tmp_path), "--no-tcp-established")
    assert code == 0, out  # no run/systemd/system under the root: the script kind
    script = tmp_path / SCRIPT
    assert script.stat().st_mode & 0o777 == 0o755
    text = script.read_text()
    assert "Required-Stop:     docker" in text and "host shutdown --project shop" in text
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    assert subprocess.run(["sh", str(script), "bogus"], capture_output=True).returncode == 3


def test_runc_conf_keeps_the_rest_of_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / RUNC
    conf.parent.mkdir(parents=True)
    conf.write_text("# mine\nmanage-cgroups-mode soft\nlog-file /tmp/x")  # no final newline
    os.chmod(conf, 0o640)
    code, out = cli(capsys, "host", "install", "--project", "shop", "--root", str(tmp_path), "--yes")
    assert code == 0, out
    assert "+tcp-established" in out and f"added tcp-established to {conf}" in out
    lines = conf.read_text().splitlines()
    assert lines[:3] == ["# mine", "manage-cgroups-mode soft", "log-file /tmp/x"] and lines[-1] == "tcp-established"
    assert conf.stat().st_mode & 0o777 == 0o640
    code, out = cli(capsys, "host", "install", "--project", "shop", "--root", str(tmp_path), "--yes")
    assert code == 0 and "already has tcp-established" in out
    assert conf.read_text().count("tcp-established\n") == 1


def test_without_a_terminal_runc_conf_is_not_changed_unasked(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, out = cli(capsys, "host", "install", "--project", "shop", "--root", str(tmp_path))
    assert code == 2 and "--tcp-established" in out
    assert not (tmp_path / RUNC).exists() and not (tmp_path / SCRIPT).exists()


def test_a_link_at_the_unit_path_is_replaced_not_followed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / UNIT).parent.mkdir(parents=True)
    (tmp_path / UNIT).symlink_to(victim)
    code, out = cli(capsys, "host", "install", "--project", "shop", "--init", "systemd", "--no-tcp-established",
                    "--root", str(tmp_path))
    assert code == 0, out
    assert victim.read_text() == "precious" and not (tmp_path / UNIT).is_symlink()


def test_uninstall_removes_what_install_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "host", "install", "--project", "shop", "--init", "systemd", "--no-tcp-established", "--root", str(tmp_path))
    code, out = cli(capsys, "host", "uninstall", "--dry-run", "--root", str(tmp_path))
    assert code == 0 and "would remove" in out and (tmp_path / UNIT).exists()
    code, out = cli(capsys, "host", "uninstall", "--root", str(tmp_path))
    assert code == 0 and not (tmp_path / UNIT).exists() and not (tmp_path / WANTS).is_symlink()
    assert "nothing installed" in cli(capsys, "host", "uninstall", "--root", str(tmp_path))[1]


@pytest.mark.parametrize("bad", [[], ["--project", "../etc"], ["--project", "a b"], ["--init", "upstart", "--project", "x"]])
def test_bad_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: list[str]) -> None:
    code, out = cli(capsys, "host", "install", "--root", str(tmp_path), "--no-tcp-established", *bad)
    assert code == 2, out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("current, changed", [
    ("", True), ("tcp-established\n", False), ("  tcp-established  \n", False), ("# tcp-established\n", True),
    ("tcp-established-not\n", True),
])
def test_with_tcp_established(current: str, changed: bool) -> None:
    result = with_tcp_established(current)
    assert (result is not None) is changed
    if result is not None:
        assert result.startswith(current) and result.endswith("tcp-established\n")


def test_the_hook_runs_the_command_beside_this_python_else_the_one_on_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv, elsewhere = tmp_path / "venv" / "bin", tmp_path / "elsewhere"
    for folder in (venv, elsewhere):
        folder.mkdir(parents=True)
        (folder / "compose-ckpt").write_text("#!/bin/sh\n")
        (folder / "compose-ckpt").chmod(0o755)
    monkeypatch.setenv("PATH", str(elsewhere))
    assert installed_executable(venv / "python") == venv / "compose-ckpt"
    assert installed_executable(tmp_path / "python") == (elsewhere / "compose-ckpt").resolve()
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    with pytest.raises(UsageError, match="cannot find the compose-ckpt command"):
        installed_executable(tmp_path / "python")
