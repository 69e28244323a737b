"""The circuit breaker as a pure state machine: open on the error rate, probe, close."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.breaker import (
    BreakerOutcome,
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    breaker_outcome,
)
from conveyor.core.llm_errors import FailureKind
from conveyor.errors import ConfigurationError

S, F, N = BreakerOutcome.SUCCESS, BreakerOutcome.FAILURE, BreakerOutcome.IGNORED
SETTINGS = BreakerSettings(window=4, min_calls=4, failure_rate=0.5, cool_down=10.0)


def call(breaker: CircuitBreaker, outcome: BreakerOutcome, now: float = 0.0) -> bool:
    """One call through the breaker; False when it failed fast."""
    ticket = breaker.allow(now)
    if ticket is None:
        return False
    breaker.record(ticket, outcome, now)
    return True


def tripped(settings: BreakerSettings = SETTINGS) -> CircuitBreaker:
    breaker = CircuitBreaker(settings)
    for _ in range(settings.window):
        call(breaker, F)
    assert breaker.state(0.0) is BreakerState.OPEN
    return breaker


def test_opens_at_the_failure_rate_once_min_calls_are_in() -> None:
    breaker = CircuitBreaker(SETTINGS)
    for outcome in (F, S, F):
        call(breaker, outcome)
    assert breaker.state(0.0) is BreakerState.CLOSED  # 3 calls < min_calls
    call(breaker, S)  # 2 of 4 failed: 0.5 reaches the threshold
    assert breaker.state(0.0) is BreakerState.OPEN


def test_the_window_forgets_old_outcomes() -> None:
    breaker = CircuitBreaker(SETTINGS)
    for outcome in (F, S, S, S, S, F):  # when the last F lands, the first has left
        call(breaker, outcome)
    assert breaker.state(0.0) is BreakerState.CLOSED
    assert (breaker.calls, breaker.failures) == (4, 1)


def test_open_fails_fast_until_the_cool_down_then_probes() -> None:
    breaker = tripped()
    assert breaker.allow(9.9) is None
    assert breaker.retry_in(5.0) == pytest.approx(5.0)
    assert breaker.state(10.0) is BreakerState.HALF_OPEN
    probe = breaker.allow(10.0)
    assert probe is not None and probe.probe
    assert breaker.allow(10.0) is None  # one probe at a time by default
    breaker.record(probe, S, 10.5)
    assert breaker.state(10.5) is BreakerState.CLOSED
    assert breaker.calls == 0  # a closed breaker starts with a clean window


def test_a_failed_probe_reopens_for_another_cool_down() -> None:
    breaker = tripped()
    probe = breaker.allow(10.0)
    assert probe is not None
    breaker.record(probe, F, 11.0)
    assert breaker.state(11.0) is BreakerState.OPEN
    assert breaker.allow(20.9) is None
    assert breaker.state(21.0) is BreakerState.HALF_OPEN


def test_k_probes_must_all_succeed() -> None:
    breaker = tripped(BreakerSettings(window=2, min_calls=2, cool_down=1.0, half_open_probes=3))
    probes = [breaker.allow(1.0) for _ in range(4)]
    assert [p is not None for p in probes] == [True, True, True, False]
    for done, probe in enumerate(probes[:3], start=1):
        assert probe is not None
        breaker.record(probe, S, 1.0)
        expected = BreakerState.CLOSED if done == 3 else BreakerState.HALF_OPEN
        assert breaker.state(1.0) is expected


def test_an_ignored_probe_frees_its_slot() -> None:
    breaker = tripped()
    probe = breaker.allow(10.0)
    assert probe is not None
    breaker.record(probe, N, 10.0)  # e.g. a 400: proves nothing about the provider
    assert breaker.state(10.0) is BreakerState.HALF_OPEN
    assert breaker.allow(10.0) is not None


def test_a_stale_ticket_does_not_count() -> None:
    breaker = CircuitBreaker(SETTINGS)
    slow = breaker.allow(0.0)  # admitted while closed, finishes after the breaker opened
    assert slow is not None
    for _ in range(4):
        call(breaker, F)
    assert breaker.state(10.0) is BreakerState.HALF_OPEN
    breaker.record(slow, S, 10.0)
    assert breaker.state(10.0) is BreakerState.HALF_OPEN  # not closed by an old success


@given(st.lists(st.sampled_from([S, F, N]), max_size=60))
def test_opens_exactly_when_the_window_reaches_the_rate(outcomes: list[BreakerOutcome]) -> None:
    breaker = CircuitBreaker(SETTINGS)
    counted: list[bool] = []
    for outcome in outcomes:
        if breaker.state(0.0) is not BreakerState.CLOSED:
            break
        call(breaker, outcome)
        if outcome is not N:
            counted.append(outcome is F)
        window = counted[-SETTINGS.window :]
        should_open = (
            len(window) >= SETTINGS.min_calls and sum(window) / len(window) >= SETTINGS.failure_rate
        )
        assert (breaker.state(0.0) is BreakerState.OPEN) == should_open
        if should_open:
            break


@given(st.lists(st.tuples(st.sampled_from([S, F, N]), st.floats(0, 5)), max_size=80))
def test_never_admits_while_open_and_never_more_probes_than_k(
    steps: list[tuple[BreakerOutcome, float]],
) -> None:
    settings = BreakerSettings(window=3, min_calls=2, cool_down=2.0, half_open_probes=2)
    breaker = CircuitBreaker(settings)
    now = 0.0
    for outcome, advance in steps:
        now += advance
        state = breaker.state(now)
        ticket = breaker.allow(now)
        if state is BreakerState.OPEN:
            assert ticket is None
            assert breaker.retry_in(now) > 0
        if ticket is not None:
            assert ticket.probe == (state is BreakerState.HALF_OPEN)
            breaker.record(ticket, outcome, now)


def test_what_counts_against_the_provider() -> None:
    plain = BreakerSettings()
    strict = BreakerSettings(count_rate_limits=True)
    assert breaker_outcome(None, plain) is S
    assert breaker_outcome(FailureKind.PERMANENT, strict) is N
    assert breaker_outcome(FailureKind.RATE_LIMITED, plain) is N
    assert breaker_outcome(FailureKind.RATE_LIMITED, strict) is F
    for kind in (FailureKind.SERVER_ERROR, FailureKind.TRANSPORT, FailureKind.TIMEOUT):
        assert breaker_outcome(kind, plain) is F


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"window": 0}, "window"),
        ({"window": 5, "min_calls": 6}, "min_calls"),
        ({"failure_rate": 0.0}, "failure_rate"),
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"cool_down": float("nan")}, "cool_down"),
        ({"half_open_probes": 0}, "half_open_probes"),
    ],
)
def test_settings_are_validated(fields: dict[str, float], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        BreakerSettings(**fields)  # type: ignore[arg-type]
