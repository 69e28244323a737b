"""Cron schedules: what is accepted, and tick arithmetic around any instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from croniter import croniter
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.cron import latest_tick, next_tick, validate_cron
from conveyor.errors import ConfigurationError

EXPRESSIONS = [
    "* * * * *",
    "*/5 * * * *",
    "17 * * * *",
    "0 0 * * *",
    "30 9 * * 1-5",
    "0 0 1 * *",
    "0 0 29 2 *",
    "0 12 * jan,jul sun",
    "@daily",
    "@hourly",
]
expressions = st.sampled_from(EXPRESSIONS)
instants = st.datetimes(
    min_value=datetime(2001, 1, 1),
    max_value=datetime(2099, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))]
    ),
)


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_valid_expressions_are_accepted_unchanged(expression: str) -> None:
    assert validate_cron(expression) == expression


def test_whitespace_is_normalised() -> None:
    assert validate_cron("  */5   *\t* * *  ") == "*/5 * * * *"


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "   ",
        "* * * *",  # four fields
        "* * * * * *",  # six: croniter reads a seconds field, ticks would not be minutes
        "* * * * * * *",
        "61 * * * *",
        "* 24 * * *",
        "a b c d e",
        "0 0 31 2 *",  # February 31st never comes: the task would never run
        "0 0 30 2 *",
        "0 0 31 4,6 *",
        "R * * * *",  # random: each worker would draw different ticks
        "0 R(0-5) * * *",
        "0 0 * * mon,r",
        "@reboot",
        "@sometimes",
    ],
)
def test_invalid_expressions_raise_configuration_error_naming_them(expression: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        validate_cron(expression)
    assert repr(expression) in str(caught.value)
    assert "e.g." in str(caught.value)


@given(expressions, instants)
def test_latest_tick_brackets_now(expression: str, now: datetime) -> None:
    latest = latest_tick(expression, now)
    assert latest <= now < next_tick(expression, latest)


@given(expressions, instants)
def test_ticks_are_utc_whole_minutes_that_match(expression: str, now: datetime) -> None:
    for tick in (latest_tick(expression, now), next_tick(expression, now)):
        assert tick.tzinfo is UTC
        assert (tick.second, tick.microsecond) == (0, 0)
        assert croniter.match(expression, tick)


@given(expressions, instants)
def test_a_tick_is_its_own_latest_tick(expression: str, now: datetime) -> None:
    tick = next_tick(expression, now)
    assert tick > now
    assert latest_tick(expression, tick) == tick
    assert latest_tick(expression, tick - timedelta(microseconds=1)) < tick


@given(expressions, instants)
def test_next_tick_is_the_first_after(expression: str, now: datetime) -> None:
    # Nothing fires strictly between now and the next tick.
    tick = next_tick(expression, now)
    assert latest_tick(expression, tick - timedelta(microseconds=1)) <= now


@pytest.mark.parametrize(
    ("expression", "now", "latest", "following"),
    [
        ("*/5 * * * *", at(2026, 1, 1, 10, 5), at(2026, 1, 1, 10, 5), at(2026, 1, 1, 10, 10)),
        ("*/5 * * * *", at(2026, 1, 1, 10, 7, 13), at(2026, 1, 1, 10, 5), at(2026, 1, 1, 10, 10)),
        (
            "*/5 * * * *",
            at(2026, 1, 1, 10, 5, 0, 1),
            at(2026, 1, 1, 10, 5),
            at(2026, 1, 1, 10, 10),
        ),
        (
            "*/5 * * * *",
            at(2026, 1, 1, 10, 4, 59, 999999),
            at(2026, 1, 1, 10, 0),
            at(2026, 1, 1, 10, 5),
        ),
        ("0 0 * * *", at(2026, 3, 15, 12), at(2026, 3, 15), at(2026, 3, 16)),
        ("0 0 * * *", at(2026, 12, 31, 23, 59), at(2026, 12, 31), at(2027, 1, 1)),
        ("0 0 29 2 *", at(2026, 3, 1), at(2024, 2, 29), at(2028, 2, 29)),
        ("30 9 * * 1-5", at(2026, 11, 21, 12), at(2026, 11, 20, 9, 30), at(2026, 11, 23, 9, 30)),
    ],
)
def test_exact_ticks(expression: str, now: datetime, latest: datetime, following: datetime) -> None:
    assert latest_tick(expression, now) == latest
    assert next_tick(expression, latest) == following


def test_other_time_zones_are_read_as_the_same_instant() -> None:
    plus_one = timezone(timedelta(hours=1))
    now = datetime(2026, 1, 1, 0, 30, tzinfo=plus_one)  # 2025-12-31 23:30 UTC
    assert latest_tick("0 * * * *", now) == at(2025, 12, 31, 23)
    assert latest_tick("0 0 * * *", now) == at(2025, 12, 31)
    assert next_tick("0 0 * * *", now) == at(2026, 1, 1)
