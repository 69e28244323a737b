"""The API's request and response bodies, shared by the server and the Python client.

One definition serves both sides, so a field the server accepts is a field the client can
send, and ``/openapi.json`` is generated from the same classes. Unknown fields are refused
(``extra="forbid"``): a misspelt ``prority`` is a 422, not a silently default priority.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
)

from conveyor.client.cap_models import CapLimits, CapsView
from conveyor.core.json_documents import check_document
from conveyor.types import TaskState

QUEUE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MONTH_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])$"
"""A month of 1970-2999, ``YYYY-MM`` (year 0 or 9999 would overflow the month's bounds)."""
TEXT_PATTERN = r"^[^\x00]*$"
"""Free text PostgreSQL can store: anything but the NUL character."""
MAX_BATCH = 10_000

Queue = Annotated[str, Field(pattern=QUEUE_PATTERN, description="The agent role.")]


def _storable_instant(moment: datetime) -> datetime:
    """An instant PostgreSQL and the driver both represent: 1970-2999 UTC."""
    try:
        year = moment.astimezone(UTC).year
    except OverflowError:  # 0001-01-01 east of UTC, 9999-12-31 west of it
        year = moment.year
    if not 1970 <= year <= 2999:
        raise ValueError("must be between 1970 and 2999 (UTC)")
    return moment


def _iso_text(value: object) -> object:
    """Only ISO 8601 text (or a datetime): lax parsing would take ``0.5`` as a Unix time."""
    if isinstance(value, str) and not _ISO_START.match(value):
        raise ValueError("an ISO 8601 date-time with a time zone, e.g. 2026-12-01T00:00:00Z")
    if isinstance(value, int | float):
        raise ValueError("an ISO 8601 date-time with a time zone, not a number")
    return value


_ISO_START = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]")

Instant = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_storable_instant)]
"""A time-zone-aware instant of 1970-2999 (a wider one could not be read back)."""


class Strict(BaseModel):
    """A body that refuses unknown fields and non-finite numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Debounce(Strict):
    """Coalesce a burst of submits: see ``debounce`` of ``TaskSubmission``."""

    key: str = Field(min_length=1, max_length=255, description="The burst's name.")
    seconds: float = Field(
        gt=0, le=86400, description="Run this long after the burst's first submit."
    )


class TaskSubmission(Strict):
    """One task to run."""

    queue: Queue
    payload: dict[str, Any] = Field(default_factory=dict, description="The agent's input.")
    priority: StrictInt = Field(5, ge=1, le=10, description="1 urgent, 5 normal, 10 batch.")
    run_at: Instant | None = Field(None, description="Do not start before this instant.")
    delay_seconds: float | None = Field(
        None, ge=0, le=366 * 86400, description="Do not start before this many seconds."
    )
    max_attempts: StrictInt | None = Field(None, ge=1, le=1000)
    timeout_seconds: float | None = Field(None, ge=0.001, le=7 * 86400)
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        pattern=TEXT_PATTERN,
        description="The same key returns the first task (or the Idempotency-Key header).",
    )
    group_id: str | None = Field(None, min_length=1, max_length=128, pattern=TEXT_PATTERN)
    debounce: Debounce | None = Field(
        None,
        description="While a task of this tenant and queue with the same key waits (not yet "
        "running), replace its payload instead of adding a task; else add one that runs "
        "after `seconds`. Single submits only; not with an idempotency key.",
    )
    caps: CapLimits | None = Field(
        default=None,
        description="Caps on this task's LLM calls, tokens and USD, all its attempts "
        "together. The tightest of these, its role's and its plan's applies.",
    )

    @field_validator("payload")
    @classmethod
    def _storable(cls, payload: dict[str, Any]) -> dict[str, Any]:
        check_document(payload)
        return payload


class TaskBatch(Strict):
    """Up to 10,000 tasks, stored together or not at all."""

    tasks: list[TaskSubmission] = Field(min_length=1, max_length=MAX_BATCH)


class TaskCreated(BaseModel):
    """A submitted task: its id, and False in ``created`` when a key returned an older one
    (``replaced`` True: a debounced submit gave its payload to a waiting task)."""

    id: int
    created: bool
    replaced: bool = False


class TaskBatchCreated(BaseModel):
    """The batch's tasks, in the order submitted."""

    tasks: list[TaskCreated]


class LLMUsageLine(BaseModel):
    """Calls to one (provider, model): counts, tokens and cost."""

    provider: str
    model: str
    calls: int = Field(description="Attempts sent (skips and cache hits not counted).")
    succeeded: int
    failed: int
    cached: int = Field(description="Answered from the response cache.")
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal = Field(description="USD, a decimal string.")
    unpriced: bool = Field(description="Some successful calls had no price: cost is low.")


class LLMUsageSummary(BaseModel):
    """LLM calls, tokens and cost in all, and per (provider, model)."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal = Field(description="USD, a decimal string.")
    unpriced: bool
    by_model: list[LLMUsageLine]


class TaskView(BaseModel):
    """A task as its tenant sees it, running or finished. ``usage`` (its LLM calls, tokens
    and cost so far) is filled when one task is read, not in lists."""

    id: int
    queue: str
    state: TaskState
    priority: int
    attempts: int
    max_attempts: int | None
    payload: dict[str, Any]
    result: Any = None
    last_error: dict[str, Any] | None = None
    idempotency_key: str | None = None
    group_id: str | None = None
    parent_id: int | None = None
    run_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    waiting_for: str | None = Field(
        None, description="The signal a waiting task waits for (state waiting only)."
    )
    wait_until: datetime | None = Field(
        None, description="When a waiting task's wait times out (null: no deadline)."
    )
    usage: LLMUsageSummary | None = None
    caps: CapsView | None = Field(
        default=None,
        description="Its runaway guard, when one task is read and something caps it.",
    )


class SignalDelivered(BaseModel):
    """A signal delivered to a task: ``resumed`` when the task was waiting for it (it runs
    again within a promoter period), ``duplicate`` when this very payload had been
    delivered under the name before (nothing changed)."""

    task_id: int
    signal: str
    state: TaskState = Field(description="The task's state after the delivery.")
    resumed: bool
    duplicate: bool


class TaskPage(BaseModel):
    """A page of tasks, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    tasks: list[TaskView]
    next_cursor: int | None = None


class FollowUp(Strict):
    """The task a group enqueues once, when all its tasks have finished. Its payload gets
    ``_group_id``, the group's id."""

    queue: Queue
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(5, ge=1, le=10)
    max_attempts: StrictInt | None = Field(None, ge=1, le=1000)
    timeout_seconds: float | None = Field(None, ge=0.001, le=7 * 86400)

    @field_validator("payload")
    @classmethod
    def _storable(cls, payload: dict[str, Any]) -> dict[str, Any]:
        check_document(payload)
        return payload


class GroupCreate(Strict):
    """A campaign: tasks submitted with its ``group_id`` belong to it."""

    id: str = Field(min_length=1, max_length=128, pattern=r"^[^/]+$", description="The group's id.")
    on_complete: FollowUp | None = Field(
        None, description="Enqueued once when all the group's tasks have finished."
    )
    caps: CapLimits | None = Field(
        default=None,
        description="Caps on the LLM calls, tokens and USD of all the group's tasks together "
        "(the tightest of these and the plan's applies). Registering the group again "
        "replaces them; left out, they are removed.",
    )


class GroupView(BaseModel):
    """A campaign: its tasks by state, whether it completed, and its LLM usage."""

    id: str
    counts: dict[TaskState, int]
    total: int
    completed_at: datetime | None = None
    follow_up_id: int | None = None
    usage: LLMUsageSummary
    caps: CapsView | None = Field(
        default=None, description="Its runaway guard, if something caps it."
    )


class QueueUsage(BaseModel):
    """A queue's tasks created in the month, by their state now."""

    queue: str
    counts: dict[TaskState, int]
    total: int


class UsageReport(BaseModel):
    """A tenant's month: the tasks it created, and its LLM calls, tokens and cost."""

    tenant_id: str
    month: str = Field(description="YYYY-MM, in UTC.")
    tasks: list[QueueUsage]
    tasks_total: int
    llm: LLMUsageSummary


class FieldError(BaseModel):
    """One wrong field of a validation problem."""

    field: str = Field(description="Dotted path: tasks.3.priority is the fourth task's.")
    location: list[str | int] = Field(description="Where it is: body, query, path, header.")
    message: str


class ProblemDocument(BaseModel):
    """An error, as RFC 9457 ``application/problem+json``; more members may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:conveyor:problem:<kind>, e.g. ...:not-found.")
    title: str
    status: int
    detail: str = Field(description="What went wrong, and what to do about it.")
    instance: str = Field(description="The request's path.")
    errors: list[FieldError] | None = Field(None, description="Validation problems only.")


class Health(BaseModel):
    """``/healthz`` and ``/readyz``."""

    status: str
    detail: str | None = None
