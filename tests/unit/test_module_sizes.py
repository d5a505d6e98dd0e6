"""Modules a newcomer reads whole: none over 500 lines, the engine adapter (the facade over the resource
modules of engine/) under 400."""

from __future__ import annotations

from pathlib import Path

import compose_ckpt

PACKAGE = Path(compose_ckpt.__file__).parent
MAX_LINES = 500
MAX_ADAPTER_LINES = 400


def lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_over_500_lines() -> None:
    long = {str(path.relative_to(PACKAGE)): lines(path) for path in PACKAGE.rglob("*.py") if lines(path) > MAX_LINES}
    assert long == {}


def test_the_engine_adapter_is_under_400_lines() -> None:
    assert lines(PACKAGE / "engine" / "adapter.py") < MAX_ADAPTER_LINES
