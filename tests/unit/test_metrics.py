"""Prometheus metrics: the gateway plugin counts attempts, the breaker gauge follows the
breakers, and the worker collector reads a worker at scrape time.

Every metric lives on the shared ``REGISTRY``, so each test uses labels of its own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from conveyor.core.breaker import BreakerOutcome, BreakerSettings
from conveyor.gateway.accounting.records import CallOutcome, CallRecord
from conveyor.gateway.breakers import BreakerRegistry
from conveyor.gateway.hooks import HookChain
from conveyor.observability.gateway_metrics import GatewayMetrics, watch_breakers
from conveyor.observability.metrics import REGISTRY
from conveyor.observability.worker_metrics import unwatch_worker, watch_worker


def attempt(provider: str, outcome: CallOutcome, **fields: Any) -> CallRecord:
    return CallRecord(
        tenant_id="t1",
        task_id=7,
        group_id=None,
        requested="fast",
        provider=provider,
        model="m1",
        attempt=1,
        outcome=outcome,
        stream=False,
        **fields,
    )


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_the_plugin_counts_outcomes_and_tokens() -> None:
    hook = GatewayMetrics()
    await hook.after_attempt(
        attempt("rec", CallOutcome.OK, prompt_tokens=120, completion_tokens=30, latency=0.8),
        None,
    )
    await hook.after_attempt(
        attempt("rec", CallOutcome.OK, prompt_tokens=80, latency=1.2, ttft=0.3), None
    )
    await hook.after_attempt(
        attempt("rec", CallOutcome.RATE_LIMITED, status=429, latency=0.1), None
    )

    target = {"provider": "rec", "model": "m1"}
    assert sample("conveyor_llm_calls_total", **target, outcome="ok") == 2
    assert sample("conveyor_llm_calls_total", **target, outcome="rate_limited") == 1
    assert sample("conveyor_llm_tokens_total", **target, direction="prompt") == 200
    assert sample("conveyor_llm_tokens_total", **target, direction="completion") == 30
    assert sample("conveyor_llm_rate_limited_total", provider="rec") == 1
    assert sample("conveyor_llm_http_errors_total", provider="rec", status="429") == 1
    assert sample("conveyor_llm_call_seconds_count", **target) == 3
    assert sample("conveyor_llm_call_seconds_sum", **target) == pytest.approx(2.1)
    assert sample("conveyor_llm_call_seconds_bucket", **target, le="1.0") == 2
    assert sample("conveyor_llm_ttft_seconds_count", **target) == 1


async def test_attempts_that_sent_nothing_have_no_latency() -> None:
    hook = GatewayMetrics()
    for outcome in (CallOutcome.CIRCUIT_OPEN, CallOutcome.BUDGET_REFUSED, CallOutcome.CACHED):
        await hook.after_attempt(attempt("unsent", outcome), None)
    await hook.after_attempt(attempt("unsent", CallOutcome.TIMEOUT, latency=30.0), None)
    target = {"provider": "unsent", "model": "m1"}
    assert sample("conveyor_llm_calls_total", **target, outcome="circuit_open") == 1
    assert sample("conveyor_llm_calls_total", **target, outcome="cached") == 1
    assert sample("conveyor_llm_call_seconds_count", **target) == 1
    assert sample("conveyor_llm_rate_limited_total", provider="unsent") is None


async def test_a_record_the_metrics_cannot_count_fails_nothing() -> None:
    # a negative count makes Counter.inc raise: the chain logs it and goes on
    chain = HookChain([GatewayMetrics()])
    await chain.after_attempt(attempt("broken", CallOutcome.OK, prompt_tokens=-1), None)


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def fail(registry: BreakerRegistry, provider: str) -> None:
    ticket = registry.allow(provider, "m1")
    assert ticket is not None
    registry.record(provider, "m1", ticket, BreakerOutcome.FAILURE)


def test_the_breaker_gauge_follows_a_breaker_opening_probing_and_closing() -> None:
    clock = Clock()
    settings = BreakerSettings(window=2, min_calls=2, failure_rate=0.5, cool_down=10.0)
    registry = BreakerRegistry(settings, clock=clock)
    registry.allow("watched", "m1")  # known, and closed, before the gauge watches
    watch_breakers(registry)

    def state() -> float | None:
        return sample("conveyor_llm_breaker_state", provider="watched", model="m1")

    assert state() == 0
    fail(registry, "watched")
    fail(registry, "watched")
    assert state() == 2  # open
    assert registry.allow("watched", "m1") is None
    clock.now = 10.0
    probe = registry.allow("watched", "m1")
    assert probe is not None and state() == 1  # half-open: this is its probe
    registry.record("watched", "m1", probe, BreakerOutcome.SUCCESS)
    assert state() == 0  # closed again


def test_watching_exports_breakers_already_open() -> None:
    registry = BreakerRegistry(BreakerSettings(window=1, min_calls=1), clock=Clock())
    fail(registry, "early")
    watch_breakers(registry)
    assert sample("conveyor_llm_breaker_state", provider="early", model="m1") == 2


@dataclass
class Lag:
    blocked_events: int = 2
    samples: list[float] = field(default_factory=lambda: [0.3] + [0.001] * 199)


@dataclass
class Options:
    concurrency: int = 64


@dataclass
class WorkerStandIn:
    """What the collector reads of a Worker (the real one needs a database)."""

    stats: Counter[str] = field(default_factory=Counter)
    outcomes_by_queue: Counter[tuple[str, str]] = field(default_factory=Counter)
    queues: tuple[str, ...] = ("q1", "q2")
    in_flight: int = 0
    options: Options = field(default_factory=Options)
    loop_lag: Lag = field(default_factory=Lag)
    unwritten: int = 0
    seconds_since_outcome: float = 0.0
    writes_failing: bool = False
    listening: bool = True


def test_the_worker_collector_reads_the_watched_worker_at_scrape_time() -> None:
    worker = WorkerStandIn()
    watch_worker(worker)
    try:
        assert sample("conveyor_tasks_in_flight") == 0
        # every queue's series are present from the start
        assert sample("conveyor_tasks_total", queue="q2", outcome="dead") == 0
        worker.stats.update(claimed=12, succeeded=9, retried=2)
        worker.outcomes_by_queue.update({("q1", "succeeded"): 7, ("q2", "succeeded"): 2})
        worker.outcomes_by_queue.update({("q1", "retried"): 2})
        worker.in_flight = 3
        assert sample("conveyor_tasks_claimed_total") == 12
        assert sample("conveyor_tasks_total", queue="q1", outcome="succeeded") == 7
        assert sample("conveyor_tasks_total", queue="q2", outcome="succeeded") == 2
        assert sample("conveyor_tasks_total", queue="q1", outcome="retried") == 2
        assert sample("conveyor_tasks_total", queue="q2", outcome="retried") == 0
        assert sample("conveyor_tasks_in_flight") == 3
        assert sample("conveyor_worker_concurrency") == 64
        assert sample("conveyor_worker_free_slots") == 61
        assert sample("conveyor_worker_writes_failing") == 0
        assert sample("conveyor_worker_listening") == 1
        worker.unwritten, worker.seconds_since_outcome, worker.writes_failing = 40, 75.0, True
        assert sample("conveyor_worker_unwritten_outcomes") == 40
        assert sample("conveyor_worker_last_outcome_age_seconds") == 75.0
        assert sample("conveyor_worker_writes_failing") == 1
        assert sample("conveyor_loop_lag_seconds", quantile="0.5") == 0.001
        assert sample("conveyor_loop_lag_seconds", quantile="0.99") == 0.001
        assert sample("conveyor_loop_lag_seconds", quantile="1") == 0.3
        assert sample("conveyor_loop_blocked_total") == 2
    finally:
        unwatch_worker(worker)
    assert sample("conveyor_tasks_in_flight") is None  # no worker: no worker metrics
