"""Every request observed: its log fields bound, one access line, and its server span.

A plain ASGI middleware, outermost, so it sees every answer (a 413 of the body limit, a
problem document, a crash). Per request it:

- binds ``method`` and ``path`` in structlog's context variables, so every line logged
  while the request runs carries them; ``note_caller`` adds ``tenant_id`` and ``key_id``
  once the key is checked;
- opens the server span when the API traces (``ApiTracing``), continuing the caller's
  ``traceparent``; log lines then carry its ``trace_id`` and ``span_id``;
- writes one ``request`` line when the answer has gone out: method, route template, path,
  status, latency in milliseconds, tenant. Probes (``/healthz``, ``/readyz``) log at DEBUG.
"""

from __future__ import annotations

import contextvars
import time
from typing import TYPE_CHECKING, Any

import structlog

from conveyor.api.body_limit import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from conveyor.observability.request_tracing import ApiTracing, RequestSpan

log = structlog.get_logger("conveyor.api")

_PROBES = frozenset({"/healthz", "/readyz", "/livez", "/metrics"})
# The fields of the request being served, for the access line: a dict shared by reference,
# so what a dependency adds is seen by the middleware whatever context it ran in.
_FIELDS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "conveyor_request_fields", default=None
)
_SPAN: contextvars.ContextVar[RequestSpan | None] = contextvars.ContextVar(
    "conveyor_request_span", default=None
)


def note_caller(tenant_id: str | None, key_id: str) -> None:
    """Who is calling: on every later line of this request, its access line and its span."""
    fields = _FIELDS.get()
    if fields is not None:
        fields["key_id"] = key_id
        if tenant_id is not None:
            fields["tenant_id"] = tenant_id
    if tenant_id is not None:
        structlog.contextvars.bind_contextvars(tenant_id=tenant_id, key_id=key_id)
    else:
        structlog.contextvars.bind_contextvars(key_id=key_id)
    span = _SPAN.get()
    if span is not None and tenant_id is not None:
        span.note("conveyor.tenant_id", tenant_id)


class RequestLog:
    """Wraps the ASGI app: log context, access line, server span (``tracing`` None: off)."""

    def __init__(self, app: ASGIApp, tracing: ApiTracing | None = None) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        fields: dict[str, Any] = {}
        _FIELDS.set(fields)
        structlog.contextvars.bind_contextvars(method=method, path=path)
        span = None
        if self.tracing is not None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            span = self.tracing.request_span(method, path, headers)
            _SPAN.set(span)
        status = 500  # what the client sees if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, sending)
        except BaseException as exc:
            error = exc
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            level = log.debug if path in _PROBES else log.info
            level(
                "request",
                route=route,
                status=status,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
                **fields,
            )
            if span is not None:
                span.finish(route, status, error)
            structlog.contextvars.unbind_contextvars("method", "path", "tenant_id", "key_id")
