"""Phase timings: what `--json` and the manifest report per phase (no timed assertions: only shapes)."""

from __future__ import annotations

from compose_ckpt.domain.stack.timing import Phases, process_age


def test_phases_keep_their_order_and_a_phase_entered_twice_adds_up() -> None:
    phases = Phases()
    phases.add("resolve", 0.25)
    phases.add("dump", 1.0)
    phases.add("resolve", 0.5)
    with phases.timed("save"):
        pass
    assert list(phases.seconds) == ["resolve", "dump", "save"]
    assert phases.seconds["resolve"] == 0.75 and phases.seconds["save"] >= 0


def test_a_command_starts_with_the_time_since_its_process_started() -> None:
    age = process_age()
    assert age is not None and age >= 0  # Linux: read from /proc/self/stat
    assert list(Phases.since_process_start().seconds) == ["startup"]
