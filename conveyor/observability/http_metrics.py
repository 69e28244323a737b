"""RED metrics of the HTTP API, and its ``/metrics`` endpoint: one ASGI middleware.

The API's composition root (``conveyor/cli/api_root.py``) wraps the app in ``HttpMetrics``;
the API's own code never imports prometheus_client. Per request it counts the route
*template* (``/v1/tasks/{task_id}``, read from the route FastAPI matched: a raw path would
make a series per task), the method and the status class, and observes the duration;
requests in flight are a gauge. ``GET /metrics`` is answered here, in the text format, or
in OpenMetrics (with exemplars carrying the trace id) when the scraper asks for it.

With several server processes (``conveyor api --workers N``) prometheus_client runs in
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set before the processes start, each
writes its samples there, and whichever process answers a scrape adds up all of them
(``render_metrics``). The queue metrics are the answering process's own snapshot (every
process reads the same tables).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from conveyor.observability.metrics import REGISTRY
from conveyor.observability.queue_metrics import COLLECTOR
from conveyor.observability.trace_ids import trace_exemplar

__all__ = ["MULTIPROC_ENV", "HttpMetrics", "process_ended", "render_metrics"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's multiprocess folder; ``conveyor api --workers N`` sets it."""

# Anything else a client sends is counted as "other": a method is not free-form cardinality.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The ``route`` of a request no route matched (a 404 of the router)."""
# API answers take milliseconds; a long poll or an event stream can take minutes.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

requests = Counter(
    "conveyor_http_requests_total",
    "HTTP requests answered by the API, by method, route template and status class.",
    ["method", "route", "status_class"],
    registry=REGISTRY,
)
request_seconds = Histogram(
    "conveyor_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template "
    "(an event stream's whole life).",
    ["method", "route"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
in_flight = Gauge(
    "conveyor_http_requests_in_flight",
    "HTTP requests the API is answering now (open event streams included).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)


def render_metrics(accept: str | None) -> tuple[bytes, str]:
    """This process's metrics (every server process's in multiprocess mode), encoded as
    ``accept`` asks: the body and its content type."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(COLLECTOR)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def process_ended() -> None:
    """In multiprocess mode, drop this process's live gauges (in flight, the pool) from
    the sums the other processes report; nothing otherwise."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class HttpMetrics:
    """Wraps an ASGI app: RED metrics per route template, and ``GET /metrics``."""

    def __init__(self, app: ASGIApp, path: str = "/metrics", token: str | None = None) -> None:
        self.app = app
        self.path = path
        # None: served to anyone who reaches the port (as the worker's metrics are)
        self._authorization = None if token is None else f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        started = time.perf_counter()
        status = 500  # unless the app answers: an error that escaped it
        if scope["path"] == self.path and method in ("GET", "HEAD"):
            route = self.path
            in_flight.inc()
            try:
                status = await self._serve_metrics(scope, send)
            finally:
                in_flight.dec()
                self._observe(method, route, status, started)
            return

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight.inc()
        try:
            await self.app(scope, receive, watched)
        finally:
            in_flight.dec()
            # FastAPI puts the route it matched in the scope (the same dict, updated)
            matched = scope.get("route")
            route = getattr(matched, "path", None) or UNMATCHED
            self._observe(method, route, status, started)

    @staticmethod
    def _observe(method: str, route: str, status: int, started: float) -> None:
        exemplar = trace_exemplar()
        requests.labels(method, route, f"{status // 100}xx").inc(1, exemplar)
        request_seconds.labels(method, route).observe(time.perf_counter() - started, exemplar)

    async def _serve_metrics(self, scope: Scope, send: Send) -> int:
        headers = dict(scope.get("headers") or ())
        if self._authorization is not None and not hmac.compare_digest(
            headers.get(b"authorization", b""), self._authorization
        ):
            body = b"GET /metrics needs Authorization: Bearer <CONVEYOR_METRICS_TOKEN>\n"
            await _answer(
                send, 401, body, "text/plain; charset=utf-8", [(b"www-authenticate", b"Bearer")]
            )
            return 401
        accept = headers.get(b"accept", b"").decode("latin-1")
        body, content_type = render_metrics(accept)
        await _answer(send, 200, b"" if scope["method"] == "HEAD" else body, content_type, [])
        return 200


async def _answer(
    send: Send, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
