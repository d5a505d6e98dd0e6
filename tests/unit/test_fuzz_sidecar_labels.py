"""Property tests of the sidecar's label values: any string parses or is a UsageError, quickly.

Labels come from any container on the host, so their values are untrusted text. Each parser either returns
a usable value or raises UsageError (the type its callers catch to report a Problem); `parse_container`
turns bad labels into Problems and never raises. Schedules are also asked for their next run, which is what
the daemon does with them. Bounded by the hypothesis profile in tests/conftest.py, and each call by a timer
(croniter is slow on some expressions).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from compose_ckpt.const import LABEL_PROJECT, LABEL_SERVICE
from compose_ckpt.domain.store.retention import parse_duration
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.errors import UsageError
from compose_ckpt.sidecar.policy import (
    CONTAINER_FIELDS,
    DEFAULT_PREFIX,
    JOB_FIELDS,
    LabelRules,
    Problem,
    parse_bool,
    parse_container,
    parse_keep,
)
from compose_ckpt.sidecar.schedule import Schedule, parse_schedule
from tests.unit.timebox import time_limit

NOW = datetime(2026, 3, 1, 10, 17, 42, tzinfo=UTC)
ZONES = [UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("Australia/Lord_Howe"), ZoneInfo("America/St_Johns")]

# Text shaped like what is parsed, so that many examples get past the first refusal.
numbers = st.one_of(st.integers(0, 100).map(str), st.integers(0, 10**25).map(str),
                    st.sampled_from(["9" * 5000, "\u0663", "\u00b2", "1.5", "-1", "", "0x1"]))
units = st.sampled_from([*"smhdwSMHDW", "y", "", " "])
durations = st.lists(st.tuples(numbers, units).map("".join), min_size=1, max_size=4).map("".join)
cron_number = st.one_of(st.integers(1, 12), st.integers(0, 70))  # mostly in range for every field
cron_atom = st.one_of(st.just("*"), st.just("*"), cron_number.map(str), cron_number.map(str),
                      st.sampled_from(["L", "W", "?", "H", "R", "MON", "jan", "5L", "15W", "1#2", "FRI-SUN", "\u0663"]))
cron_field = st.one_of(
    cron_atom,
    st.tuples(cron_atom, cron_number).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(cron_number, cron_number).map(lambda t: f"{t[0]}-{t[1]}"),
    st.lists(cron_atom, min_size=2, max_size=3).map(",".join),
)
cron_fields = st.sampled_from([5, 5, 6, 4, 7]).flatmap(lambda n: st.lists(cron_field, min_size=n, max_size=n)).map(" ".join)
schedules = st.one_of(
    cron_fields,
    st.text(max_size=60),
    st.sampled_from(["@every ", "@EVERY  ", "@hourly", "@daily", "@weekly", "@reboot", "@yearly "])
    .flatmap(lambda head: st.one_of(durations, cron_fields).map(lambda tail: head + tail)),
)


def parsed_or_refused(parse: Any, value: Any) -> Any:
    """parse(value), or None when it raised UsageError; any other exception, or a hang, fails the test."""
    with time_limit(5):
        try:
            return parse(value)
        except UsageError as error:
            assert error.message and error.exit_code == 2
            return None


@given(schedules, st.sampled_from(ZONES))
@example("0 0 31 2 *", UTC)  # valid cron that never comes
@example("@every 999999999d", UTC)  # past datetime's year 9999
@example("@every " + "9" * 5000 + "s", UTC)  # past int()'s digit limit
@example("30 2 * * *", ZoneInfo("Europe/Berlin"))  # in the hour skipped by daylight saving on some days
def test_any_schedule_parses_to_one_that_runs_or_is_refused(text: str, zone: Any) -> None:
    schedule: Schedule | None = parsed_or_refused(lambda t: parse_schedule(t, zone), text)
    if schedule is not None:
        with time_limit(5):
            following = schedule.next_after(NOW)
        assert following > NOW and following.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "@every 999999999d"])
def test_schedules_that_never_come_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="invalid schedule"):
        parse_schedule(text, UTC)


@given(st.one_of(durations, st.text(max_size=40)))
@example("9" * 5000 + "s")
@example("99999999999999999999w")
@example("\u00b2d")
def test_any_duration_parses_or_is_refused(text: str) -> None:
    value = parsed_or_refused(parse_duration, text)
    assert value is None or (isinstance(value, timedelta) and value >= timedelta(0))


untrusted_values = st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.none(),
                             st.sampled_from(["\u00b2", "\u0663", " 7 ", "+3", "0x10", "1e3", "1_000", "YES", "On"]))


@given(untrusted_values)
def test_any_keep_parses_to_a_positive_count_or_is_refused(value: object) -> None:
    keep = parsed_or_refused(parse_keep, value)
    assert keep is None or (type(keep) is int and keep >= 1 and str(keep) == str(value).strip().lstrip("0"))


@given(untrusted_values)
def test_any_boolean_parses_or_is_refused(value: object) -> None:
    result = parsed_or_refused(parse_bool, value)
    assert result is None or type(result) is bool


LABEL_KEYS = [f"{DEFAULT_PREFIX}.{field}" for field in (*JOB_FIELDS, *CONTAINER_FIELDS)]
LABEL_KEYS += [f"{DEFAULT_PREFIX}.{job}.{field}" for job in ("daily", "x" * 41, "bad job", "a.b") for field in JOB_FIELDS]
LABEL_KEYS += [f"{DEFAULT_PREFIX}.unknown", f"{DEFAULT_PREFIX}.", DEFAULT_PREFIX, LABEL_PROJECT, LABEL_SERVICE]
label_values = st.one_of(schedules, durations, st.sampled_from(["true", "false", "1", "0", "yes", "no", "7", "", "\u00b2"]))


@given(st.dictionaries(st.sampled_from(LABEL_KEYS), label_values, max_size=8), st.booleans())
def test_any_labels_give_a_policy_or_problems_never_an_exception(labels: dict[str, str], running: bool) -> None:
    container = ContainerInfo(id="id-web", name="web", image="img", image_id="sha256:x",
                              status="running" if running else "exited", pid=1, exit_code=0,
                              labels={LABEL_PROJECT: "shop", LABEL_SERVICE: "web", f"{DEFAULT_PREFIX}.enable": "true",
                                      **labels}, started_at="", attrs={})
    with time_limit(10):
        policy, problems = parse_container(container, LabelRules())
    assert all(isinstance(problem, Problem) and problem.message for problem in problems)
    if policy is not None:
        for spec in policy.jobs.values():
            assert spec.schedule.next_after(NOW) > NOW
            assert spec.retention.keep is None or spec.retention.keep >= 1
