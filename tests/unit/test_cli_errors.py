"""Bad input at the CLI edge: a clear message, the documented exit code, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from compose_ckpt.cli.main import run
from compose_ckpt.errors import ExitCode


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output
    return code, output


def test_malformed_yaml_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  web:\n    image: x\n   bad: [\n")
    code, output = cli(capsys, "-f", str(compose), "ps")
    assert code == ExitCode.CONFIG
    assert f"{compose}:" in output


def test_missing_compose_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = cli(capsys, "-f", str(tmp_path / "nope.yaml"), "snapshot")
    assert code == ExitCode.CONFIG and "nope.yaml" in output


def test_missing_required_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  web:\n    image: ${IMAGE:?set IMAGE to the web image}\n")
    code, output = cli(capsys, "-f", str(compose), "snapshot")
    assert code == ExitCode.CONFIG and "set IMAGE to the web image" in output


def test_depends_on_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n")
    code, output = cli(capsys, "-f", str(compose), "ps")
    assert code == ExitCode.CONFIG and "cycle" in output


@pytest.mark.parametrize("name", ["../escape", "a/b", ".x", "bad name", "x" * 101])
def test_bad_snapshot_names(capsys: pytest.CaptureFixture[str], isolated_store: Path, name: str) -> None:
    code, output = cli(capsys, "-p", "proj", "inspect", name)
    assert code == ExitCode.USAGE and "invalid snapshot name" in output
    assert not isolated_store.exists()


def test_bad_project_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = cli(capsys, "-p", "../x", "ls")
    assert code == ExitCode.USAGE and "invalid project name" in output


def test_unknown_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = cli(capsys, "-p", "proj", "inspect", "nosuch")
    assert code == ExitCode.NOT_FOUND and "no snapshot 'nosuch'" in output


@pytest.mark.parametrize("args", [["prune", "--keep", "1", "--older-than", "soon"], ["prune", "--keep", "-1"],
                                  ["snapshot", "--parallel", "0"], ["nosuch-command"]])
def test_bad_flags_are_usage_errors(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, _ = cli(capsys, "-p", "proj", *args)
    assert code == ExitCode.USAGE


def test_an_unreachable_daemon_is_an_engine_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  web:\n    image: x\n")
    code, output = cli(capsys, "-H", f"unix://{tmp_path}/none.sock", "-f", str(compose), "snapshot")
    assert code == ExitCode.ENGINE and "Cannot reach the Docker daemon" in output and "hint:" in output


@pytest.mark.parametrize("args", [["snapshot", "--name", "../x"], ["restore", "../x"], ["import", "a.ckpt", "--name", "a/b"],
                                  ["migrate", "../x", "--to", "tcp://127.0.0.1:1"]])
def test_bad_names_are_refused_before_the_engine_is_contacted(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                             args: list[str]) -> None:
    code, output = cli(capsys, "-H", f"unix://{tmp_path}/none.sock", "-p", "proj", *args)
    assert code == ExitCode.USAGE and "invalid snapshot name" in output


def _a_bug(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a bug")


def test_an_unexpected_error_is_one_line_and_verbose_shows_its_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("compose_ckpt.domain.store.store.SnapshotStore.list", _a_bug)
    assert run(["-p", "proj", "ls"]) == ExitCode.FAILURE
    assert "internal error: RuntimeError: a bug (run with --verbose for the traceback)" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="a bug"):  # --verbose, as parsed: the traceback is the user's
        run(["--verbose", "-p", "proj", "ls"])
    assert run(["-p", "proj", "ls"]) == ExitCode.FAILURE  # and it holds for that run only

