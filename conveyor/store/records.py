"""What store operations return: plain, typed, immutable records.

Driver-free like ``params.py``: the seam's callers (the gateway, the worker, the API) import
these without importing the database driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from conveyor.core.llm_caps import NO_CAPS, CapScope, CapSet, CapSource, CapUsage, LLMCaps
from conveyor.types import TaskState


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """One submitted task: its id, and whether this call created it (False: a duplicate key,
    or a debounced submit that ``replaced`` the payload of a waiting task)."""

    task_id: int
    created: bool
    replaced: bool = False


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task leased to a worker. ``lease_token`` must accompany every call that finishes it."""

    id: int
    tenant_id: str
    queue: str
    priority: int
    attempts: int
    max_attempts: int
    timeout_seconds: float | None
    lease_token: int
    lease_expires_at: datetime
    parent_id: int | None
    group_id: str | None
    payload: dict[str, Any]
    trace_context: dict[str, str] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task as stored, active or finished."""

    id: int
    tenant_id: str
    queue: str
    state: TaskState
    priority: int
    attempts: int
    max_attempts: int | None
    timeout_seconds: float | None
    idempotency_key: str | None
    parent_id: int | None
    group_id: str | None
    payload: dict[str, Any]
    trace_context: dict[str, str] | None
    result: Any
    last_error: dict[str, Any] | None
    worker_id: str | None
    run_at: datetime | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    waiting_for: str | None = None
    """The signal a ``waiting`` task waits for (None in any other state)."""
    wait_until: datetime | None = None
    """When a ``waiting`` task's wait times out (None: no deadline, or not waiting)."""


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """What a heartbeat learned: leases still held, leases lost, and cancels requested."""

    extended: frozenset[int]
    lost: frozenset[int]
    cancel_requested: frozenset[int]


@dataclass(frozen=True, slots=True)
class ReapResult:
    """Expired leases handled by one reaper pass."""

    requeued: tuple[int, ...]
    dead: tuple[int, ...]
    cancelled: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DeadTask:
    """A task in the dead-letter queue with the error that killed it."""

    id: int
    tenant_id: str
    queue: str
    attempts: int
    max_attempts: int
    last_error: dict[str, Any] | None
    payload: dict[str, Any]
    created_at: datetime
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Depth and age of one queue."""

    queue: str
    queued: int
    scheduled: int
    running: int
    dead: int
    oldest_queued_seconds: float | None
    paused: bool
    waiting: int = 0
    """Tasks waiting for a signal (``ctx.wait_for``): they hold no worker."""


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One registered worker process and whether it still beats."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    state: str
    started_at: datetime
    heartbeat_at: datetime
    silent_seconds: float
    unwritten: int
    """Outcomes finished in the worker but not yet written (at its last heartbeat)."""
    seconds_since_outcome: float
    """How long ago the worker last recorded an outcome (or started)."""
    running: int
    """Tasks whose lease the worker holds: running, or finished and not yet written."""


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant row."""

    id: str
    name: str
    weight: float
    plan_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan: allowed roles and limits (None: no limit; allowed_roles None: any role)."""

    id: str
    name: str
    allowed_roles: tuple[str, ...] | None
    max_concurrent_per_role: int | None
    monthly_task_limit: int | None
    monthly_token_budget: int | None
    weight: float
    start_rate_limit: int | None = None
    start_rate_interval: float | None = None
    llm_requests_per_minute: int | None = None
    llm_tokens_per_minute: int | None = None
    monthly_spend_limit: Decimal | None = None
    run_caps: LLMCaps = NO_CAPS
    """Caps on each task run's LLM calls, tokens and USD (the runaway guard)."""
    group_caps: LLMCaps = NO_CAPS
    """Caps on each group's LLM calls, tokens and USD."""


@dataclass(frozen=True, slots=True)
class TenantAgent:
    """A tenant's override of one role; None fields fall back to the plan."""

    tenant_id: str
    queue: str
    enabled: bool
    max_concurrent: int | None
    monthly_task_limit: int | None
    model_override: str | None
    adapter_override: str | None
    start_rate_limit: int | None = None
    start_rate_interval: float | None = None


@dataclass(frozen=True, slots=True)
class QueueDeclaration:
    """A declared queue and what declares it: ``declared`` (a row in ``queues``: an
    operator, or a worker that served it), ``worker``, ``plan``, ``tenant override``,
    ``periodic task``."""

    name: str
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's switches and limits across tenants (None: no global cap, no shedding)."""

    name: str
    paused: bool
    max_running: int | None
    aging_seconds: float
    depth_threshold: int | None = None
    events: bool = True
    """Whether the role's lifecycle events are written to the task event log."""


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """A queue that sheds: its threshold, its depth (tasks queued, counted up to
    ``core.shedding.count_limit``) and, when at or past the threshold, the tasks that
    finished in the measuring window (None when not measured)."""

    name: str
    depth_threshold: int
    depth: int
    finished: int | None


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """How many of a group's tasks are in each state, and whether it completed."""

    tenant_id: str
    group_id: str
    counts: dict[TaskState, int]
    completed_at: datetime | None
    follow_up_id: int | None

    @property
    def total(self) -> int:
        """All tasks of the group seen so far."""
        return sum(self.counts.values())


class EffectStatus(StrEnum):
    """What ``begin_effect`` found."""

    DONE = "done"
    """Recorded before: use ``result``, do not run the effect."""
    OWNED = "owned"
    """The caller owns the key now: run the effect, then complete or abandon it."""
    BUSY = "busy"
    """Another running lease is running the effect: wait and ask again."""


@dataclass(frozen=True, slots=True)
class EffectRecord:
    """A ledger answer: the status and, when done, the recorded result."""

    status: EffectStatus
    result: Any = None

    @property
    def recorded(self) -> bool:
        """True when a result is recorded."""
        return self.status is EffectStatus.DONE


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """What a task holds under a signal name: the delivered payload, or a timeout."""

    name: str
    payload: Any
    timed_out: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SignalDelivery:
    """A signal delivered to a task.

    ``state`` is the task's state after the delivery; ``resumed`` is True when the task was
    waiting for this very signal (it runs again shortly: ``scheduled`` now, ``queued`` at
    the promoter's next pass); ``duplicate`` is True when the same payload had been
    delivered under this name before (nothing changed).
    """

    task_id: int
    name: str
    state: TaskState
    resumed: bool
    duplicate: bool


@dataclass(frozen=True, slots=True)
class TenantLLMPolicy:
    """What the gateway enforces for a tenant's calls from one queue (None: no limit)."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    monthly_token_budget: int | None
    monthly_spend_limit: Decimal | None
    model_override: str | None
    run_caps: LLMCaps = NO_CAPS
    """The plan's caps per task run."""
    group_caps: LLMCaps = NO_CAPS
    """The plan's caps per group."""

    @property
    def limits_spend(self) -> bool:
        """Whether calls must reserve against a monthly budget."""
        return self.monthly_token_budget is not None or self.monthly_spend_limit is not None


@dataclass(frozen=True, slots=True)
class SpendReservation:
    """The answer to a reservation: ``ok``, and the month's usage counting it."""

    ok: bool
    month: date
    tokens: int
    cost: Decimal
    estimate: Decimal


@dataclass(frozen=True, slots=True)
class CapReservation:
    """The answer to a cap reservation. A status per scope: ``ok`` (reserved), ``refused``
    (nothing reserved anywhere), ``none`` (nothing caps it: nothing counted), ``released``
    (the run fitted, its group did not). ``*_caps`` are the rows' own caps (submit, group
    creation); ``*_used`` what each scope has used and holds in flight."""

    estimate: Decimal
    run_status: str
    group_status: str
    run_caps: LLMCaps
    run_used: CapUsage
    group_caps: LLMCaps
    group_used: CapUsage

    @property
    def ok(self) -> bool:
        """Whether the attempt was admitted."""
        return "refused" not in (self.run_status, self.group_status)


@dataclass(frozen=True, slots=True)
class CapCounter:
    """A task's or group's row of caps: its own caps (submit, group creation), the caps a
    worker last enforced (role and plan, with their sources), what settled attempts used
    and what attempts in flight hold."""

    scope: CapScope
    caps: LLMCaps
    enforced: dict[str, Any]
    used: CapUsage
    in_flight: CapUsage
    updated_at: datetime

    @property
    def in_force(self) -> CapSet:
        """The tightest of the row's own caps and those last enforced by a worker."""
        own = CapSource.SUBMIT if self.scope is CapScope.RUN else CapSource.GROUP
        return CapSet.from_document(self.scope, self.enforced).tightened(own, self.caps)


@dataclass(frozen=True, slots=True)
class LLMUsage:
    """A tenant's calls to one (provider, model): counts, tokens and cost (USD)."""

    provider: str
    model: str
    attempts: int
    succeeded: int
    failed: int
    cached: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    unpriced: bool


@dataclass(frozen=True, slots=True)
class LLMPrice:
    """USD per million tokens of a model (provider '' : on any provider)."""

    model: str
    provider: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """What one queue finished since a moment: outcomes and latency percentiles (seconds)."""

    queue: str
    succeeded: int
    dead: int
    cancelled: int
    retries: int
    wait_p50: float | None
    wait_p99: float | None
    run_p50: float | None


@dataclass(frozen=True, slots=True)
class TenantWaits:
    """How long one tenant's finished tasks waited between enqueue and start (seconds)."""

    tenant_id: str
    tasks: int
    wait_p50: float | None
    wait_p99: float | None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as listed: never its secret, nor the hash of it."""

    id: str
    tenant_id: str | None
    """The tenant it acts for; None for an admin key."""
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def admin(self) -> bool:
        """True for an admin key."""
        return self.tenant_id is None


@dataclass(frozen=True, slots=True)
class KeyCredentials:
    """What checking a presented key needs: its owner, its secret's hash, whether revoked."""

    id: str
    tenant_id: str | None
    secret_hash: bytes
    revoked: bool


@dataclass(frozen=True, slots=True)
class StoredAgentDefinition:
    """One version of a declarative agent's definition as stored (``agent_definitions``).

    ``definition`` is the JSON document (``core/agent_definition.py`` reads it);
    ``digest`` its canonical SHA-256; ``source`` ``api`` or ``file``. ``created`` is False
    when a write found the same definition already latest and added no version.
    """

    role: str
    version: int
    definition: dict[str, Any]
    digest: bytes
    source: str
    created_at: datetime
    created: bool = False
