"""What each API call sends and how its answer is read, with no I/O.

``Client`` and ``AsyncClient`` both send a ``Call`` and hand the response to its
``parse``; so a route is described once, here, and both clients grow together. A new
resource is a module like this one's task functions plus one line per method in each
client.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from conveyor.client.cap_models import CapLimits
from conveyor.client.models import (
    Debounce,
    FollowUp,
    GroupCreate,
    GroupView,
    SignalDelivered,
    TaskBatch,
    TaskBatchCreated,
    TaskCreated,
    TaskPage,
    TaskSubmission,
    TaskView,
)
from conveyor.types import TaskState

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request (safe to repeat: the client may retry it) and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, str | int] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


def new_idempotency_key() -> str:
    """A fresh key for a submit the caller gave none: unique, so retries of this call
    (and only they) find the task it made."""
    return f"cvc-{uuid.uuid4()}"


def submission(
    queue: str,
    payload: Mapping[str, Any] | None = None,
    *,
    priority: int = 5,
    run_at: datetime | None = None,
    delay_seconds: float | None = None,
    max_attempts: int | None = None,
    timeout_seconds: float | None = None,
    idempotency_key: str | None = None,
    group_id: str | None = None,
    debounce: Debounce | None = None,
    caps: CapLimits | None = None,
) -> TaskSubmission:
    """A task to submit, checked here as the server checks it (a bad field raises
    pydantic's ValidationError before anything is sent)."""
    return TaskSubmission(
        queue=queue,
        payload=dict(payload or {}),
        priority=priority,
        run_at=run_at,
        delay_seconds=delay_seconds,
        max_attempts=max_attempts,
        timeout_seconds=timeout_seconds,
        idempotency_key=idempotency_key,
        group_id=group_id,
        debounce=debounce,
        caps=caps,
    )


def submit(task: TaskSubmission, traceparent: str | None = None) -> Call[TaskCreated]:
    """``POST /v1/tasks``; the key goes in the ``Idempotency-Key`` header, made up when
    the task has none (a debounced task carries none: its debounce key dedupes it)."""
    body = task.model_dump(mode="json", exclude_none=True, exclude={"idempotency_key"})
    headers: dict[str, str] = {}
    if task.debounce is None:  # a debounced submit is its own dedupe: the server refuses both
        headers["Idempotency-Key"] = task.idempotency_key or new_idempotency_key()
    if traceparent:
        headers["traceparent"] = traceparent
    return Call("POST", "/v1/tasks", _model(TaskCreated), json=body, headers=headers)


def submit_batch(
    tasks: Iterable[TaskSubmission], traceparent: str | None = None
) -> Call[TaskBatchCreated]:
    """``POST /v1/tasks/batch``; each task without a key gets one (``<batch key>-<i>``),
    so a retried batch finds the tasks its first send made instead of making them again."""
    batch_key = new_idempotency_key()
    keyed = [
        t if t.idempotency_key else t.model_copy(update={"idempotency_key": f"{batch_key}-{i}"})
        for i, t in enumerate(tasks)
    ]
    body = TaskBatch(tasks=keyed).model_dump(mode="json", exclude_none=True)
    headers = {"traceparent": traceparent} if traceparent else {}
    return Call("POST", "/v1/tasks/batch", _model(TaskBatchCreated), json=body, headers=headers)


def get(task_id: int) -> Call[TaskView]:
    """``GET /v1/tasks/{id}``."""
    return Call("GET", f"/v1/tasks/{int(task_id)}", _model(TaskView))


def cancel(task_id: int) -> Call[TaskView]:
    """``POST /v1/tasks/{id}/cancel`` (cancelling twice is cancelling once)."""
    return Call("POST", f"/v1/tasks/{int(task_id)}/cancel", _model(TaskView))


def signal(task_id: int, name: str, payload: Any = None) -> Call[SignalDelivered]:
    """``POST /v1/tasks/{id}/signals/{name}`` with ``payload`` as the body (safe to repeat:
    the same signal again is answered as a duplicate)."""
    return Call(
        "POST",
        f"/v1/tasks/{int(task_id)}/signals/{quote(name, safe='')}",
        _model(SignalDelivered),
        json=payload,
    )


def list_page(
    *,
    state: TaskState | str | None = None,
    queue: str | None = None,
    group_id: str | None = None,
    limit: int = 100,
    cursor: int | None = None,
) -> Call[TaskPage]:
    """``GET /v1/tasks``: one page, newest first."""
    params: dict[str, str | int] = {"limit": limit}
    if state is not None:
        params["state"] = TaskState(state).value
    if queue is not None:
        params["queue"] = queue
    if group_id is not None:
        params["group_id"] = group_id
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/tasks", _model(TaskPage), params=params)


def create_group(
    group_id: str, *, caps: CapLimits | None = None, on_complete: FollowUp | None = None
) -> Call[GroupView]:
    """``POST /v1/groups``: register a campaign, or replace the follow-up and caps of one
    (so a repeat is harmless: the client may retry it)."""
    body = GroupCreate(id=group_id, caps=caps, on_complete=on_complete)
    return Call(
        "POST",
        "/v1/groups",
        _model(GroupView),
        json=body.model_dump(mode="json", exclude_none=True),
    )


def get_group(group_id: str) -> Call[GroupView]:
    """``GET /v1/groups/{id}``: its tasks by state, LLM usage, and caps."""
    return Call("GET", f"/v1/groups/{quote(group_id, safe='')}", _model(GroupView))


M = TypeVar("M", TaskCreated, TaskBatchCreated, TaskView, TaskPage, GroupView, SignalDelivered)


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        return model.model_validate_json(response.content)

    return parse
