"""When each job runs next. Pure: the caller passes the time in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from compose_ckpt.sidecar.policy import StackJob


@dataclass
class Entry:
    job: StackJob
    next_run: datetime


class Timetable:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}

    def update(self, jobs: Iterable[StackJob], now: datetime) -> tuple[list[Entry], list[tuple[str, str]]]:
        """Make the timetable hold exactly `jobs`. A job whose schedule is unchanged keeps its next run.

        Returns the entries whose job changed (new, or other settings or services) and the keys removed."""
        wanted = {job.key: job for job in jobs}
        removed = [key for key in self.entries if key not in wanted]
        for key in removed:
            del self.entries[key]
        changed: list[Entry] = []
        for key, job in wanted.items():
            entry = self.entries.get(key)
            if entry is not None and entry.job == job:
                continue
            assert job.schedule is not None, "only scheduled jobs go into the timetable"
            if entry is None or entry.job.schedule != job.schedule:
                entry = self.entries[key] = Entry(job, job.schedule.next_after(now))
            else:
                entry.job = job
            changed.append(entry)
        return changed, removed

    def due(self, now: datetime) -> list[StackJob]:
        """The jobs whose time has come; each is moved on to its next run after `now`.

        The next run counts from the run that was due, not from `now`: a late tick would otherwise
        push every later `@every` run back by its delay, and the delays would add up for good."""
        ready = [entry for entry in self.entries.values() if entry.next_run <= now]
        for entry in ready:
            assert entry.job.schedule is not None
            following = entry.next_run
            while following <= now:  # ticks missed while late are skipped, not run in a burst
                following = entry.job.schedule.next_after(following)
            entry.next_run = following
        return [entry.job for entry in ready]

    def next_wakeup(self) -> datetime | None:
        return min((entry.next_run for entry in self.entries.values()), default=None)
