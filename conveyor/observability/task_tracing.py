"""The worker's spans: a claim and a run per attempt, one per durable step, as a TaskHook.

Each attempt parents on the ``traceparent`` stored with the task at submit (the API's
enqueue span when the API traces), so every attempt of a task, retries included, lands in
the submitter's trace::

    send <queue>  (API)
    ├── claim <queue>        attempt 1: from submit to claim; later ones: the claim itself
    │   └── run <queue>      the attempt: handler, hooks, steps, LLM calls
    │       ├── step <name>  ctx.step / ctx.once / ctx.once_in_transaction
    │       │   └── chat <model>   (llm_tracing.py)
    └── claim <queue>        attempt 2 ...

The run span is the current span while the handler runs (in a thread too: the worker
copies the context), so an agent's own OpenTelemetry spans are its children. A task
submitted without a ``traceparent`` starts a trace of its own. An isolated handler's steps
and calls happen in its child process, which is not traced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from conveyor.app import CallNext, StepInfo, TaskHook
from conveyor.errors import Cancel, Snooze, TaskSuspended
from conveyor.observability.redaction import redact_text

if TYPE_CHECKING:
    from conveyor.worker.context import TaskContext

__all__ = ["TaskTracing", "carrier_of_current", "context_from_carrier"]

_W3C = TraceContextTextMapPropagator()
# Outcomes a handler raises on purpose that are not failures of the run (a wait for a
# signal ends the run too: the task runs again when the signal comes).
_NOT_FAILURES = (Snooze, Cancel, TaskSuspended)


def context_from_carrier(carrier: Mapping[str, str] | None) -> Context:
    """The OpenTelemetry context of a stored ``traceparent``/``tracestate`` (an empty
    context, so a new trace, when there is none or it does not parse)."""
    return _W3C.extract(dict(carrier)) if carrier else Context()


def carrier_of_current() -> dict[str, str]:
    """The current span's ``traceparent`` (and ``tracestate``) as W3C headers."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


class TaskTracing(TaskHook):
    """Claim, run and step spans for every task of a worker (``Worker(hooks=[...])``)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    async def around_task(self, ctx: TaskContext, call_next: CallNext) -> Any:
        """Run the attempt inside its claim and run spans."""
        info = ctx.task
        parent = context_from_carrier(ctx.trace_context)
        # The first attempt's claim span covers its wait in the queue; a retry's would
        # overlap the attempts before it, so it marks the claim alone. It carries only what
        # places it: each attribute costs building, and again encoding on the exporter's
        # thread; the run span has the task's.
        start = int(ctx.enqueued_at.timestamp() * 1e9) if info.attempt <= 1 else None
        claim = self.tracer.start_span(
            f"claim {info.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.operation.type": "receive",
                "messaging.destination.name": info.queue,
                "conveyor.task.attempt": info.attempt,
            },
            start_time=start,
        )
        claim.end()
        under_claim = trace.set_span_in_context(claim, parent)
        if not claim.get_span_context().trace_flags.sampled:
            # Not sampled: nothing under it is exported, so the claim's context is carried
            # alone (its children decide as they would under a run span), at half the cost.
            token = otel_context.attach(under_claim)
            try:
                return await call_next()
            finally:
                otel_context.detach(token)
        attributes: dict[str, str | int] = {
            "messaging.system": "conveyor",
            "messaging.operation.type": "process",
            "messaging.destination.name": info.queue,
            "messaging.message.id": str(info.id),
            "conveyor.task.id": info.id,
            "conveyor.tenant_id": info.tenant_id,
            "conveyor.task.attempt": info.attempt,
            "conveyor.task.max_attempts": info.max_attempts,
        }
        if info.group_id is not None:
            attributes["conveyor.group_id"] = info.group_id
        with self.tracer.start_as_current_span(
            f"run {info.queue}",
            context=under_claim,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await call_next()
            except BaseException as exc:
                _mark(span, exc)
                raise

    async def around_step(self, ctx: TaskContext, step: StepInfo, call_next: CallNext) -> Any:
        """Run one step or effect inside its span (a child of the run, or of a step)."""
        with self.tracer.start_as_current_span(
            f"{step.kind} {step.name}",
            attributes={"conveyor.step.kind": step.kind, "conveyor.step.name": step.name},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await call_next()
            except BaseException as exc:
                _mark(span, exc)
                raise
            finally:
                span.set_attribute("conveyor.step.replayed", step.replayed)


def _mark(span: trace.Span, exc: BaseException) -> None:
    """Record how a run or step ended by raising: an error, or an outcome asked for."""
    span.set_attribute("conveyor.outcome", type(exc).__name__)
    if isinstance(exc, _NOT_FAILURES):
        return
    message = redact_text(str(exc))
    span.record_exception(exc, attributes={"exception.message": message})
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"[:500]))
