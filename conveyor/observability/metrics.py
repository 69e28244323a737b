"""Prometheus metrics of the LLM gateway, and the endpoint that serves every metric.

Everything is registered on ``REGISTRY``, a registry of Conveyor's own rather than
prometheus_client's global default, so tests read exact values from it and an embedding
application's metrics never mix with ours. Two hooks feed the gateway's metrics:

- ``MetricsRecorder`` is a ``CallRecorder`` that counts every attempt, then hands the
  record on to the recorder it wraps (accounting keeps working unchanged);
- ``watch_breakers`` mirrors each (provider, model) breaker's state in a gauge.

Labels stay bounded: provider, model and outcome only, never a tenant or a task.
``docs/metrics.md`` lists every metric; ``worker_metrics`` adds the worker's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from conveyor.core.breaker import BreakerState
from conveyor.core.llm_errors import FailureKind
from conveyor.errors import ConfigurationError

if TYPE_CHECKING:
    # Types only: the gateway imports this module to install the recorder, and importing
    # conveyor.gateway here at run time would run its __init__ first and make a cycle.
    from conveyor.gateway.accounting.records import CallRecord, CallRecorder
    from conveyor.gateway.breakers import BreakerRegistry

__all__ = ["REGISTRY", "MetricsRecorder", "serve_metrics", "watch_breakers"]

log = structlog.get_logger("conveyor.metrics")

REGISTRY = CollectorRegistry()
"""Every Conveyor metric of this process; what ``serve_metrics`` exposes."""

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

# CallOutcome values of attempts that sent nothing (so their latency is not a call's).
# Strings, not CallOutcome members: see the TYPE_CHECKING import above.
_NOT_SENT = frozenset({"circuit_open", "budget_refused", "cached"})
_RATE_LIMITED = FailureKind.RATE_LIMITED.value  # CallOutcome.RATE_LIMITED: an HTTP 429

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


class MetricsRecorder:
    """A ``CallRecorder`` that counts each attempt in the metrics, then passes it to ``inner``.

    ``inner`` is the recorder it wraps (``CallLog``, ``CallCounters``), or None to only count.
    A failure to count is logged and never keeps the record from ``inner``.
    """

    def __init__(self, inner: CallRecorder | None = None) -> None:
        self.inner = inner

    async def record(self, record: CallRecord) -> None:
        """Count ``record``, then hand it to ``inner``."""
        try:
            _observe(record)
        except Exception:  # a broken metric must not lose the accounting record
            log.exception("llm_metrics_failed")
        if self.inner is not None:
            await self.inner.record(record)


def _observe(record: CallRecord) -> None:
    provider, model = record.provider, record.model
    calls.labels(provider, model, record.outcome.value).inc()
    tokens.labels(provider, model, "prompt").inc(record.prompt_tokens)
    tokens.labels(provider, model, "completion").inc(record.completion_tokens)
    if record.outcome not in _NOT_SENT:
        call_seconds.labels(provider, model).observe(record.latency)
    if record.ttft is not None:
        ttft_seconds.labels(provider, model).observe(record.ttft)
    if record.outcome == _RATE_LIMITED:
        rate_limited.labels(provider).inc()


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


def serve_metrics(port: int, host: str = "0.0.0.0") -> WSGIServer:
    """Serve ``REGISTRY`` at ``http://host:port/metrics`` from a daemon thread.

    Port 0 takes a free port (read it from ``server.server_port``). To stop, call
    ``server.shutdown()`` (it blocks up to half a second) then ``server.server_close()``.
    Raises ``ConfigurationError`` when the address cannot be bound.
    """
    try:
        server, _thread = start_http_server(port, host, registry=REGISTRY)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): "
            "choose a free port for --metrics-port, or an address of this machine for "
            "--metrics-host"
        ) from exc
    log.info("metrics_serving", host=host, port=server.server_port)
    return server
