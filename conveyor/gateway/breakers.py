"""Every (provider, model)'s circuit breaker in this process, and the hook metrics read.

One registry belongs to one ``Gateway``; a worker process builds one gateway and hands it to
every task, which makes the registry shared by every task in the worker. The breakers
themselves are the pure state machine of ``conveyor.core.breaker``; this module adds the
clock and tells listeners (the Prometheus gauge of ``observability.metrics``) when a state
changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from conveyor.core.breaker import (
    BreakerOutcome,
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    Ticket,
)

log = structlog.get_logger("conveyor.gateway")

BreakerKey = tuple[str, str]  # (provider, model)
StateListener = Callable[[str, str, BreakerState], None]


class BreakerRegistry:
    """Breakers keyed by (provider, model), created on first use with shared settings."""

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self._breakers: dict[BreakerKey, CircuitBreaker] = {}
        self._seen: dict[BreakerKey, BreakerState] = {}
        self._listeners: list[StateListener] = []

    def on_change(self, listener: StateListener) -> None:
        """Call ``listener(provider, model, new_state)`` whenever a breaker changes state.

        A change is noticed when the breaker is next used or read (``states``): an open
        breaker turns half-open lazily, when its cool-down has passed and someone asks.
        """
        self._listeners.append(listener)

    def allow(self, provider: str, model: str) -> Ticket | None:
        """A ticket for a call to (provider, model), or None: its breaker is open."""
        breaker = self._get((provider, model))
        ticket = breaker.allow(self._clock())
        self._notice((provider, model), breaker)
        return ticket

    def record(self, provider: str, model: str, ticket: Ticket, outcome: BreakerOutcome) -> None:
        """Report how the call of ``ticket`` ended."""
        breaker = self._get((provider, model))
        breaker.record(ticket, outcome, self._clock())
        self._notice((provider, model), breaker)

    def retry_in(self, provider: str, model: str) -> float:
        """Seconds until the breaker of (provider, model) lets a probe through."""
        return self._get((provider, model)).retry_in(self._clock())

    def state(self, provider: str, model: str) -> BreakerState:
        """The state of one breaker (closed for a target never called)."""
        breaker = self._get((provider, model))
        self._notice((provider, model), breaker)
        return self._seen[(provider, model)]

    def states(self) -> dict[BreakerKey, BreakerState]:
        """Every breaker's state now: what a breaker-state gauge exports."""
        for key, breaker in self._breakers.items():
            self._notice(key, breaker)
        return dict(self._seen)

    def _get(self, key: BreakerKey) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(self.settings)
            self._seen[key] = BreakerState.CLOSED
        return breaker

    def _notice(self, key: BreakerKey, breaker: CircuitBreaker) -> None:
        state = breaker.state(self._clock())
        if self._seen[key] is state:
            return
        self._seen[key] = state
        log.info("llm_breaker_changed", provider=key[0], model=key[1], state=state.value)
        for listener in self._listeners:
            try:
                listener(key[0], key[1], state)
            except Exception:  # a broken gauge must not break calls
                log.exception("llm_breaker_listener_failed")
