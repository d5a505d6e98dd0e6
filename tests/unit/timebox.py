"""A time limit for one block of a test, so a hang is reported as a failure instead of stalling the run.

The limit is on this process's CPU time (ITIMER_PROF), not the wall clock: the blocks it guards are pure
computation (parsers fed hostile input), where a blow-up burns CPU, and a machine loaded by other work
makes them slower by the clock without making them wrong."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class TookTooLong(BaseException):
    """Raised in the main thread when a time_limit expires; a BaseException, so `except Exception` cannot swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail the block with TookTooLong once it has used `seconds` of CPU (checked between Python bytecodes)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TookTooLong(f"still running after {seconds} CPU seconds")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
