"""The registry every Conveyor metric lives on, and the endpoint that serves it.

``REGISTRY`` is a registry of Conveyor's own rather than prometheus_client's global default,
so tests read exact values from it and an embedding application's metrics never mix with
ours. ``gateway_metrics`` adds the LLM gateway's (a plugin on its hooks), ``worker_metrics``
the worker's. Labels stay bounded: never a tenant or a task. ``docs/metrics.md`` lists
every metric.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, start_http_server

from conveyor.errors import ConfigurationError

__all__ = ["REGISTRY", "serve_metrics"]

log = structlog.get_logger("conveyor.metrics")

REGISTRY = CollectorRegistry()
"""Every Conveyor metric of this process; what ``serve_metrics`` exposes."""


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
