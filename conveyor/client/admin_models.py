"""The admin routes' request and response bodies (``/v1/admin/...``), shared by the server
and the Python client, like ``models.py``: unknown fields are refused, and in an update a
field left out keeps its value."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field

from conveyor.client.cap_models import CapLimits
from conveyor.client.models import Queue, Strict

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class TenantWrite(Strict):
    """Create a tenant, or change the fields given of an existing one."""

    name: str | None = Field(None, min_length=1, max_length=200)
    weight: float | None = Field(None, gt=0, le=1_000_000, description="Fair share (1).")
    plan: str | None = Field(None, min_length=1, max_length=64, description="A plan's id.")


class TenantView(BaseModel):
    """A tenant."""

    id: str
    name: str
    weight: float
    plan_id: str | None
    created_at: datetime


class TenantList(BaseModel):
    """Every tenant, by id."""

    tenants: list[TenantView]


class KeyCreate(Strict):
    """A key for a tenant (``tenant_id``) or an admin key (``admin`` true): one of them."""

    tenant_id: str | None = Field(None, pattern=TENANT_PATTERN)
    admin: bool = False
    name: str = Field("", max_length=200, description="A label for listings.")


class KeyView(BaseModel):
    """An API key as listed: never its secret."""

    id: str
    tenant_id: str | None
    admin: bool
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


class KeyCreated(KeyView):
    """A new key: ``token`` is shown this once and cannot be read again."""

    token: str


class KeyList(BaseModel):
    """Keys, newest first."""

    keys: list[KeyView]


class StartRate(Strict):
    """At most ``limit`` task starts per ``interval_seconds``, shared by every worker."""

    limit: int = Field(ge=1, le=INT32_MAX)
    interval_seconds: float = Field(gt=0, le=366 * 86400)


class PlanView(BaseModel):
    """A plan: the roles it allows (None: any) and its limits (None: no limit)."""

    id: str
    name: str
    allowed_roles: list[str] | None
    max_concurrent_per_role: int | None
    monthly_task_limit: int | None
    monthly_token_budget: int | None
    weight: float
    start_rate: StartRate | None = None
    llm_requests_per_minute: int | None = None
    llm_tokens_per_minute: int | None = None
    monthly_spend_limit: Decimal | None = Field(None, description="USD, a decimal string.")
    run_caps: CapLimits = Field(
        default_factory=CapLimits, description="Caps on each task run's LLM use."
    )
    group_caps: CapLimits = Field(
        default_factory=CapLimits, description="Caps on each group's LLM use."
    )


class PlanList(BaseModel):
    """Every plan, smallest first."""

    plans: list[PlanView]


class PlanWrite(Strict):
    """Change a plan; fields left out keep their value. Tenants on it follow at once (LLM
    limits within 30 s: workers cache them)."""

    allowed_roles: list[Queue] | None = Field(None, max_length=1000)
    max_concurrent_per_role: int | None = Field(None, ge=1, le=INT32_MAX)
    monthly_task_limit: int | None = Field(None, ge=0, le=INT64_MAX)
    monthly_token_budget: int | None = Field(None, ge=0, le=INT64_MAX)
    weight: float | None = Field(None, gt=0, le=1_000_000)
    start_rate: StartRate | None = None
    llm_requests_per_minute: int | None = Field(None, ge=1, le=INT32_MAX)
    llm_tokens_per_minute: int | None = Field(None, ge=1, le=INT64_MAX)
    monthly_spend_limit: Decimal | None = Field(None, ge=0, le=Decimal("99999999.99999999"))
    run_caps: CapLimits | None = Field(
        default=None,
        description="Replaces the caps on each task run's LLM calls, tokens and USD "
        "({} removes them).",
    )
    group_caps: CapLimits | None = Field(
        default=None,
        description="Replaces the caps on each group's LLM calls, tokens and USD "
        "({} removes them).",
    )


class TenantAgentView(BaseModel):
    """A tenant's override of one role; None fields fall back to the plan."""

    queue: str
    enabled: bool
    max_concurrent: int | None
    monthly_task_limit: int | None
    model_override: str | None
    adapter_override: str | None
    start_rate: StartRate | None = None


class TenantAgentWrite(Strict):
    """Create or change a tenant's override of one role; fields left out keep their value."""

    enabled: bool | None = None
    max_concurrent: int | None = Field(None, ge=1, le=INT32_MAX)
    monthly_task_limit: int | None = Field(None, ge=0, le=INT64_MAX)
    model_override: str | None = Field(None, min_length=1, max_length=200)
    adapter_override: str | None = Field(None, min_length=1, max_length=200)
    start_rate: StartRate | None = None


class TenantAgents(BaseModel):
    """A tenant's row of the plan matrix: its plan, and its overrides per role."""

    tenant_id: str
    plan_id: str | None
    agents: list[TenantAgentView]


class QueueView(BaseModel):
    """A queue: what declares it, its switches and limits, and its depth now."""

    name: str
    declared_by: list[str]
    paused: bool
    max_running: int | None = Field(description="Running at once, all tenants (None: no cap).")
    aging_seconds: float | None
    queued: int
    scheduled: int
    running: int
    waiting: int = Field(0, description="Waiting for a signal (ctx.wait_for); no worker held.")
    dead: int
    oldest_queued_seconds: float | None
    depth_threshold: int | None = Field(
        None, description="Backpressure threshold (None: the queue never sheds)."
    )
    events: bool = Field(True, description="Lifecycle events go to the task event log.")


class QueueList(BaseModel):
    """Every known queue, by name."""

    queues: list[QueueView]


class QueueLimitsWrite(Strict):
    """A role's limits across tenants; fields left out keep their value."""

    max_running: int | None = Field(None, ge=0, le=INT32_MAX, description="0 removes the cap.")
    aging_seconds: float | None = Field(None, gt=0, le=86400)
    depth_threshold: int | None = Field(
        None,
        ge=0,
        le=INT32_MAX,
        description="Backpressure: past this many queued tasks, new batch-priority work is "
        "refused (normal at twice, urgent at four times); 0 removes it.",
    )
    events: bool | None = Field(
        None, description="Write the role's lifecycle events to the task event log."
    )


class DeadTaskView(BaseModel):
    """A task in the dead-letter queue, with the error that killed it."""

    id: int
    tenant_id: str
    queue: str
    attempts: int
    max_attempts: int | None
    last_error: dict[str, Any] | None
    payload: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None


class DeadTaskList(BaseModel):
    """Dead tasks, newest first."""

    tasks: list[DeadTaskView]


class ReplayRequest(Strict):
    """Which dead tasks to replay: ids, a queue, a tenant (together they narrow), or
    ``all``. An empty request is refused rather than taken as everything."""

    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(
        None, min_length=1, max_length=10_000
    )
    queue: Queue | None = None
    tenant_id: str | None = Field(None, pattern=TENANT_PATTERN)
    all: bool = False


class Replayed(BaseModel):
    """The dead tasks put back in their queue (same ids, a fresh attempt budget)."""

    ids: list[int]
