"""The progress display of a real snapshot: on a terminal (a pseudo-terminal read through a terminal emulator)
one line per container updated in place; piped, plain lines that carry the same facts."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

import pytest

from tests.integration.stack import Stack, counter_services
from tests.terminal import Terminal

pytestmark = pytest.mark.engine

SERVICES = ("a", "b", "c", "d", "e")


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack("services:\n" + counter_services(*SERVICES), settle=0.5)


def container_names(stack: Stack) -> list[str]:
    return sorted(name for name in stack.states())


def snapshot_on_a_terminal(stack: Stack, columns: int, *args: str) -> list[str]:
    """The screen a 5-container snapshot leaves on a terminal `columns` wide: at most 7 lines all along."""
    terminal = Terminal([sys.executable, "-m", "compose_ckpt", "-p", stack.project, "snapshot", *args],
                        cwd=stack.folder, columns=columns, rows=40)
    assert terminal.finish() == 0, "\n".join(terminal.lines())
    screen = terminal.lines()
    names = container_names(stack)
    assert len(names) == 5
    assert len(screen) <= 7, "\n".join(screen)
    assert max(len(shown) for shown in terminal.screens) <= 7  # updated in place, never scrolled
    assert re.match(r"\[\+\] snapshot done: 5 items +\d+\.\ds$", screen[0]), screen[0]
    rows = {name: next(line for line in screen if f" {name} " in line) for name in names}
    for row in rows.values():
        assert row.startswith(" ✔ ") and re.search(r"done \((dumping|copying layer) [\d.]+ (B|KiB|MiB)", row), row
    return screen


def test_a_five_container_snapshot_fits_in_seven_lines_on_a_terminal_and_piped_says_the_same(stack: Stack) -> None:
    screen = snapshot_on_a_terminal(stack, 100, "--name", "shown")
    assert re.fullmatch(rf"snapshot shown of {stack.project}: 5 containers, [\d.]+ (KiB|MiB), frozen [\d.]+s, "
                        "left running", screen[-1]), screen[-1]
    # 80 columns and a default name (the time): the result line keeps to one line, the least needed facts left out
    screen = snapshot_on_a_terminal(stack, 80)
    assert re.fullmatch(rf"snapshot \d{{8}}-\d{{6}}-\d{{3}} of {stack.project}: 5 containers, frozen [\d.]+s",
                        screen[-1]), screen[-1]

    names = container_names(stack)
    piped = stack.ckpt_ok("snapshot", "--name", "piped")  # stderr is a pipe: plain lines by default
    lines = [line.split(None, 1)[1] for line in piped.stderr.splitlines()]
    moved = r"[\d.]+ (B|KiB|MiB), [\d.]+ (B|KiB|MiB)/s"
    for name in names:
        phases = [line.removeprefix(f"{name}: ") for line in lines if line.startswith(f"{name}: ")]
        started = [phase for phase in phases if not re.search(moved, phase)]  # each phase's first line
        assert started[:3] == ["pausing", "dumping", "copying layer"] and "resuming" in started, phases
        # A phase that moved bytes says how many, with the rate, before the next phase starts.
        layer = phases.index("copying layer")
        assert re.fullmatch(f"copying layer {moved}", phases[layer + 1]), phases

    quiet = stack.ckpt_ok("--progress", "quiet", "snapshot", "--name", "quiet")
    assert quiet.stderr == ""
