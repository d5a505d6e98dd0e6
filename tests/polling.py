"""Waiting in tests: poll for a condition with a bounded timeout, never sleep a fixed time and hope.

The one place in the test package that sleeps. `wait_for` returns as soon as its check holds, so a slow
machine only makes a test slower, not wrong; `holds_for` watches a condition that must stay true for a
while (something must NOT happen, e.g. Docker must not restart a stopped container), which no poll can
prove sooner; `let_run` is for the few tests whose point is that time passes (state piling up).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL = 0.1


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0, interval: float = INTERVAL) -> T:
    """The first truthy result of `check` (None meaning not yet); AssertionError naming `what` after `timeout`
    seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_for_change(what: str, read: Callable[[], T], old: T, timeout: float = 30.0) -> T:
    """The first value `read` returns that differs from `old`."""
    changed: list[T] = []

    def check() -> bool:
        changed[:] = [read()]
        return changed[0] != old

    wait_for(what, check, timeout)
    return changed[0]


def holds_for(what: str, check: Callable[[], bool], seconds: float) -> None:
    """`check` stays true for `seconds`, looked at every INTERVAL (a breach is caught when it happens, not
    only if it is still there at the end)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"no longer true: {what}"
        time.sleep(INTERVAL)
    assert check(), f"no longer true: {what}"


def let_run(seconds: float) -> None:
    """Time passing on purpose: a stack piling up state, a daemon given the chance to act."""
    time.sleep(seconds)
