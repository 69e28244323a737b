"""The current trace's id, for metric exemplars: the one place metrics read tracing.

An exemplar ties a sample (a slow task, a slow request) to the trace that shows why. The id
is read from OpenTelemetry's current span; with no tracing configured (or the SDK not
installed) there is no recording span, and no exemplar.
"""

from __future__ import annotations

try:
    from opentelemetry import trace as _trace
except ImportError:  # tracing is optional: no SDK, no exemplars
    _trace = None  # type: ignore[assignment]

__all__ = ["current_trace_id", "trace_exemplar"]


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits; None without a valid, sampled span."""
    if _trace is None:
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return format(context.trace_id, "032x")


def trace_exemplar() -> dict[str, str] | None:
    """``{"trace_id": ...}`` for ``observe(value, exemplar)``/``inc(1, exemplar)``; None
    without a trace (prometheus_client then records no exemplar)."""
    trace_id = current_trace_id()
    return None if trace_id is None else {"trace_id": trace_id}
