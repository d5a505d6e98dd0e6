"""When a job runs: cron expressions (through croniter) or a plain `@every` interval."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from compose_ckpt.domain.store.retention import parse_duration
from compose_ckpt.errors import UsageError

CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
EVERY = "@every"
MAX_EVERY = timedelta(days=3650)  # longer would overflow datetime when the next run is computed


@dataclass(frozen=True)
class EverySchedule:
    """`@every 90s`: one run per interval, counted from when the job was (re)scheduled."""

    text: str
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.interval


@dataclass(frozen=True)
class CronSchedule:
    """5-field cron, 6 fields with seconds first, or a macro such as @hourly; evaluated in `zone`."""

    text: str
    zone: tzinfo

    def next_after(self, moment: datetime) -> datetime:
        seconds_first = len(self.text.split()) == 6
        following: datetime = croniter(self.text, moment.astimezone(self.zone),
                                       second_at_beginning=seconds_first).get_next(datetime)
        return following.astimezone(UTC)


Schedule = EverySchedule | CronSchedule


def parse_schedule(text: str, zone: tzinfo) -> Schedule:
    cleaned = " ".join(text.split())
    fields = cleaned.split()
    if fields and fields[0].lower() == EVERY:
        interval = _interval(" ".join(fields[1:]))
        if interval is None or interval.total_seconds() < 1 or interval > MAX_EVERY:
            raise _invalid(text)
        return EverySchedule(cleaned, interval)
    if cleaned.lower() in CRON_MACROS:
        return CronSchedule(cleaned.lower(), zone)
    if len(fields) not in (5, 6) or not croniter.is_valid(cleaned, second_at_beginning=len(fields) == 6):
        raise _invalid(text)
    schedule = CronSchedule(cleaned, zone)
    try:  # `0 0 31 2 *` is valid cron but never comes: the daemon could not schedule it
        schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))
    except ValueError:  # croniter's errors are ValueErrors
        raise _invalid(text) from None
    return schedule


def _interval(text: str) -> timedelta | None:
    try:
        return parse_duration(text)
    except UsageError:
        return None


def _invalid(text: str) -> UsageError:
    return UsageError(f"invalid schedule {text!r}",
                      hint="Use 5-field cron (`*/15 * * * *`), 6 fields with seconds first, "
                           "@hourly/@daily/@weekly, or `@every 90s` / `@every 1h30m` (at least 1s, at most 3650d).")


def zone_from_env() -> tzinfo:
    """The zone cron schedules are evaluated in: $TZ, default UTC."""
    name = os.environ.get("TZ") or "UTC"
    try:
        return ZoneInfo(name.lstrip(":"))
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone TZ={name!r}", hint="Use an IANA name such as Europe/Berlin, or UTC.") from None
