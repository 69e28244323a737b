"""Monthly partitions: month arithmetic, bounds, names, and what retention may drop."""

from __future__ import annotations

import itertools
import string
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.partitions import (
    Month,
    months_to_create,
    parse_partition_name,
    partition_name,
    partitions_to_drop,
)

PARENT = "task_history"
months = st.builds(Month, st.integers(1900, 9000), st.integers(1, 12))
shifts = st.integers(-5000, 5000)
parents = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=30)
instants = st.datetimes(
    min_value=datetime(1950, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=9))]),
)


@given(months, shifts)
def test_plus_then_minus_is_identity(month: Month, n: int) -> None:
    assert month.plus(n).plus(-n) == month


@given(months, shifts, shifts)
def test_plus_composes(month: Month, a: int, b: int) -> None:
    assert month.plus(a).plus(b) == month.plus(a + b)


@given(months)
def test_twelve_months_is_a_year(month: Month) -> None:
    assert month.plus(12) == Month(month.year + 1, month.month)
    assert month.plus(0) == month


@given(months, shifts)
def test_plus_preserves_order(month: Month, n: int) -> None:
    assert (month.plus(n) > month) == (n > 0)
    assert month.plus(n) < month.plus(n + 1)


def test_plus_crosses_year_boundaries() -> None:
    assert Month(2026, 12).plus(1) == Month(2027, 1)
    assert Month(2026, 1).plus(-1) == Month(2025, 12)
    assert Month(2026, 11).plus(-23) == Month(2024, 12)


@given(months)
def test_bounds_are_a_half_open_month(month: Month) -> None:
    assert month.start < month.end
    assert month.end == month.plus(1).start
    assert month.start.tzinfo is UTC
    assert (month.start.day, month.start.hour, month.start.minute) == (1, 0, 0)
    assert Month.of(month.start) == month
    assert Month.of(month.end - timedelta(microseconds=1)) == month
    assert Month.of(month.end) == month.plus(1)


@given(instants)
def test_of_contains_the_instant(moment: datetime) -> None:
    month = Month.of(moment)
    assert month.start <= moment < month.end


def test_of_converts_to_utc_and_reads_naive_as_utc() -> None:
    plus_one = timezone(timedelta(hours=1))
    assert Month.of(datetime(2026, 1, 1, 0, 30, tzinfo=plus_one)) == Month(2025, 12)
    assert Month.of(datetime(2026, 1, 1, 0, 30)) == Month(2026, 1)


@pytest.mark.parametrize("bad", [0, 13, -1])
def test_month_number_is_validated(bad: int) -> None:
    with pytest.raises(ValueError, match=f"got {bad}"):
        Month(2026, bad)


def test_partition_name_format() -> None:
    assert partition_name(PARENT, Month(2026, 11)) == "task_history_p2026_11"
    assert partition_name(PARENT, Month(987, 3)) == "task_history_p0987_03"


@given(parents, st.builds(Month, st.integers(1, 9999), st.integers(1, 12)))
def test_name_and_parse_round_trip(parent: str, month: Month) -> None:
    assert parse_partition_name(partition_name(parent, month)) == (parent, month)


@pytest.mark.parametrize(
    "name",
    [
        "task_history",
        "task_history_p2026_13",
        "task_history_p2026_00",
        "task_history_p26_01",
        "task_history_p2026_1",
        "task_history_p2026_01_old",
        "task_history_p2026_01\n",
        "Task_History_p2026_01",
        "task_history_default",
        "",
    ],
)
def test_parse_rejects_foreign_names(name: str) -> None:
    assert parse_partition_name(name) is None


@given(st.text(max_size=40))
def test_parse_accepts_only_names_it_would_make(name: str) -> None:
    parsed = parse_partition_name(name)
    if parsed is not None:
        assert partition_name(*parsed) == name


@given(instants, st.integers(0, 36))
def test_months_to_create_starts_now_and_is_consecutive(now: datetime, ahead: int) -> None:
    created = months_to_create(now, ahead)
    assert len(created) == ahead + 1
    assert created[0] == Month.of(now)
    assert all(b == a.plus(1) for a, b in itertools.pairwise(created))


def test_months_to_create_rejects_negative_lookahead() -> None:
    with pytest.raises(ValueError, match="months_ahead"):
        months_to_create(datetime(2026, 1, 1, tzinfo=UTC), -1)


@given(
    st.lists(
        st.builds(Month, st.integers(1990, 2060), st.integers(1, 12)), unique=True, max_size=30
    ),
    st.lists(st.sampled_from(["task_history_archive", "tasks", "effects"]), max_size=3),
    instants,
)
def test_partitions_to_drop_drops_exactly_those_ended_by_the_cutoff(
    own: list[Month], others: list[str], cutoff: datetime
) -> None:
    mine = {partition_name(PARENT, month): month for month in own}
    foreign = [partition_name(other, month) for other in others for month in own]
    junk = [PARENT, f"{PARENT}_default", f"{PARENT}_p2026_13"]
    dropped = partitions_to_drop([*mine, *foreign, *junk], PARENT, cutoff)

    assert dropped == sorted(dropped)
    assert set(dropped) <= set(mine), "only the parent's own partitions may be dropped"
    for name, month in mine.items():
        # No row younger than the cutoff is lost; everything wholly older is released.
        assert (name in dropped) == (month.end <= cutoff)


def test_cutoff_exactly_at_month_end_drops_it() -> None:
    names = [partition_name(PARENT, Month(2026, m)) for m in (1, 2, 3)]
    end_of_february = datetime(2026, 3, 1, tzinfo=UTC)
    assert partitions_to_drop(names, PARENT, end_of_february) == names[:2]
    just_before = end_of_february - timedelta(microseconds=1)
    assert partitions_to_drop(names, PARENT, just_before) == names[:1]
