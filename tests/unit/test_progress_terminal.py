"""The live progress display as a terminal shows it: a child process draws it on a real pseudo-terminal, step
by step as the test tells it, and pyte turns what it wrote into the screen a user sees."""

from __future__ import annotations

import json
import re
import sys

from tests.terminal import Terminal

MiB = 1024 * 1024

# Reads one step per line on stdin: a report (at a time on the display's clock), or the end of the work.
DRIVER = """
import json, sys
from rich.console import Console
from compose_ckpt.cli.progress import LiveProgress
from compose_ckpt.domain.stack.parallel import ProgressEvent

now = [0.0]
display = LiveProgress(Console(stderr=True), "snapshot", clock=lambda: now[0], auto_refresh=False)
for line in sys.stdin:
    step = json.loads(line)
    now[0] = step["now"]
    if "ok" in step:
        display.close(step["ok"])
        break
    display(step["name"], ProgressEvent(step["phase"], step.get("done"), step.get("total")))
    display.refresh()
print("the command's result")
"""

NAMES = [f"ckpt-demo-{service}-1" for service in ("kv", "app", "counter", "web")] + ["ckpt-demo-counter-2"]


def report(terminal: Terminal, now: float, name: str, phase: str, done: int | None = None,
           total: int | None = None) -> None:
    terminal.send(json.dumps({"now": now, "name": name, "phase": phase, "done": done, "total": total}) + "\n")


def dumped_bytes(lines: list[str], name: str) -> tuple[float, float]:
    """The MiB dumped and MiB/s shown on `name`'s line."""
    line = next(line for line in lines if name in line)
    found = re.search(r"dumping ([\d.]+) MiB, ([\d.]+) MiB/s", line)
    assert found, line
    return float(found[1]), float(found[2])


def test_five_containers_stay_on_six_lines_updated_in_place_with_bytes_and_rate_rising() -> None:
    terminal = Terminal([sys.executable, "-c", DRIVER], columns=100, rows=30)
    for name in NAMES:
        report(terminal, 0.0, name, "pausing")
    terminal.wait_for(lambda lines: sum("pausing" in line for line in lines) == 5)
    for name in NAMES:
        report(terminal, 0.0, name, "dumping")
    seen = []
    for second in range(1, 4):  # a dump whose bytes and rate both grow
        report(terminal, float(second), NAMES[0], "dumping", done=second * second * 64 * MiB)
        shown = f"{second * second * 64}.0 MiB"
        terminal.wait_for(lambda lines: shown in "\n".join(lines))  # noqa: B023 - used before the loop moves on
        seen.append(dumped_bytes(terminal.lines(), NAMES[0]))
    assert seen == [(64.0, 64.0), (256.0, 128.0), (576.0, 192.0)]
    for name in NAMES:
        report(terminal, 4.0, name, "saving")
    terminal.send(json.dumps({"now": 4.5, "ok": True}) + "\n")
    assert terminal.finish(timeout=60) == 0

    final = terminal.lines()
    assert len(final) == 7, final  # the header as summary, one line per container, the command's result
    assert re.fullmatch(r"\[\+\] snapshot done: 5 items +4\.5s", final[0]), final[0]
    for name, line in zip(NAMES, final[1:6]):
        assert line.startswith(f" ✔ {name}") and line.endswith("4.5s"), line
    assert "done (dumping 576.0 MiB, 192.0 MiB/s)" in final[1]
    assert final[6] == "the command's result"
    # Updated in place all along: never more than the header and the five lines on the screen.
    assert max(len(screen) for screen in terminal.screens) <= 7


def test_on_a_narrow_terminal_each_line_keeps_its_name_and_time_and_cuts_the_phase() -> None:
    terminal = Terminal([sys.executable, "-c", DRIVER], columns=60, rows=20)
    long_name = "a-project-with-a-long-name-database-primary-1"
    report(terminal, 0.0, long_name, "restoring", done=300 * MiB, total=2048 * MiB)
    report(terminal, 0.5, "web-1", "skipped: nothing running to checkpoint")
    terminal.send(json.dumps({"now": 2.0, "ok": False}) + "\n")
    assert terminal.finish(timeout=60) == 0
    lines = terminal.lines()
    assert lines[0].startswith("✘ snapshot failed") and lines[0].endswith("2.0s")
    assert long_name in lines[1] and lines[1].endswith("2.0s") and "…" in lines[1]
    assert lines[2].startswith(" ! web-1") and "skip" in lines[2]
    assert len(lines) == 4  # each item on one line, however narrow
