"""Bad compose input through the real CLI: exit 3, a message naming the file (and line), no traceback, no store.

Stored cases live in tests/unit/bad_compose/ (see its README); cases that are not small text files are
generated here. Every command runs in-process through `compose_ckpt.cli.main.run`. `ls` never contacts the
engine; `ps` would, after loading the compose files, so it gets an engine address that does not exist:
a case that wrongly loads shows up as exit 5, and no test can reach the real Docker engine.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from compose_ckpt.cli.main import run
from compose_ckpt.compose import ProjectOptions, load_project
from compose_ckpt.compose.yaml_reader import MAX_DEPTH, MAX_VALUES
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.errors import ExitCode, UsageError
from tests.fakes import UntouchableEngine
from tests.unit.timebox import time_limit

CORPUS = Path(__file__).parent / "bad_compose"
NO_ENGINE = ("-H", "unix:///nonexistent/compose-ckpt-tests.sock")
COMMANDS = [("ls",), ("ps",)]


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> Outcome:
    code = run([*NO_ENGINE, *args])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output
    assert "internal error" not in output, output  # an exception that is not a CkptError escaped
    return Outcome(code, output)


@pytest.fixture(autouse=True)
def compose_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No COMPOSE_* or DOCKER_HOST from the caller's shell, so each case reads exactly its file."""
    for name in list(os.environ):
        if name.startswith(("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "COMPOSE_PATH_SEPARATOR",
                            "CORPUS_")) or name == "DOCKER_HOST":
            monkeypatch.delenv(name)


# --- the stored corpus -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredCase:
    path: Path
    expect: str
    line: int | None
    names_file: bool


def stored_cases() -> list[StoredCase]:
    cases = []
    for path in sorted(CORPUS.glob("*.yaml")):
        header = {}
        for text in path.read_text().splitlines():
            if not text.startswith("# "):
                break
            key, _, value = text[2:].partition(": ")
            header[key] = value
        assert "expect" in header, f"{path.name} has no '# expect:' line"
        cases.append(StoredCase(path, header["expect"], int(header["line"]) if "line" in header else None,
                                "whole project" not in header))
    return cases


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("case", stored_cases(), ids=lambda case: case.path.stem)
def test_stored_bad_compose_file(capsys: pytest.CaptureFixture[str], isolated_store: Path,
                                 case: StoredCase, command: tuple[str, ...]) -> None:
    outcome = cli(capsys, "-f", str(case.path), *command)

    assert outcome.code == ExitCode.CONFIG, outcome.output
    assert case.expect in outcome.output
    if case.names_file:
        assert f"{case.path}:" in outcome.output
    if case.line is not None:
        assert f"{case.path}:{case.line}: " in outcome.output
    assert not isolated_store.exists()


def test_the_python_tag_case_ran_nothing() -> None:
    """python_tag.yaml asks YAML to call os.system; a safe loader refuses the tag instead."""
    assert not Path("/tmp/pwned").exists()


# --- generated cases ---------------------------------------------------------------------------------------

Build = Callable[[Path], Path]  # writes the case under a folder, returns the compose file to pass with -f


def written(data: bytes) -> Build:
    def build(folder: Path) -> Path:
        path = folder / "compose.yaml"
        path.write_bytes(data)
        return path
    return build


def a_directory(folder: Path) -> Path:
    (folder / "compose.yaml").mkdir()
    return folder / "compose.yaml"


def nested(depth: int) -> bytes:
    return ("x-deep: " + "[" * depth + "]" * depth + "\nservices:\n  web:\n    image: a\n").encode()


def alias_bomb(levels: int) -> bytes:
    """"Billion laughs": each anchor is a list of nine aliases of the previous one, 9**levels values in all."""
    lines = ['x-l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"x-l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return ("\n".join(lines) + f"\nservices:\n  web:\n    image: a\n    x-bomb: *l{levels - 1}\n").encode()


def dependency_chain(length: int) -> bytes:
    services = "".join(f"  s{i}: {{image: a, depends_on: [s{i + 1}]}}\n" for i in range(length))
    return f"services:\n{services}  s{length}: {{image: a}}\n".encode()


GENERATED: dict[str, tuple[Build, str, int | None]] = {
    "empty": (written(b""), "empty compose file", None),
    "only-comments-and-blanks": (written(b"# nothing here\n\n   \n"), "empty compose file", None),
    "directory": (a_directory, "is a directory, not a file", None),
    "binary-not-utf8": (written(random.Random(1).randbytes(4096) + b"\xff\xfe"), "not UTF-8 text", None),
    "nul-byte": (written(b"services:\n  web:\n    image: a\x00b\n"), "unacceptable character #x0000", None),
    "escape-sequence": (written(b"services:\n  web:\n    image: \x1b[2Jx\n"), "unacceptable character #x001b", None),
    "nested-past-the-limit": (written(nested(MAX_DEPTH + 5)), f"nested more than {MAX_DEPTH} levels deep", None),
    "nested-past-the-parser": (written(nested(5000)), f"nested more than {MAX_DEPTH} levels deep", None),
    "alias-bomb": (written(alias_bomb(9)), f"holds more than {MAX_VALUES} values", None),
    "interpolation-nested-600-deep": (written(b"services:\n  web:\n    image: " + b"${A:-" * 600 + b"}" * 600 + b"\n"),
                                      "interpolation nested too deeply", None),
    "huge-with-error-on-last-line": (written(b"".join(b"# %070d\n" % i for i in range(40_000))
                                             + b"services:\n  web:\n    image: a: b\n"), "mapping values are not allowed", 40_003),
}


@pytest.mark.parametrize(("build", "expect", "line"), GENERATED.values(), ids=GENERATED.keys())
def test_generated_bad_compose_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_store: Path,
                                    build: Build, expect: str, line: int | None) -> None:
    path = build(tmp_path)
    started = time.monotonic()
    with time_limit(20):
        outcome = cli(capsys, "-f", str(path), "ls")

    assert outcome.code == ExitCode.CONFIG, outcome.output
    assert expect in outcome.output and f"{path}:" in outcome.output
    if line is not None:
        assert f"{path}:{line}: " in outcome.output
    assert time.monotonic() - started < 10
    assert not isolated_store.exists()


def test_a_long_dependency_chain_is_refused_cleanly_by_the_builtin_loader(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-house loader follows depends_on recursively; past Python's recursion limit that must still be a
    clean error. (docker compose accepts such a chain, so where it resolves the project, it loads.)"""
    monkeypatch.setenv("COMPOSE_CKPT_COMPOSE", "builtin")
    path = written(dependency_chain(1500))(tmp_path)
    outcome = cli(capsys, "-f", str(path), "ls")
    assert outcome.code == ExitCode.CONFIG and "chains too long to follow" in outcome.output


def test_a_huge_file_that_is_valid_still_loads(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    big = "x" * (4 * 1024**2)
    path = written(f"services:\n  web:\n    image: a\n    labels:\n      big: {big}\n".encode())(tmp_path)
    with time_limit(20):
        outcome = cli(capsys, "-f", str(path), "ls", "--json")
    assert outcome.code == ExitCode.OK and outcome.output.strip() == "[]"


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_store: Path) -> None:
    outcome = cli(capsys, "-f", str(tmp_path / "nope.yaml"), "ps")
    assert outcome.code == ExitCode.CONFIG and f"{tmp_path / 'nope.yaml'}: file not found" in outcome.output
    assert not isolated_store.exists()


def test_missing_env_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = written(b"services:\n  web:\n    image: a\n")(tmp_path)
    outcome = cli(capsys, "-f", str(path), "--env-file", str(tmp_path / "none.env"), "ls")
    assert outcome.code == ExitCode.CONFIG and f"{tmp_path / 'none.env'}: file not found" in outcome.output


def test_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = written(b"services:\n  web:\n    image: a\n")(tmp_path)
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)  # root reads any file whatever its mode: simulated
    outcome = cli(capsys, "-f", str(path), "ps")
    assert outcome.code == ExitCode.CONFIG and f"{path}: permission denied" in outcome.output


def test_a_required_variable_set_but_empty(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORPUS_WEB_IMAGE", "")  # ":?" treats empty as missing
    case = next(c for c in stored_cases() if c.path.stem == "required_variable")
    outcome = cli(capsys, "-f", str(case.path), "ls")
    assert outcome.code == ExitCode.CONFIG and case.expect in outcome.output


# --- unknown services ----------------------------------------------------------------------------------------
# At the CLI, `snapshot SERVICE...` connects to the engine before it checks the names, so with no engine
# it says 5 (unreachable) first. The check itself needs no engine: it is Project.select, tested here.


@pytest.mark.parametrize(("requested", "listed_hint"), [
    (["nosuch"], None), (["web", "../web"], None), (["web\x00"], None), (["debug"], "--profile"),
])
def test_unknown_service_names(tmp_path: Path, requested: list[str], listed_hint: str | None) -> None:
    path = written(b"services:\n  web: {image: a}\n  debug: {image: a, profiles: [dbg]}\n")(tmp_path)
    project = Project(load_project(ProjectOptions(files=(str(path),), environ={}, cwd=tmp_path)), UntouchableEngine())
    with pytest.raises(UsageError) as caught:
        project.select(requested)
    assert "no such service in project" in caught.value.message and "(services: web)" in caught.value.message
    assert caught.value.exit_code == ExitCode.USAGE
    assert (listed_hint in (caught.value.hint or "")) if listed_hint else caught.value.hint is None
