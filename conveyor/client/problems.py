"""The API's problem documents, and httpx's errors, as Conveyor's errors.

A problem's ``type`` picks the class (``urn:conveyor:problem:not-found`` is an
``ApiTaskNotFound``, which is a ``TaskNotFound``); a type the client does not know (a newer
server's) is a plain ``ApiError``, so an older client still raises something precise
enough to act on. A body that is not a problem document (a proxy's HTML page) becomes one
here, from the status line.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from conveyor.errors import (
    ApiError,
    ApiInvalidTask,
    ApiPlanViolation,
    ApiQuotaExceeded,
    ApiSignalRefused,
    ApiTaskNotFound,
    ApiUnavailable,
    ApiUndeclaredQueue,
    ApiUnknownTenant,
)

PREFIX = "urn:conveyor:problem:"

_BY_TYPE: dict[str, type[ApiError]] = {
    "not-found": ApiTaskNotFound,  # on a task's path only: see _class_for
    "validation": ApiInvalidTask,
    "invalid-task": ApiInvalidTask,
    "idempotency-conflict": ApiInvalidTask,
    "undeclared-queue": ApiUndeclaredQueue,
    "unknown-tenant": ApiUnknownTenant,
    "plan-violation": ApiPlanViolation,
    "quota-exceeded": ApiQuotaExceeded,
    "signal-refused": ApiSignalRefused,
    "database-unavailable": ApiUnavailable,
}


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The response's problem document; one made from the status line if it has none."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        return body
    reason = response.reason_phrase or "error"
    return {
        "type": "about:blank",
        "title": reason,
        "status": response.status_code,
        "detail": f"HTTP {response.status_code} {reason} from {response.request.url}",
    }


def api_error(
    response: httpx.Response, *, retry_after: float | None = None, exhausted: bool = False
) -> ApiError:
    """The error for an answer the client will not retry (``exhausted``: any more)."""
    problem = problem_of(response)
    kind = str(problem.get("type", ""))
    short = kind.removeprefix(PREFIX)
    cls = _class_for(short, response.request.url.path)
    if exhausted and cls is ApiError and response.status_code in (429, 503):
        cls = ApiUnavailable  # shed or rate-limited through every retry: come back later
    detail = str(problem.get("detail") or problem.get("title") or "the API refused the request")
    errors = problem.get("errors")
    return cls(
        response.status_code,
        kind,
        detail,
        errors=errors if isinstance(errors, list) else (),
        retry_after=retry_after,
        problem=problem,
    )


def unreachable(exc: httpx.TransportError, request: httpx.Request) -> ApiUnavailable:
    """The error for a request that got no answer through every retry."""
    return ApiUnavailable(
        0,
        PREFIX + "unreachable",
        f"no answer from {request.url.scheme}://{request.url.netloc.decode()} "
        f"({type(exc).__name__}: {exc}); is the API running?",
    )


_TASK_PATH = re.compile(r"^/v1/(tasks|admin/dlq)/[0-9]+(/|$)")


def _class_for(short: str, path: str) -> type[ApiError]:
    """The error class of a problem type; a 404 is a missing *task* only on a task's path
    (a missing group, key or tenant, or an unknown route, is a plain ApiError)."""
    if short == "not-found" and not _TASK_PATH.match(path):
        return ApiError
    return _BY_TYPE.get(short, ApiError)
