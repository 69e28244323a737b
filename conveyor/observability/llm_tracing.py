"""A span per LLM attempt, with the GenAI semantic conventions, as a gateway plugin.

``before_attempt`` opens a client span ``chat <model>`` under the current span (a step,
or the task's run) and puts its ``traceparent`` on the attempt's headers, so the provider,
if it traces, continues the same trace; ``after_attempt`` closes it with what the record
says: tokens, finish reason, the model that answered, the outcome. A record of something
never sent (an open breaker, a budget refusal, a cached reply) gets a span of its own with
no time, so the trace shows why no request went out.

Attributes follow OpenTelemetry's GenAI conventions (``gen_ai.operation.name`` "chat",
``gen_ai.provider.name`` and the older ``gen_ai.system``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
``gen_ai.response.finish_reasons``), plus ``conveyor.llm.*`` for the gateway's own facts.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from conveyor.gateway.accounting.records import CallOutcome, CallRecord
from conveyor.gateway.hooks import AttemptInfo, LLMHook
from conveyor.observability.redaction import redact_text

__all__ = ["LLMTracing"]

_W3C = TraceContextTextMapPropagator()
MAX_OPEN = 10_000
"""Spans of attempts not yet settled kept at most; the oldest beyond it are ended as lost
(an attempt the gateway never settled, which a cancelled hook could cause)."""


class LLMTracing(LLMHook):
    """``Gateway(config, hooks=[LLMTracing(tracer)])``: a span per attempt."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._open: dict[AttemptInfo, trace.Span] = {}

    async def before_attempt(self, attempt: AttemptInfo) -> None:
        """Open the attempt's span and hand its ``traceparent`` to the provider."""
        target = attempt.target
        span = self.tracer.start_span(
            f"chat {target.model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": target.provider,
                "gen_ai.system": target.provider,
                "gen_ai.request.model": target.model,
                "conveyor.llm.requested": attempt.requested,
                "conveyor.llm.attempt": attempt.number,
                "conveyor.llm.ordinal": attempt.ordinal,
                "conveyor.llm.stream": attempt.stream,
            },
        )
        if len(self._open) >= MAX_OPEN:
            lost = self._open.pop(next(iter(self._open)))
            lost.set_status(Status(StatusCode.ERROR, "the attempt was never settled"))
            lost.end()
        self._open[attempt] = span
        _W3C.inject(attempt.headers, context=trace.set_span_in_context(span))

    async def after_attempt(self, record: CallRecord, attempt: AttemptInfo | None) -> None:
        """Close the attempt's span with what its record says."""
        span = self._open.pop(attempt, None) if attempt is not None else None
        if span is None:  # nothing was sent: a span of no length says why
            span = self.tracer.start_span(
                f"chat {record.model}",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": record.provider,
                    "gen_ai.system": record.provider,
                    "gen_ai.request.model": record.model,
                    "conveyor.llm.requested": record.requested,
                    "conveyor.llm.attempt": record.attempt,
                },
            )
        span.set_attribute("conveyor.llm.outcome", record.outcome.value)
        span.set_attribute("gen_ai.usage.input_tokens", record.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", record.completion_tokens)
        span.set_attribute("conveyor.llm.usage_estimated", record.usage_estimated)
        span.set_attribute("gen_ai.response.model", record.response_model or record.model)
        if record.finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [record.finish_reason])
        if record.status is not None:
            span.set_attribute("http.response.status_code", record.status)
        if record.ttft is not None:
            span.set_attribute("conveyor.llm.ttft_seconds", record.ttft)
        if record.outcome not in (CallOutcome.OK, CallOutcome.CACHED):
            span.set_attribute("error.type", record.outcome.value)
            span.set_status(Status(StatusCode.ERROR, redact_text(record.error or "")[:500]))
        span.end()
