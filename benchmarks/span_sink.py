"""A local stand-in for an OpenTelemetry collector, for benchmarks: it accepts OTLP/HTTP
``POST /v1/traces``, decodes each request (as a collector would) and counts the spans.

The workers' exporter sends real requests over loopback, so a run with tracing on pays
what it would pay against a collector on the same host: building the spans, the batch
processor's thread, protobuf encoding and the HTTP round trips.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# A batch processor sized for tens of thousands of spans a second: the SDK's defaults
# (a queue of 2,048 exported every 5 s) drop spans at this rate, and drops are not free
# either. docs/observability.md says how to size it.
BATCH_ENV = {
    "OTEL_BSP_MAX_QUEUE_SIZE": "200000",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8192",
    "OTEL_BSP_SCHEDULE_DELAY": "500",
}


class SpanSink:
    """``with SpanSink() as sink:`` serves on a free port; ``sink.spans`` counts so far."""

    def __init__(self) -> None:
        self.spans = 0
        self.requests = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                count = sum(
                    len(scope.spans)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                )
                with sink._lock:
                    sink.spans += count
                    sink.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def worker_env(self, ratio: float | None = None) -> dict[str, str]:
        """What a worker process needs to export its spans here (``ratio``: sample that
        share of the traces that start in it)."""
        sampling = (
            {}
            if ratio is None
            else {
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": str(ratio),
            }
        )
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            **BATCH_ENV,
            **sampling,
        }

    def __enter__(self) -> SpanSink:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
