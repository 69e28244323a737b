"""Prometheus metrics of the LLM gateway, fed by two plugins the composition root attaches.

- ``GatewayMetrics`` is an ``LLMHook`` (``conveyor.gateway.hooks``) whose ``after_attempt``
  counts every record the gateway makes;
- ``watch_breakers`` mirrors each (provider, model) breaker's state in a gauge.

The gateway imports neither (``conveyor/cli/worker_root.py`` wires them), and this module is
imported only by a process that has a gateway. Labels stay bounded: provider, model and
outcome only, never a tenant or a task.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from conveyor.core.breaker import BreakerState
from conveyor.gateway.accounting.records import CallOutcome, CallRecord
from conveyor.gateway.breakers import BreakerRegistry
from conveyor.gateway.hooks import AttemptInfo, LLMHook
from conveyor.observability.metrics import REGISTRY

__all__ = ["GatewayMetrics", "observe_call", "watch_breakers"]

BREAKER_STATE_CODES: dict[BreakerState, int] = {
    BreakerState.CLOSED: 0,
    BreakerState.HALF_OPEN: 1,
    BreakerState.OPEN: 2,
}
"""The value of ``conveyor_llm_breaker_state`` for each state (worse is higher)."""

# Attempt latency: a fast completion takes ~50 ms, a long generation up to two minutes.
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0)
# Time to first token: tens of milliseconds when warm, tens of seconds for a queued model.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

# Outcomes of attempts that sent nothing (so their latency is not a call's).
_NOT_SENT = frozenset({CallOutcome.CIRCUIT_OPEN, CallOutcome.BUDGET_REFUSED, CallOutcome.CACHED})

breaker_state = Gauge(
    "conveyor_llm_breaker_state",
    "Circuit breaker state of (provider, model): 0 closed, 1 half-open, 2 open.",
    ["provider", "model"],
    registry=REGISTRY,
)
calls = Counter(
    "conveyor_llm_calls_total",
    "LLM attempts by how they ended (ok, rate_limited, server_error, transport, timeout, "
    "permanent, circuit_open, budget_refused, abandoned, cached).",
    ["provider", "model", "outcome"],
    registry=REGISTRY,
)
tokens = Counter(
    "conveyor_llm_tokens_total",
    "Tokens of LLM attempts (the provider's counts, else the gateway's estimate).",
    ["provider", "model", "direction"],
    registry=REGISTRY,
)
call_seconds = Histogram(
    "conveyor_llm_call_seconds",
    "Latency of LLM attempts that were sent, whatever their outcome.",
    ["provider", "model"],
    buckets=CALL_BUCKETS,
    registry=REGISTRY,
)
ttft_seconds = Histogram(
    "conveyor_llm_ttft_seconds",
    "Time from sending an LLM attempt to its first token.",
    ["provider", "model"],
    buckets=TTFT_BUCKETS,
    registry=REGISTRY,
)
rate_limited = Counter(
    "conveyor_llm_rate_limited_total",
    "HTTP 429 replies from an LLM provider.",
    ["provider"],
    registry=REGISTRY,
)
http_errors = Counter(
    "conveyor_llm_http_errors_total",
    "Error replies (HTTP status 400 and above: 429, 5xx, ...) from an LLM provider, by status.",
    ["provider", "status"],
    registry=REGISTRY,
)


class GatewayMetrics(LLMHook):
    """The gateway's Prometheus metrics, as a plugin: counts each record after it settles.

    ``Gateway(config, hooks=[GatewayMetrics()])``; the gateway logs and swallows a failure
    here, so a broken metric never fails a call or loses its accounting record.
    """

    async def after_attempt(self, record: CallRecord, attempt: AttemptInfo | None) -> None:
        """Count ``record`` in the LLM metrics."""
        observe_call(record)


def observe_call(record: CallRecord) -> None:
    """Count one attempt's record in the LLM metrics."""
    provider, model = record.provider, record.model
    calls.labels(provider, model, record.outcome.value).inc()
    tokens.labels(provider, model, "prompt").inc(record.prompt_tokens)
    tokens.labels(provider, model, "completion").inc(record.completion_tokens)
    if record.outcome not in _NOT_SENT:
        call_seconds.labels(provider, model).observe(record.latency)
    if record.ttft is not None:
        ttft_seconds.labels(provider, model).observe(record.ttft)
    if record.outcome is CallOutcome.RATE_LIMITED:
        rate_limited.labels(provider).inc()
    if record.status is not None and record.status >= 400:
        http_errors.labels(provider, str(record.status)).inc()


def watch_breakers(registry: BreakerRegistry) -> None:
    """Export every breaker of ``registry`` in ``conveyor_llm_breaker_state``, kept current.

    Sets the states known now and follows every later change. A change is seen when the
    registry notices it: an open breaker shows half-open once its target is next called.
    """
    for (provider, model), state in registry.states().items():
        _set_breaker_state(provider, model, state)
    registry.on_change(_set_breaker_state)


def _set_breaker_state(provider: str, model: str, state: BreakerState) -> None:
    breaker_state.labels(provider, model).set(BREAKER_STATE_CODES[state])
