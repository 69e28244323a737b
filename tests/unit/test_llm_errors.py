"""Classifying a failed LLM attempt: permanent stops, 429 waits Retry-After, the rest backs off."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.backoff import RetryPolicy, backoff_ceiling
from conveyor.core.llm_errors import (
    RETRY_AFTER_SPREAD,
    CallRetryPolicy,
    FailureKind,
    Verdict,
    classify_status,
    decide,
    parse_retry_after,
)
from conveyor.errors import ConfigurationError

unit_interval = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
retryable_kinds = st.sampled_from(
    [FailureKind.SERVER_ERROR, FailureKind.TRANSPORT, FailureKind.TIMEOUT]
)
NOW = 1_700_000_000.0


@st.composite
def policies(draw: st.DrawFn) -> CallRetryPolicy:
    base = draw(st.floats(min_value=0.001, max_value=10))
    cap = draw(st.floats(min_value=base, max_value=100))
    attempts = draw(st.integers(min_value=1, max_value=10))
    wait = draw(st.floats(min_value=0, max_value=120))
    return CallRetryPolicy(RetryPolicy(attempts, base, cap), max_retry_after=wait)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 405, 413, 501, 301])
def test_request_faults_are_permanent(status: int) -> None:
    assert classify_status(status) is FailureKind.PERMANENT


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529, 408, 409, 599])
def test_provider_faults_are_server_errors(status: int) -> None:
    assert classify_status(status) is FailureKind.SERVER_ERROR


def test_429_is_rate_limited_and_a_success_is_no_failure() -> None:
    assert classify_status(429) is FailureKind.RATE_LIMITED
    with pytest.raises(ValueError, match="not a failure"):
        classify_status(200)


@given(policies(), st.integers(min_value=1, max_value=20), unit_interval, st.floats(0, 1e6))
def test_permanent_always_fails_at_once(
    policy: CallRetryPolicy, attempt: int, draw: float, wait: float
) -> None:
    decision = decide(FailureKind.PERMANENT, attempt, policy, draw, retry_after=wait)
    assert decision.verdict is Verdict.FAIL
    assert decision.delay == 0


@given(policies(), retryable_kinds, st.integers(min_value=1, max_value=20), unit_interval)
def test_retryable_backs_off_with_full_jitter_until_attempts_run_out(
    policy: CallRetryPolicy, kind: FailureKind, attempt: int, draw: float
) -> None:
    decision = decide(kind, attempt, policy, draw)
    if attempt >= policy.backoff.max_attempts:
        assert decision.verdict is Verdict.NEXT_TARGET
        assert "exhausted" in decision.reason
    else:
        assert decision.verdict is Verdict.RETRY
        assert 0 <= decision.delay <= backoff_ceiling(policy.backoff, attempt)
        assert decision.delay == pytest.approx(backoff_ceiling(policy.backoff, attempt) * draw)


@given(policies(), st.integers(min_value=1, max_value=20), unit_interval, st.floats(0, 200))
def test_429_waits_no_less_than_retry_after(
    policy: CallRetryPolicy, attempt: int, draw: float, wait: float
) -> None:
    decision = decide(FailureKind.RATE_LIMITED, attempt, policy, draw, retry_after=wait)
    if attempt >= policy.backoff.max_attempts:
        assert decision.verdict is Verdict.NEXT_TARGET
    elif wait > policy.max_retry_after:
        assert decision.verdict is Verdict.NEXT_TARGET
        assert "max_retry_after" in decision.reason
    else:
        assert decision.verdict is Verdict.RETRY
        assert wait <= decision.delay <= wait * (1 + RETRY_AFTER_SPREAD)


@given(policies(), unit_interval)
def test_429_without_retry_after_backs_off(policy: CallRetryPolicy, draw: float) -> None:
    if policy.backoff.max_attempts == 1:
        return
    decision = decide(FailureKind.RATE_LIMITED, 1, policy, draw)
    assert decision.verdict is Verdict.RETRY
    assert 0 <= decision.delay <= policy.backoff.base


@pytest.mark.parametrize(("attempt", "draw"), [(0, 0.5), (1, 1.0), (1, -0.1)])
def test_bad_inputs_are_refused(attempt: int, draw: float) -> None:
    with pytest.raises(ValueError):
        decide(FailureKind.TIMEOUT, attempt, CallRetryPolicy(), draw)


def test_max_retry_after_must_be_finite() -> None:
    with pytest.raises(ConfigurationError, match="max_retry_after"):
        CallRetryPolicy(max_retry_after=float("inf"))


# --- Retry-After ----------------------------------------------------------------------------


@given(st.floats(min_value=0, max_value=1e6))
def test_retry_after_seconds(seconds: float) -> None:
    assert parse_retry_after(repr(seconds), None, NOW) == seconds


@given(st.integers(min_value=0, max_value=10**7))
def test_retry_after_ms_wins_over_seconds(millis: int) -> None:
    assert parse_retry_after("999", str(millis), NOW) == millis / 1000


@given(st.integers(min_value=-86_400, max_value=86_400))
def test_retry_after_http_date(offset: int) -> None:
    header = formatdate(NOW + offset, usegmt=True)
    assert parse_retry_after(header, None, NOW) == max(offset, 0)


@pytest.mark.parametrize(
    ("seconds", "millis", "expected"),
    [
        (None, None, None),
        ("soon", None, None),
        ("nan", None, None),
        ("-5", None, 0.0),
        ("2", "junk", 2.0),
        (" 3 ", None, 3.0),
    ],
)
def test_retry_after_edge_cases(
    seconds: str | None, millis: str | None, expected: float | None
) -> None:
    assert parse_retry_after(seconds, millis, NOW) == expected


@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=20)))
def test_retry_after_never_raises_and_is_never_negative(seconds: str, millis: str | None) -> None:
    wait = parse_retry_after(seconds, millis, NOW)
    assert wait is None or wait >= 0
