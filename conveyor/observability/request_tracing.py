"""The API's spans: a server span per request, and the enqueue span whose context a task keeps.

The API's middleware (``conveyor/api/request_log.py``) opens ``request_span`` for every
request, continuing the caller's W3C ``traceparent`` when it sent one; a submit route opens
``enqueue`` inside it. The ``traceparent`` stored on the task row is the enqueue span's
own, so the worker's claim and run spans of every attempt become its children: one trace
from the request to the LLM call. With tracing off the API stores the caller's
``traceparent`` unchanged (``conveyor/api/traceparent.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["ApiTracing", "EnqueueSpan", "RequestSpan"]

_W3C = TraceContextTextMapPropagator()


class RequestSpan:
    """One request's server span, current until ``finish`` (call both on one task)."""

    __slots__ = ("_span", "_token", "method")

    def __init__(self, tracer: trace.Tracer, method: str, path: str, headers: Mapping[str, str]):
        self.method = method
        parent = _W3C.extract(dict(headers)) if "traceparent" in headers else None
        self._span = tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def note(self, name: str, value: str | int) -> None:
        """Add an attribute (the tenant, once the caller is known)."""
        self._span.set_attribute(name, value)

    def finish(self, route: str | None, status: int, error: BaseException | None = None) -> None:
        """Name the span by its route template and end it with the response's status."""
        if route is not None:
            self._span.update_name(f"{self.method} {route}")
            self._span.set_attribute("http.route", route)
        self._span.set_attribute("http.response.status_code", status)
        if error is not None:
            self._span.record_exception(error)
        if status >= 500:
            self._span.set_status(Status(StatusCode.ERROR))
            self._span.set_attribute("error.type", str(status))
        self._span.end()
        otel_context.detach(self._token)


class ApiTracing:
    """The API process's tracer, as its middleware and submit routes use it."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def request_span(self, method: str, path: str, headers: Mapping[str, str]) -> RequestSpan:
        """Open the server span of a request (``headers`` lower-cased, as ASGI gives them)."""
        return RequestSpan(self.tracer, method, path, headers)

    @contextmanager
    def enqueue(self, queue: str, tenant_id: str, count: int = 1) -> Iterator[EnqueueSpan]:
        """A ``send <queue>`` producer span around a submit; its ``carrier`` holds the
        ``traceparent`` (and ``tracestate``) the submitted tasks are to keep."""
        attributes: dict[str, str | int] = {
            "messaging.system": "conveyor",
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "conveyor.tenant_id": tenant_id,
        }
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        with self.tracer.start_as_current_span(
            f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            _W3C.inject(carrier)
            yield EnqueueSpan(span, carrier)


class EnqueueSpan:
    """An open enqueue span: the W3C headers to store, and a way to name the task made."""

    __slots__ = ("_span", "carrier")

    def __init__(self, span: trace.Span, carrier: dict[str, str]) -> None:
        self._span = span
        self.carrier = carrier
        """``traceparent`` (and ``tracestate``) of this span: what the task row keeps."""

    def created(self, task_id: int) -> None:
        """Record the id of the task the submit made (or found)."""
        self._span.set_attribute("messaging.message.id", str(task_id))
