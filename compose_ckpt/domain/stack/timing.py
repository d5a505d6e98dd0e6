"""Where a command's time goes: wall-clock seconds per phase, kept in the order the phases ran.

Recorded in the manifest (`phases`) and printed by `--json`, so a slow
snapshot or restore can be explained without a profiler.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Phases:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        """Time spent in `name`; a phase entered twice (resolve: in the CLI, then in the domain) adds up."""
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 3)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - began)

    @classmethod
    def since_process_start(cls) -> Phases:
        """Phases that begin with `startup`: interpreter, imports and argument parsing up to now."""
        phases = cls()
        age = process_age()
        if age is not None:
            phases.add("startup", age)
        return phases


def process_age() -> float | None:
    """Seconds since this process was started (Linux, 10 ms resolution); None where /proc cannot tell."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22: start time in clock ticks after boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None
