"""The Python client's errors: an API problem document as the matching Conveyor error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.errors.base import (
    ConveyorError,
    DatabaseUnavailable,
    InvalidTask,
    PlanViolation,
    QuotaExceeded,
    SignalRefused,
    TaskNotFound,
    UndeclaredQueue,
    UnknownTenant,
)


class ApiError(ConveyorError):
    """The HTTP API refused a request with an RFC 9457 problem document.

    ``status`` is the HTTP status, ``type`` the problem type
    (``urn:conveyor:problem:validation``), ``detail`` what went wrong, ``errors`` one entry
    per wrong field of a validation problem, ``retry_after`` the server's ``Retry-After`` in
    seconds (None without one), ``problem`` the whole document. The subclasses below are
    also Conveyor's own error for their problem type, so ``except TaskNotFound`` catches a
    404 of the API as it catches the store's; their own attributes (``task_id``, ``queues``,
    ...) hold what the request and the document say, empty or 0 where they say nothing.
    """

    def __init__(
        self,
        status: int,
        type: str,
        detail: str,
        *,
        errors: Sequence[dict[str, Any]] = (),
        retry_after: float | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        # Not super().__init__: the domain error a subclass mixes in takes other arguments;
        # _domain_fields sets that error's attributes instead.
        Exception.__init__(self, f"HTTP {status} ({type.rpartition(':')[2]}): {detail}")
        self.status = status
        self.type = type
        self.detail = detail
        self.errors = list(errors)
        self.retry_after = retry_after
        self.problem = problem or {}
        self._domain_fields(self.problem)

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        """Set the attributes of the Conveyor error a subclass also is."""


class ApiTaskNotFound(ApiError, TaskNotFound):
    """The API answered 404: no such task for the key's tenant (``task_id`` from the path)."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        last = str(problem.get("instance", "")).rstrip("/").split("/")
        numbers = [part for part in last if part.isdigit()]
        self.task_id = int(numbers[-1]) if numbers else 0


class ApiInvalidTask(ApiError, InvalidTask):
    """The API refused the submission as malformed (422); ``errors`` names the fields."""


class ApiUndeclaredQueue(ApiError, UndeclaredQueue):
    """The API refused a task for a queue nothing serves (422); ``detail`` names it."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.queues = list(problem.get("queues", []))
        self.suggestions = dict(problem.get("suggestions", {}))


class ApiUnknownTenant(ApiError, UnknownTenant):
    """The API refused a task of a tenant that does not exist (422)."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.tenant_ids = list(problem.get("tenant_ids", []))


class ApiPlanViolation(ApiError, PlanViolation):
    """The tenant's plan does not allow the role (403)."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.tenant_id = str(problem.get("tenant_id", ""))
        self.queue = str(problem.get("queue", ""))


class ApiQuotaExceeded(ApiError, QuotaExceeded):
    """The tenant reached a monthly task limit (429 without Retry-After: not retried)."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.tenant_id = str(problem.get("tenant_id", ""))
        self.scope = str(problem.get("scope", ""))
        self.used = int(problem.get("used", 0))
        self.limit = int(problem.get("limit", 0))


class ApiSignalRefused(ApiError, SignalRefused):
    """The API refused a signal (409): the task finished, its wait timed out, or the name
    carried another payload before; ``reason`` says which."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.task_id = int(problem.get("task_id", 0))
        self.name = str(problem.get("signal", ""))
        self.reason = str(problem.get("reason", ""))


class ApiUnavailable(ApiError, DatabaseUnavailable):
    """The API stayed unavailable (429/503 with Retry-After, or no connection) through every
    retry the client allows; ``status`` is 0 when no answer came at all. Retry later."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.retryable = True
