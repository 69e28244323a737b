"""OpenTelemetry tracing of a process, configured only by the standard ``OTEL_*`` variables.

Off unless asked for: with no ``OTEL_TRACES_EXPORTER`` and no OTLP endpoint in the
environment, ``tracing_from_env`` returns None, no tracer provider is installed, and the
roots register no tracing hook, so a run pays nothing. It is on when either is set:

- ``OTEL_TRACES_EXPORTER``: ``otlp`` (OTLP over HTTP/protobuf, the ``conveyor[otlp]``
  extra), ``console`` (one JSON object per span on stdout), ``none``; comma-separated
  for several;
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) alone means ``otlp``;
- ``OTEL_SDK_DISABLED=true`` turns it off whatever else is set.

The SDK reads the rest itself: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
(the service defaults to ``conveyor-worker`` or ``conveyor-api``), ``OTEL_TRACES_SAMPLER``
and its argument (default: parent-based, always on), ``OTEL_BSP_*`` for the batch
processor, ``OTEL_EXPORTER_OTLP_*`` (headers, timeout, compression) for the exporter.
Spans leave through a batch processor on its own thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import structlog
from opentelemetry import trace

from conveyor.errors import ConfigurationError

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["TRACER_NAME", "Tracing", "tracing_from_env"]

log = structlog.get_logger("conveyor.tracing")

TRACER_NAME = "conveyor"
"""The instrumentation scope of every span Conveyor makes."""

_EXPORTERS = ("otlp", "console", "none")


class Tracing:
    """A process's tracer provider and the tracer Conveyor's hooks use; ``shutdown`` flushes.

    Built by ``tracing_from_env`` (or from a provider of your own, as tests do with an
    in-memory exporter); the roots hand ``tracer`` to the hooks explicitly.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: trace.Tracer = provider.get_tracer(TRACER_NAME)

    def shutdown(self) -> None:
        """Export what is still buffered and stop the exporters (blocks: call off the loop)."""
        self.provider.shutdown()


def tracing_from_env(
    environ: Mapping[str, str], service_name: str, *, install: bool = True
) -> Tracing | None:
    """The process's tracing as the ``OTEL_*`` variables ask, or None when they do not.

    ``install`` makes the provider the process's global one, so spans an agent makes with
    ``opentelemetry.trace.get_tracer(...)`` join the task's trace. Raises
    ConfigurationError naming the variable when it asks for what cannot be done.
    """
    exporters = exporter_names(environ)
    if not exporters:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    for exporter in _exporters(exporters):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if install:
        trace.set_tracer_provider(provider)
    log.info(
        "tracing_on",
        exporters=list(exporters),
        service=resource.attributes.get(SERVICE_NAME),
    )
    return Tracing(provider)


def exporter_names(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The exporters the environment asks for; empty when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not raw:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ("otlp",) if endpoint and endpoint.strip() else ()
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    unknown = [n for n in names if n not in _EXPORTERS]
    if unknown:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={raw!r}: {', '.join(unknown)} is not an exporter Conveyor "
            f"knows; use {', '.join(_EXPORTERS)} (comma-separated for several)"
        )
    return tuple(n for n in names if n != "none")


def _exporters(names: Sequence[str]) -> list[SpanExporter]:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    made: list[SpanExporter] = []
    for name in names:
        if name == "console":
            made.append(ConsoleSpanExporter())
            continue
        try:  # the optional extra: conveyor[otlp]
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigurationError(
                "OTEL_TRACES_EXPORTER=otlp (or an OTEL_EXPORTER_OTLP_ENDPOINT) needs the OTLP "
                "exporter: pip install 'conveyor[otlp]', or set OTEL_TRACES_EXPORTER=console"
            ) from None
        made.append(OTLPSpanExporter())
    return made
