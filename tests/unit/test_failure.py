"""A failed run's fate: dead-letter it, or retry after a bounded delay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.backoff import RetryPolicy, backoff_ceiling
from conveyor.core.failure import GiveUp, RetryLater, decide_after_failure

policies = st.builds(
    RetryPolicy,
    base=st.floats(min_value=0.01, max_value=60.0),
    cap=st.floats(min_value=60.0, max_value=3600.0),
)
budgets = st.integers(min_value=1, max_value=100)
unit_interval = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
delays = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


def _never() -> float:
    raise AssertionError("no random draw is needed for this decision")


@given(st.integers(1, 200), budgets, policies, st.one_of(st.none(), delays))
def test_permanent_errors_always_give_up(
    attempts: int, max_attempts: int, policy: RetryPolicy, requested: float | None
) -> None:
    decision = decide_after_failure(
        attempts=attempts,
        max_attempts=max_attempts,
        permanent=True,
        policy=policy,
        uniform=_never,
        requested_delay=requested,
    )
    assert isinstance(decision, GiveUp)
    assert "permanent" in decision.reason


@given(budgets, st.integers(0, 50), policies, st.one_of(st.none(), delays))
def test_exhausted_attempts_give_up_and_say_so(
    max_attempts: int, extra: int, policy: RetryPolicy, requested: float | None
) -> None:
    attempts = max_attempts + extra
    decision = decide_after_failure(
        attempts=attempts,
        max_attempts=max_attempts,
        permanent=False,
        policy=policy,
        uniform=_never,
        requested_delay=requested,
    )
    assert decision == GiveUp(f"attempts exhausted ({attempts}/{max_attempts})")


@st.composite
def attempts_left(draw: st.DrawFn) -> tuple[int, int]:
    max_attempts = draw(st.integers(2, 100))
    return draw(st.integers(1, max_attempts - 1)), max_attempts


@given(attempts_left(), policies, unit_interval)
def test_retry_delay_is_full_jitter_within_the_backoff_ceiling(
    budget: tuple[int, int], policy: RetryPolicy, draw: float
) -> None:
    attempts, max_attempts = budget
    decision = decide_after_failure(
        attempts=attempts,
        max_attempts=max_attempts,
        permanent=False,
        policy=policy,
        uniform=lambda: draw,
    )
    assert isinstance(decision, RetryLater)
    ceiling = backoff_ceiling(policy, attempts)
    assert 0.0 <= decision.delay <= ceiling
    assert decision.delay == ceiling * draw


@given(attempts_left(), policies, delays)
def test_requested_delay_overrides_backoff_and_is_clamped_at_zero(
    budget: tuple[int, int], policy: RetryPolicy, requested: float
) -> None:
    attempts, max_attempts = budget
    decision = decide_after_failure(
        attempts=attempts,
        max_attempts=max_attempts,
        permanent=False,
        policy=policy,
        uniform=_never,
        requested_delay=requested,
    )
    assert decision == RetryLater(max(0.0, requested))


def test_requested_delay_may_exceed_the_backoff_cap() -> None:
    # A handler that knows better (a rate limit's Retry-After) is not second-guessed.
    decision = decide_after_failure(
        attempts=1,
        max_attempts=3,
        permanent=False,
        policy=RetryPolicy(cap=10.0),
        uniform=_never,
        requested_delay=3600.0,
    )
    assert decision == RetryLater(3600.0)


def test_zero_requested_delay_retries_at_once() -> None:
    decision = decide_after_failure(
        attempts=1,
        max_attempts=2,
        permanent=False,
        policy=RetryPolicy(),
        uniform=_never,
        requested_delay=-0.0,
    )
    assert isinstance(decision, RetryLater)
    assert decision.delay == 0.0


@pytest.mark.parametrize(("attempts", "expected"), [(2, RetryLater), (3, GiveUp), (4, GiveUp)])
def test_the_last_allowed_attempt_is_the_boundary(attempts: int, expected: type) -> None:
    decision = decide_after_failure(
        attempts=attempts,
        max_attempts=3,
        permanent=False,
        policy=RetryPolicy(),
        uniform=lambda: 0.5,
    )
    assert isinstance(decision, expected)
