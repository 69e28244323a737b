"""Exponential backoff with full jitter: the ceiling doubles, stays capped, never overflows."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.backoff import RetryPolicy, backoff_ceiling, full_jitter_delay
from conveyor.errors import ConfigurationError

# Any positive finite float, subnormals included: the ceiling must be right for all of them.
bases = st.floats(min_value=5e-324, max_value=1e12, allow_nan=False, allow_infinity=False)
attempts = st.integers(min_value=1, max_value=200)
huge_attempts = st.integers(min_value=10**4, max_value=10**30)
unit_interval = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    base = draw(bases)
    # Drawn apart from the base, so cap / base may exceed any fixed power of two.
    cap = draw(st.floats(min_value=base, max_value=max(base, 1e15)))
    return RetryPolicy(max_attempts=draw(st.integers(1, 50)), base=base, cap=cap)


def test_defaults_give_one_second_doubling_to_five_minutes() -> None:
    policy = RetryPolicy()
    ceilings = [backoff_ceiling(policy, attempt) for attempt in range(1, 12)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]


@given(policies())
def test_first_ceiling_is_the_base(policy: RetryPolicy) -> None:
    assert backoff_ceiling(policy, 1) == policy.base


@given(policies(), attempts)
def test_ceiling_doubles_until_it_reaches_the_cap(policy: RetryPolicy, attempt: int) -> None:
    current = backoff_ceiling(policy, attempt)
    assert backoff_ceiling(policy, attempt + 1) == min(policy.cap, 2 * current)


@given(policies(), attempts)
def test_ceiling_stays_between_base_and_cap(policy: RetryPolicy, attempt: int) -> None:
    assert policy.base <= backoff_ceiling(policy, attempt) <= policy.cap


@given(policies(), attempts, attempts)
def test_ceiling_is_monotone_in_attempt(policy: RetryPolicy, first: int, second: int) -> None:
    low, high = sorted((first, second))
    assert backoff_ceiling(policy, low) <= backoff_ceiling(policy, high)


@given(policies(), huge_attempts)
def test_huge_attempts_reach_the_cap_without_overflow(policy: RetryPolicy, attempt: int) -> None:
    ceiling = backoff_ceiling(policy, attempt)
    assert math.isfinite(ceiling)
    assert ceiling == policy.cap


def test_tiny_base_still_reaches_the_cap() -> None:
    # 1e-20 * 2**62 is far below 10: a clamp on the exponent must not stop short of the cap.
    policy = RetryPolicy(base=1e-20, cap=10.0)
    assert backoff_ceiling(policy, 200) == 10.0


@given(policies(), attempts, unit_interval)
def test_full_jitter_delay_is_within_zero_and_ceiling(
    policy: RetryPolicy, attempt: int, draw: float
) -> None:
    delay = full_jitter_delay(policy, attempt, lambda: draw)
    assert 0.0 <= delay <= backoff_ceiling(policy, attempt)


@given(policies(), attempts)
def test_full_jitter_spans_the_whole_range(policy: RetryPolicy, attempt: int) -> None:
    assert full_jitter_delay(policy, attempt, lambda: 0.0) == 0.0
    almost_one = math.nextafter(1.0, 0.0)
    top = full_jitter_delay(policy, attempt, lambda: almost_one)
    assert top == pytest.approx(backoff_ceiling(policy, attempt), rel=1e-12)


@pytest.mark.parametrize("attempt", [0, -1, -(10**9)])
def test_attempts_are_one_based(attempt: int) -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff_ceiling(RetryPolicy(), attempt)


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"max_attempts": 0}, ["max_attempts", ">= 1", "0"]),
        ({"max_attempts": -3}, ["max_attempts", "-3"]),
        ({"base": 0.0}, ["base", "> 0", "0.0"]),
        ({"base": -1.0}, ["base", "-1.0"]),
        ({"base": math.nan}, ["base", "nan"]),
        ({"base": math.inf, "cap": math.inf}, ["base", "inf"]),
        ({"cap": math.inf}, ["cap", "finite", "inf"]),
        ({"cap": math.nan}, ["cap", "nan"]),
        ({"base": 10.0, "cap": 5.0}, ["cap (5.0s)", "base (10.0s)"]),
    ],
)
def test_invalid_policy_is_a_configuration_error_naming_the_field(
    kwargs: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RetryPolicy(**kwargs)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message


def test_cap_equal_to_base_is_a_constant_backoff() -> None:
    policy = RetryPolicy(base=7.0, cap=7.0)
    assert {backoff_ceiling(policy, attempt) for attempt in range(1, 50)} == {7.0}
