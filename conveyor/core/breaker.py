"""A circuit breaker for one (provider, model), as a pure state machine.

::

    CLOSED --(failure rate >= threshold over the last `window` outcomes,
              at least `min_calls` of them)--> OPEN
    OPEN   --(`cool_down` seconds passed)--> HALF_OPEN
    HALF_OPEN --(`half_open_probes` probes all succeeded)--> CLOSED
    HALF_OPEN --(a probe failed)--> OPEN (the cool-down starts again)

While open, calls fail fast without being sent: a provider in trouble gets room to recover
and callers move on to their fallback at once instead of waiting out timeouts. Only failures
that indict the provider count (5xx, transport errors, timeouts, and 429 if configured);
a 4xx caused by the request or a budget refusal says nothing about the provider's health.

The caller passes the time (monotonic seconds) to every method; nothing here reads a clock.
Each admitted call gets a ``Ticket`` and reports its outcome with it exactly once; a ticket
from before the last state change is ignored, so a slow call admitted while closed cannot
close a breaker that opened since.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from conveyor.core.llm_errors import FailureKind
from conveyor.errors import ConfigurationError


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerOutcome(StrEnum):
    """How one admitted call ended, as the breaker counts it."""

    SUCCESS = "success"
    FAILURE = "failure"  # indicts the provider
    IGNORED = "ignored"  # says nothing about the provider (4xx, budget, cancelled)


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When a breaker opens and how it recovers.

    Attributes:
        window: outcomes remembered, the most recent ones (default 20).
        min_calls: outcomes needed in the window before it may open (default 10).
        failure_rate: share of failures that opens it, in (0, 1] (default 0.5).
        cool_down: seconds it stays open before probing (default 30).
        half_open_probes: probes let through when half-open; all must succeed (default 1).
        count_rate_limits: whether a 429 counts as a failure (default False: a 429 is
            about our quota, not the provider's health, and the budget handles it).
    """

    window: int = 20
    min_calls: int = 10
    failure_rate: float = 0.5
    cool_down: float = 30.0
    half_open_probes: int = 1
    count_rate_limits: bool = False

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigurationError(f"breaker window must be >= 1, got {self.window}")
        if not 1 <= self.min_calls <= self.window:
            raise ConfigurationError(
                f"breaker min_calls must be between 1 and window ({self.window}), "
                f"got {self.min_calls}"
            )
        if not 0 < self.failure_rate <= 1:
            raise ConfigurationError(
                f"breaker failure_rate must be in (0, 1], got {self.failure_rate}"
            )
        if not (self.cool_down >= 0 and math.isfinite(self.cool_down)):
            raise ConfigurationError(
                f"breaker cool_down must be a finite number of seconds >= 0, got {self.cool_down}"
            )
        if self.half_open_probes < 1:
            raise ConfigurationError(
                f"breaker half_open_probes must be >= 1, got {self.half_open_probes}"
            )


def breaker_outcome(kind: FailureKind | None, settings: BreakerSettings) -> BreakerOutcome:
    """How the breaker counts an attempt that failed with ``kind`` (None: it succeeded)."""
    if kind is None:
        return BreakerOutcome.SUCCESS
    if kind is FailureKind.PERMANENT:
        return BreakerOutcome.IGNORED
    if kind is FailureKind.RATE_LIMITED and not settings.count_rate_limits:
        return BreakerOutcome.IGNORED
    return BreakerOutcome.FAILURE


@dataclass(frozen=True, slots=True)
class Ticket:
    """Proof that a call was admitted; report its outcome with it once."""

    generation: int
    probe: bool


class CircuitBreaker:
    """The breaker of one (provider, model); see the module docstring for the states."""

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self._state = BreakerState.CLOSED
        self._outcomes: deque[bool] = deque(maxlen=settings.window)  # True: a failure
        self._generation = 0
        self._opened_at = 0.0
        self._probes_admitted = 0
        self._probes_succeeded = 0

    def state(self, now: float) -> BreakerState:
        """The state at ``now`` (an open breaker whose cool-down passed is half-open)."""
        self._advance(now)
        return self._state

    @property
    def failures(self) -> int:
        """Failures among the remembered outcomes (while closed)."""
        return sum(self._outcomes)

    @property
    def calls(self) -> int:
        """Remembered outcomes (while closed)."""
        return len(self._outcomes)

    def retry_in(self, now: float) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        self._advance(now)
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(self._opened_at + self.settings.cool_down - now, 0.0)

    def allow(self, now: float) -> Ticket | None:
        """A ticket when a call may go ahead at ``now``, None when it must fail fast."""
        self._advance(now)
        if self._state is BreakerState.CLOSED:
            return Ticket(self._generation, probe=False)
        if (
            self._state is BreakerState.HALF_OPEN
            and self._probes_admitted < self.settings.half_open_probes
        ):
            self._probes_admitted += 1
            return Ticket(self._generation, probe=True)
        return None

    def record(self, ticket: Ticket, outcome: BreakerOutcome, now: float) -> None:
        """Count how the call of ``ticket`` ended."""
        self._advance(now)
        if ticket.generation != self._generation:
            return  # admitted before the last change of state: it no longer counts
        if ticket.probe:
            self._record_probe(outcome, now)
        elif outcome is not BreakerOutcome.IGNORED:
            self._outcomes.append(outcome is BreakerOutcome.FAILURE)
            if self._should_open():
                self._open(now)

    def _record_probe(self, outcome: BreakerOutcome, now: float) -> None:
        if outcome is BreakerOutcome.FAILURE:
            self._open(now)
        elif outcome is BreakerOutcome.IGNORED:
            self._probes_admitted -= 1  # it proved nothing: let another probe take its place
        else:
            self._probes_succeeded += 1
            if self._probes_succeeded >= self.settings.half_open_probes:
                self._change(BreakerState.CLOSED)

    def _should_open(self) -> bool:
        calls = len(self._outcomes)
        # A quotient, not `failures >= rate * calls`: 0.3 * 10 rounds above 3.0.
        return calls >= self.settings.min_calls and sum(self._outcomes) / calls >= (
            self.settings.failure_rate
        )

    def _open(self, now: float) -> None:
        self._change(BreakerState.OPEN)
        self._opened_at = now

    def _advance(self, now: float) -> None:
        if self._state is BreakerState.OPEN and now >= self._opened_at + self.settings.cool_down:
            self._change(BreakerState.HALF_OPEN)

    def _change(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._outcomes.clear()
        self._probes_admitted = 0
        self._probes_succeeded = 0
