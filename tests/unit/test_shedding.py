"""Load shedding by priority: lower priorities are refused first, urgent work last, and a
refusal's wait follows the drain rate within its bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.shedding import (
    MAX_RETRY_AFTER,
    MIN_RETRY_AFTER,
    admit,
    count_limit,
    mark,
    retry_after,
)

thresholds = st.integers(min_value=1, max_value=1_000_000)
priorities = st.integers(min_value=1, max_value=10)
depths = st.integers(min_value=0, max_value=10_000_000)
rates = st.floats(min_value=0, max_value=1e6, allow_nan=False)


def test_the_marks_of_the_three_bands() -> None:
    assert [mark(100, p) for p in range(1, 11)] == [400] + [200] * 4 + [100] * 5


@given(thresholds, depths, priorities, priorities, rates)
def test_a_lower_priority_is_never_admitted_where_a_higher_is_refused(
    threshold: int, depth: int, p: int, q: int, rate: float
) -> None:
    urgent, lax = min(p, q), max(p, q)  # 1 is the most urgent
    if admit(threshold, depth, urgent, rate) is not None:
        assert admit(threshold, depth, lax, rate) is not None


@given(thresholds, depths, priorities, rates)
def test_below_its_mark_a_task_is_admitted_and_at_it_refused(
    threshold: int, depth: int, priority: int, rate: float
) -> None:
    refusal = admit(threshold, depth, priority, rate)
    assert (refusal is None) == (depth < mark(threshold, priority))
    assert mark(threshold, priority) < count_limit(threshold)  # the count always decides
    if refusal is not None:
        assert MIN_RETRY_AFTER <= refusal.retry_after <= MAX_RETRY_AFTER
    assert admit(None, depth, priority, rate) is None


@given(st.integers(min_value=1, max_value=10**9), rates, rates)
def test_a_faster_drain_never_asks_for_a_longer_wait(excess: int, r1: float, r2: float) -> None:
    slow, fast = min(r1, r2), max(r1, r2)
    assert retry_after(excess, fast) <= retry_after(excess, slow)


def test_retry_after_is_the_drain_time_within_bounds() -> None:
    assert retry_after(50, 10.0) == 5
    assert retry_after(1, 1000.0) == MIN_RETRY_AFTER
    assert retry_after(10**6, 1.0) == MAX_RETRY_AFTER
    assert retry_after(5, 0.0) == MAX_RETRY_AFTER


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        mark(0, 5)
    with pytest.raises(ValueError):
        mark(10, 11)
