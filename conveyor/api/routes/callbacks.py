"""External runtimes report here: ``/v1/tasks/{id}/result``, ``/progress`` and
``/heartbeat``, authenticated by the callback token of the task's delivery (not an API key).

The token says whose task it is, so these routes need no tenant key; a token admits only
its own task's attempt (another task's id is refused as a wrong token). Refusals are
problem documents: 401 a token that is not this task's, 403 one past its deadline, 409 a
result already reported with it (or a task that finished meanwhile). See docs/api.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field

from conveyor.api.dependencies import Services
from conveyor.api.problems import Problem, problem_responses
from conveyor.api.routes.tasks import TaskId, signal_payload
from conveyor.core.waits import MAX_WAIT_SECONDS
from conveyor.core.webhooks import TOKEN_PREFIX, parse_report
from conveyor.errors import CallbackRefused, SignalRefused
from conveyor.types import TaskState

router = APIRouter(
    prefix="/v1/tasks",
    tags=["callbacks"],
    responses=problem_responses(401, 403, 404, 409, 422),
)
_STATUS = {"invalid": 401, "expired": 403, "used": 409}
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="conveyor-callback"'}


class ResultAccepted(BaseModel):
    """The result was recorded; the task resumes (or will, when it gets to wait)."""

    task_id: int
    attempt: int
    state: TaskState
    resumed: bool


class ProgressAccepted(BaseModel):
    """The progress report was logged as a ``progress`` event of the task."""

    task_id: int
    attempt: int


class HeartbeatBody(BaseModel):
    """How far to move the callback deadline: ``extend_seconds`` from now (default: the
    agent's callback timeout), never past the delivery's longest wait."""

    extend_seconds: float | None = Field(default=None, gt=0, le=MAX_WAIT_SECONDS)


class HeartbeatAccepted(BaseModel):
    """The task's callback deadline now."""

    task_id: int
    deadline: datetime


Authorization = Annotated[str | None, Header(description="Bearer <callback token>")]


@router.post(
    "/{task_id}/result",
    response_model=ResultAccepted,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": '{"status": "succeeded", "result": <JSON>} or {"status": "failed", '
            '"error": "<message>", "retryable": false}',
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def report_result(
    task_id: TaskId, svc: Services, request: Request, authorization: Authorization = None
) -> ResultAccepted:
    """The external runtime's result for the task's current delivery; the token is used up."""
    token = _token(authorization)
    try:
        report = parse_report(signal_payload(await request.body()))
    except ValueError as exc:
        raise Problem(422, "validation", f"body: {exc}") from None
    try:
        found, delivery = await svc.store.report_callback(token, task_id, report.as_signal())
    except CallbackRefused as exc:
        raise _refused(exc) from None
    except SignalRefused as exc:
        raise Problem(409, "signal-refused", str(exc), task_id=task_id, reason=exc.reason) from None
    return ResultAccepted(
        task_id=task_id, attempt=found.attempt, state=delivery.state, resumed=delivery.resumed
    )


@router.post("/{task_id}/progress", status_code=202, response_model=ProgressAccepted)
async def report_progress(
    task_id: TaskId, svc: Services, request: Request, authorization: Authorization = None
) -> ProgressAccepted:
    """A progress report (any JSON), logged as the task's ``progress`` event."""
    token = _token(authorization)
    data = signal_payload(await request.body())
    try:
        found = await svc.store.callback_progress(token, task_id, data)
    except CallbackRefused as exc:
        raise _refused(exc) from None
    return ProgressAccepted(task_id=task_id, attempt=found.attempt)


@router.post("/{task_id}/heartbeat", response_model=HeartbeatAccepted)
async def heartbeat(
    task_id: TaskId,
    svc: Services,
    authorization: Authorization = None,
    body: HeartbeatBody | None = None,
) -> HeartbeatAccepted:
    """Keep the task's wait alive: the callback deadline moves, bounded (docs/api.md)."""
    token = _token(authorization)
    extend = body.extend_seconds if body is not None else None
    try:
        deadline = await svc.store.callback_heartbeat(token, task_id, extend)
    except CallbackRefused as exc:
        raise _refused(exc) from None
    return HeartbeatAccepted(task_id=task_id, deadline=deadline)


def _token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
        raise Problem(
            401,
            "unauthorized",
            "a callback needs 'Authorization: Bearer <callback token>', the token of the "
            "task's delivery (callback.token)",
            headers=_CHALLENGE,
        )
    return token


def _refused(exc: CallbackRefused) -> Problem:
    status = _STATUS.get(exc.reason, 401)
    headers = _CHALLENGE if status == 401 else None
    return Problem(
        status,
        "callback-refused",
        str(exc),
        headers=headers,
        task_id=exc.task_id,
        reason=exc.reason,
    )
