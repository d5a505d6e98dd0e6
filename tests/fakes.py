"""Engine fakes for unit tests: what the domain asks the engine, without Docker.

`UntouchableEngine` fails the test at the first thing asked of it. A fake that answers some calls
subclasses it and defines those methods; wherever it is passed as the domain's `EnginePort`, mypy
checks every method it defines against the port (the contract the real adapter is checked against),
and a call it does not define still fails the test here.
"""

from __future__ import annotations

from typing import NoReturn


class UntouchableEngine:
    """An engine that must not be used at all (input refused before the engine is asked anything).

    `used` names what was asked anyway, for code that would swallow the AssertionError."""

    def __init__(self) -> None:
        self.used: list[str] = []

    def __getattr__(self, name: str) -> NoReturn:
        # Only called for what the class does not define; `used` is set in __init__, so subclasses call it.
        self.used.append(name)
        raise AssertionError(f"engine.{name} used, though this test expects the engine untouched")
