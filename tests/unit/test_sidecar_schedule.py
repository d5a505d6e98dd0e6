from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from compose_ckpt.errors import UsageError
from compose_ckpt.sidecar.schedule import CronSchedule, EverySchedule, parse_schedule, zone_from_env

UTC = UTC
NOW = datetime(2026, 3, 1, 10, 17, 42, tzinfo=UTC)


@pytest.mark.parametrize("text, interval", [("@every 90s", 90), ("@every 1h30m", 5400), ("@EVERY   3s", 3)])
def test_every_is_a_plain_interval(text: str, interval: int) -> None:
    schedule = parse_schedule(text, UTC)
    assert isinstance(schedule, EverySchedule)
    assert schedule.next_after(NOW) == NOW + timedelta(seconds=interval)


@pytest.mark.parametrize("text, expected", [
    ("*/15 * * * *", datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
    ("30 2 * * *", datetime(2026, 3, 2, 2, 30, tzinfo=UTC)),
    ("*/10 * * * * *", datetime(2026, 3, 1, 10, 17, 50, tzinfo=UTC)),  # seconds first
    ("0 0 3 * * *", datetime(2026, 3, 2, 3, 0, tzinfo=UTC)),  # 03:00:00 daily, seconds first
    ("@hourly", datetime(2026, 3, 1, 11, 0, tzinfo=UTC)),
    ("@daily", datetime(2026, 3, 2, 0, 0, tzinfo=UTC)),
    ("@weekly", datetime(2026, 3, 8, 0, 0, tzinfo=UTC)),  # 2026-03-01 is a Sunday
])
def test_cron_next_run(text: str, expected: datetime) -> None:
    schedule = parse_schedule(text, UTC)
    assert isinstance(schedule, CronSchedule)
    assert schedule.next_after(NOW) == expected


def test_cron_is_evaluated_in_the_zone() -> None:
    berlin = parse_schedule("0 3 * * *", ZoneInfo("Europe/Berlin"))
    assert berlin.next_after(NOW) == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 03:00 CET


@pytest.mark.parametrize("text", ["", "every day", "@every", "@every 0s", "@every 1.5h", "@every 5",
                                  "* * *", "61 * * * *", "* * * * * * *", "@fortnightly", "@reboot"])
def test_bad_schedules_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="invalid schedule"):
        parse_schedule(text, UTC)


def test_zone_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TZ", raising=False)
    assert zone_from_env() == ZoneInfo("UTC")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    assert zone_from_env() == ZoneInfo("Europe/Berlin")
    monkeypatch.setenv("TZ", "Mars/Olympus")
    with pytest.raises(UsageError, match="unknown time zone"):
        zone_from_env()
