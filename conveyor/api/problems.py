"""Errors as RFC 9457 problem details: ``application/problem+json``, never a traceback.

Every error the API answers has ``type``, ``title``, ``status``, ``detail`` (a sentence a
person can act on) and ``instance`` (the request path); validation errors add ``errors``,
one entry per wrong field with its location (``["body", "tasks", 3, "priority"]``: the
fourth task of a batch). Conveyor's own errors map to statuses here, in one table; anything
unexpected is logged with its traceback and answered as a bare 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.client.models import ProblemDocument
from conveyor.errors import (
    ConveyorError,
    DatabaseUnavailable,
    GroupNotFound,
    IdempotencyConflict,
    InvalidSignal,
    InvalidTask,
    PlanViolation,
    QuotaExceeded,
    RefusedValue,
    SchemaNotReady,
    SignalRefused,
    StoreConflict,
    TaskNotFound,
    UndeclaredQueue,
    UnknownTenant,
)

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger("conveyor.api")

# Conveyor's errors by the status and problem type they answer with, most specific first.
_STATUS: Sequence[tuple[type[ConveyorError], int, str]] = (
    (TaskNotFound, 404, "not-found"),
    (GroupNotFound, 404, "not-found"),
    (SignalRefused, 409, "signal-refused"),
    (InvalidSignal, 422, "invalid-signal"),
    (IdempotencyConflict, 422, "idempotency-conflict"),
    (InvalidTask, 422, "invalid-task"),
    (UndeclaredQueue, 422, "undeclared-queue"),
    (UnknownTenant, 422, "unknown-tenant"),
    (PlanViolation, 403, "plan-violation"),
    (QuotaExceeded, 429, "quota-exceeded"),
    (DatabaseUnavailable, 503, "database-unavailable"),
    (StoreConflict, 503, "conflict"),
    (SchemaNotReady, 503, "schema-not-ready"),
    (RefusedValue, 422, "invalid-value"),
)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a router or route: these statuses answer a problem document
    (declared in /openapi.json, so clients and schemathesis know what to expect)."""
    return {
        status: {
            "model": ProblemDocument,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}},
        }
        for status in statuses
    }


V1_STATUSES = (401, 403, 404, 413, 422, 429, 503)
"""What any /v1 route may answer with a problem document (auth, limits, the database)."""


class Problem(Exception):
    """Raise to answer with a problem: ``Problem(409, "idempotency-conflict", "...")``."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    request: Request,
    status: int,
    kind: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The problem document for ``status`` as a response."""
    body = {
        "type": f"urn:conveyor:problem:{kind}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.kind, exc.detail, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_error(e) for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        return problem_response(request, 422, "validation", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's "error parsing the body" (bytes that are not UTF-8 JSON): as
            # malformed JSON is, a 422 naming the body
            message = "the body is not valid JSON in UTF-8"
            errors = [{"field": "body", "location": ["body"], "message": message}]
            return problem_response(request, 422, "validation", f"body: {message}", errors=errors)
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http")
        return problem_response(
            request, exc.status_code, kind, detail, headers=dict(exc.headers or {})
        )

    @app.exception_handler(ConveyorError)
    async def _conveyor(request: Request, exc: ConveyorError) -> JSONResponse:
        for kind_of, status, kind in _STATUS:
            if isinstance(exc, kind_of):
                headers = {"Retry-After": "5"} if status == 503 else None
                return problem_response(request, status, kind, str(exc), headers=headers)
        log.error("request_failed", path=request.url.path, error=str(exc), exc_info=exc)
        return problem_response(request, 500, "internal", "the server failed; retry later")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request_crashed", path=request.url.path, error=str(exc), exc_info=exc)
        return problem_response(request, 500, "internal", "the server failed; retry later")


def _field_error(error: Any) -> dict[str, Any]:
    location = [part for part in error.get("loc", ()) if part != "body"] or ["body"]
    return {
        "field": ".".join(str(part) for part in location),
        "location": list(error.get("loc", ())),
        "message": str(error.get("msg", "invalid")),
    }
