"""`adopt` and `unadopt` ask before compose recreates containers (their memory is lost): on a terminal the
answer decides, without one they refuse unless --yes, naming the containers either way."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer

from compose_ckpt.cli.stack import _confirm_adoption
from compose_ckpt.domain.stack.adopt import AdoptionPlan
from compose_ckpt.errors import Declined, ExitCode, UsageError

PLAN = AdoptionPlan(project="p", folder=Path("/nowhere"), user_files=(), files=(), holders={"web": "web-net"},
                    in_the_way=(), services=("web",))


def test_without_a_terminal_it_refuses_and_says_how_to_confirm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    with pytest.raises(UsageError) as refused:
        _confirm_adoption(PLAN, undo=False)
    assert refused.value.exit_code == ExitCode.USAGE and "Go on?" not in refused.value.message
    assert refused.value.message.startswith("adopt changes the files above") and "cold start" in refused.value.message
    assert refused.value.hint is not None and "--yes" in refused.value.hint


@pytest.mark.parametrize("answer", [True, False])
def test_on_a_terminal_the_answer_decides(monkeypatch: pytest.MonkeyPatch, answer: bool) -> None:
    asked: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)

    def confirm(question: str, **options: object) -> bool:
        asked.append(question)
        return answer
    monkeypatch.setattr(typer, "confirm", confirm)
    if answer:
        _confirm_adoption(PLAN, undo=True)
    else:
        with pytest.raises(Declined):
            _confirm_adoption(PLAN, undo=True)
    [question] = asked
    assert question.startswith("unadopt changes the files above") and question.endswith("none. Go on?")
