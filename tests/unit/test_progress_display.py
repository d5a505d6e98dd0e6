"""The progress displays (cli/progress.py) fed reports as the domain sends them, on a clock the test moves."""

from __future__ import annotations

from compose_ckpt.cli.progress import PlainProgress, bytes_text
from compose_ckpt.domain.stack.parallel import ProgressEvent, event_of

MiB = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain() -> tuple[PlainProgress, list[str], Clock]:
    lines: list[str] = []
    clock = Clock()
    return PlainProgress(lines.append, clock), lines, clock


def test_a_phase_is_a_string_or_an_event_and_prints_as_its_phase() -> None:
    assert event_of("pausing") == ProgressEvent("pausing")
    assert event_of(ProgressEvent("dumping", 5, 10)) == ProgressEvent("dumping", 5, 10)
    assert str(ProgressEvent("dumping", 5)) == "dumping"


def test_bytes_text_gives_what_moved_out_of_what_and_the_rate() -> None:
    assert bytes_text(512 * MiB, None, 2.0) == "512.0 MiB, 256.0 MiB/s"
    assert bytes_text(512 * MiB, 1024 * MiB, 0.5) == "512.0 MiB of 1.0 GiB, 1.0 GiB/s"
    assert bytes_text(0, None, 0.0) == "0 B"


def test_plain_lines_say_each_phase_once_and_bytes_at_most_once_a_second() -> None:
    progress, lines, clock = plain()
    progress("web-1", "pausing")
    progress("web-1", "dumping")
    for step in range(1, 9):  # 8 reports over 2 seconds
        clock.now += 0.25
        progress("web-1", ProgressEvent("dumping", step * 5 * MiB))
    progress("web-1", "resuming")
    assert lines == [
        "[dim]  0.00s[/] web-1: pausing",
        "[dim]  0.00s[/] web-1: dumping",
        "[dim]  1.00s[/] web-1: dumping 20.0 MiB, 20.0 MiB/s",
        "[dim]  2.00s[/] web-1: dumping 40.0 MiB, 20.0 MiB/s",
        "[dim]  2.00s[/] web-1: resuming",
    ]


def test_plain_prints_the_last_count_of_a_phase_when_it_ends_or_the_command_does() -> None:
    progress, lines, clock = plain()
    progress("web-1", "copying layer")
    clock.now += 0.5
    progress("web-1", ProgressEvent("copying layer", 3 * MiB, 4 * MiB))  # too soon after the phase began
    clock.now += 0.1
    progress("db-1", ProgressEvent("copying layer", 4 * MiB, 4 * MiB))  # all of it: printed at once
    progress("web-1", "saving")  # web-1's last count, before its next phase
    progress("db-1", ProgressEvent("uploading", 1 * MiB))
    progress.close(ok=True)
    assert lines[1:] == [
        "[dim]  0.60s[/] db-1: copying layer",
        "[dim]  0.60s[/] db-1: copying layer 4.0 MiB of 4.0 MiB",
        "[dim]  0.60s[/] web-1: copying layer 3.0 MiB of 4.0 MiB, 6.0 MiB/s",
        "[dim]  0.60s[/] web-1: saving",
        "[dim]  0.60s[/] db-1: uploading",
        "[dim]  0.60s[/] db-1: uploading 1.0 MiB",
    ]


def test_plain_escapes_names_and_phases_that_look_like_markup() -> None:
    progress, lines, _ = plain()
    progress("[red]x", "mounts restored private: [bold]/data")
    assert lines == ["[dim]  0.00s[/] \\[red]x: mounts restored private: \\[bold]/data"]


def test_an_estimated_total_is_shown_as_one() -> None:
    """A dump's total is the memory its container holds (the engine's estimate): `of ~`, and passing it is no end."""
    assert bytes_text(512 * MiB, 1024 * MiB, 0.5, estimated=True) == "512.0 MiB of ~1.0 GiB, 1.0 GiB/s"
    progress, lines, clock = plain()
    progress("web-1", "dumping")
    clock.now += 1.0
    progress("web-1", ProgressEvent("dumping", 3 * MiB, 2 * MiB, estimated=True))
    assert lines[-1] == "[dim]  1.00s[/] web-1: dumping 3.0 MiB of ~2.0 MiB, 3.0 MiB/s"
