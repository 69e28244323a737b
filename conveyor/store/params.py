"""The small value objects that store operations take.

Each operation of the store takes one of these, so a call site reads as what it asks for
and a new field never shifts positional arguments. Driver-free: importing this module never
imports the database driver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from conveyor.core.cron import validate_cron
from conveyor.core.llm_caps import CapSet, LLMCaps
from conveyor.errors import InvalidTask
from conveyor.store.records import TenantLLMPolicy
from conveyor.types import MAX_PRIORITY, MIN_PRIORITY, Priority, TaskState

_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
MAX_IDEMPOTENCY_KEY = 255
DEFAULT_TENANT = "default"
"""The tenant of a task that names none."""


def validate_queue_name(queue: str) -> str:
    """Return ``queue`` or raise InvalidTask saying which names are allowed."""
    # fullmatch: with match, `$` would also accept a name ending in a newline.
    if not _QUEUE_NAME.fullmatch(queue):
        raise InvalidTask(
            f"invalid queue name {queue!r}: use 1-128 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit"
        )
    return queue


def validate_tenant_id(tenant_id: str) -> str:
    """Return ``tenant_id`` or raise InvalidTask saying which ids are allowed."""
    if not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidTask(
            f"invalid tenant id {tenant_id!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return tenant_id


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to enqueue.

    Attributes:
        queue: the agent role that runs it, e.g. ``copywriter``.
        payload: JSON-serialisable input of the agent.
        tenant_id: the owner (default ``default``).
        priority: 1 (urgent) .. 10 (batch); default 5.
        run_at: do not start before this instant (None: now).
        max_attempts: runs allowed, the first included (None: the agent's retry policy).
        timeout_seconds: the longest a single run may take (None: the agent's default).
        idempotency_key: a second submission with the same key (per tenant) creates nothing
            and returns the first task.
        parent_id, group_id: links to the spawning task and the campaign.
        trace_context: W3C trace context of the submitter.
        idempotency_fingerprint: the hash of the request that carries ``idempotency_key``;
            the key then returns the first task only to the same request, and refuses
            another with ``IdempotencyConflict`` (None: any request matches).
        debounce_key: enqueue through ``enqueue_debounced``: a waiting task of the tenant's
            queue with this key gets this payload instead of a new task being added.
        llm_caps: the task's own caps on its LLM calls, tokens and money, over all its
            attempts (the runaway guard; the tightest of these, its role's and its plan's
            applies). None: none of its own.
    """

    queue: str
    payload: dict[str, Any] = field(default_factory=dict)
    tenant_id: str = DEFAULT_TENANT
    priority: int = Priority.NORMAL
    run_at: datetime | None = None
    max_attempts: int | None = None
    timeout_seconds: float | None = None
    idempotency_key: str | None = None
    parent_id: int | None = None
    group_id: str | None = None
    trace_context: dict[str, str] | None = None
    idempotency_fingerprint: bytes | None = None
    debounce_key: str | None = None
    llm_caps: LLMCaps | None = None

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        if not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise InvalidTask(
                f"priority must be between {MIN_PRIORITY} (urgent) and {MAX_PRIORITY} (batch), "
                f"got {self.priority}"
            )
        if self.max_attempts is not None and self.max_attempts < 1:
            raise InvalidTask(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise InvalidTask(f"timeout_seconds must be > 0, got {self.timeout_seconds}")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise InvalidTask("run_at must be timezone-aware (e.g. datetime.now(UTC))")
        if self.idempotency_key is not None and not (
            0 < len(self.idempotency_key) <= MAX_IDEMPOTENCY_KEY
        ):
            raise InvalidTask(f"idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY} characters long")
        if not isinstance(self.payload, dict):
            raise InvalidTask("payload must be a JSON object (a dict)")
        if self.debounce_key is not None and not 0 < len(self.debounce_key) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidTask(f"debounce_key must be 1-{MAX_IDEMPOTENCY_KEY} characters long")


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """A task as a worker holds it: its id and the fencing token of the current lease."""

    task_id: int
    lease_token: int


@dataclass(frozen=True, slots=True)
class Finish:
    """Finish a leased task for good: succeeded (with a result), dead or cancelled."""

    lease: LeaseRef
    state: TaskState
    result: Any = None
    error: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.state.is_terminal:
            raise ValueError(f"Finish needs a terminal state, got {self.state}")


@dataclass(frozen=True, slots=True)
class RetryLease:
    """Send a leased task back to wait ``delay`` seconds (a retry, or a snooze)."""

    lease: LeaseRef
    delay: float
    error: dict[str, Any] | None = None
    count_attempt: bool = True


@dataclass(frozen=True, slots=True)
class SuspendLease:
    """End a leased task's run without an outcome: it waits, holding no lease, for the
    signal ``wait`` or at most ``timeout`` seconds (None: no deadline). The attempt is
    given back, as for a snooze. Written by ``WorkerLeases.suspend`` (see store/waits.py)."""

    lease: LeaseRef
    wait: str
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Claim up to ``limit`` ready tasks of ``queues`` for ``worker_id``.

    ``default_max_attempts`` (aligned with ``queues``, default 5 each) is written into tasks
    submitted without ``max_attempts``: the agent's retry policy.
    """

    queues: tuple[str, ...]
    limit: int
    worker_id: str
    lease_seconds: float
    default_max_attempts: tuple[int, ...] | None = None

    def attempts_defaults(self) -> list[int]:
        """``default_max_attempts`` or 5 per queue."""
        if self.default_max_attempts is None:
            return [5] * len(self.queues)
        if len(self.default_max_attempts) != len(self.queues):
            raise ValueError("default_max_attempts must align with queues")
        return list(self.default_max_attempts)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker process as it registers itself."""

    worker_id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int


@dataclass(frozen=True, slots=True)
class PeriodicTask:
    """A task enqueued on every tick of a cron expression, once across all workers."""

    name: str
    cron: str
    queue: str
    payload: dict[str, Any] = field(default_factory=dict)
    tenant_id: str = DEFAULT_TENANT
    priority: int = Priority.NORMAL
    max_attempts: int = 5

    def __post_init__(self) -> None:
        # Refused here, not at each tick: a stored bad schedule would fail every
        # enqueue_due_periodic call and starve the schedules after it.
        validate_cron(self.cron)
        NewTask(
            queue=self.queue,
            payload=self.payload,
            tenant_id=self.tenant_id,
            priority=self.priority,
            max_attempts=self.max_attempts,
        )


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which dead tasks to replay; at least one field must narrow it, or ``everything``."""

    task_ids: tuple[int, ...] | None = None
    queue: str | None = None
    tenant_id: str | None = None
    everything: bool = False

    def __post_init__(self) -> None:
        if not (self.task_ids or self.queue or self.tenant_id or self.everything):
            raise ValueError("say which dead tasks to replay: ids, a queue, a tenant, or all")


@dataclass(frozen=True, slots=True)
class TenantAgentUpdate:
    """Change a tenant's override of one role; None fields keep their current value."""

    tenant_id: str
    queue: str
    enabled: bool | None = None
    max_concurrent: int | None = None
    monthly_task_limit: int | None = None
    model_override: str | None = None
    adapter_override: str | None = None
    start_rate: StartRate | None = None

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant_id)
        validate_queue_name(self.queue)
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise InvalidTask("max_concurrent must be >= 1")
        if self.monthly_task_limit is not None and self.monthly_task_limit < 0:
            raise InvalidTask("monthly_task_limit must be >= 0")


@dataclass(frozen=True, slots=True)
class StartRate:
    """At most ``limit`` task starts per ``interval_seconds``, shared by every worker."""

    limit: int
    interval_seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise InvalidTask("a start rate limit must allow at least 1 start")
        if not self.interval_seconds > 0:
            raise InvalidTask("a start rate interval must be longer than zero")


@dataclass(frozen=True, slots=True)
class PlanUpdate:
    """Change a plan; None fields keep their current value."""

    plan_id: str
    max_concurrent_per_role: int | None = None
    monthly_task_limit: int | None = None
    weight: float | None = None
    start_rate: StartRate | None = None
    allowed_roles: tuple[str, ...] | None = None
    monthly_token_budget: int | None = None
    llm_requests_per_minute: int | None = None
    llm_tokens_per_minute: int | None = None
    monthly_spend_limit: Decimal | None = None
    run_caps: LLMCaps | None = None
    """Given: replaces the plan's caps per task run (``LLMCaps()`` removes them)."""
    group_caps: LLMCaps | None = None
    """Given: replaces the plan's caps per group (``LLMCaps()`` removes them)."""

    def __post_init__(self) -> None:
        for name in ("monthly_token_budget", "monthly_spend_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidTask(f"{name} must be >= 0")
        for name in ("llm_requests_per_minute", "llm_tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidTask(f"{name} must be >= 1")
        if self.max_concurrent_per_role is not None and self.max_concurrent_per_role < 1:
            raise InvalidTask("max_concurrent_per_role must be >= 1")
        if self.monthly_task_limit is not None and self.monthly_task_limit < 0:
            raise InvalidTask("monthly_task_limit must be >= 0")
        if self.weight is not None and not self.weight > 0:
            raise InvalidTask("weight must be > 0")
        for role in self.allowed_roles or ():
            validate_queue_name(role)


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A role's limits across all tenants.

    Attributes:
        queue: the role.
        max_running: most tasks of the role running at once, all tenants together
            (None keeps the current value; 0 removes the cap).
        aging_seconds: a priority level with work that was not served for this long gets a
            share of the next claims (the starvation guard; None keeps the current value).
        depth_threshold: the depth past which the API refuses new work of the role, lowest
            priority first (``core/shedding.py``; None keeps the value; 0 removes it).
        events: write the role's lifecycle events to the task event log (None keeps the
            value; agents' own ``ctx.emit`` events are written either way).
    """

    queue: str
    max_running: int | None = None
    aging_seconds: float | None = None
    depth_threshold: int | None = None
    events: bool | None = None

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        if self.max_running is not None and self.max_running < 0:
            raise InvalidTask("max_running must be >= 1 (or 0 to remove the cap)")
        if self.aging_seconds is not None and not self.aging_seconds > 0:
            raise InvalidTask("aging must be longer than zero")
        if self.depth_threshold is not None and self.depth_threshold < 0:
            raise InvalidTask("depth_threshold must be >= 1 (or 0 to remove it)")


@dataclass(frozen=True, slots=True)
class BucketDraw:
    """Time taken from (or given back to) one shared drip bucket.

    ``seconds`` is units x the bucket's emission (seconds a unit occupies the bucket);
    ``tenant_id`` '' is the provider's global bucket.
    """

    provider: str
    kind: str
    seconds: float
    tenant_id: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("requests", "tokens"):
            raise ValueError(f"a bucket is 'requests' or 'tokens', not {self.kind!r}")


@dataclass(frozen=True, slots=True)
class EffectOwner:
    """The lease that runs an effect."""

    tenant_id: str
    key: str
    task_id: int
    lease_token: int


@dataclass(frozen=True, slots=True)
class SpendReserve:
    """A call about to be sent: its estimate, to reserve in the tenant's month if it fits.

    ``completion_tokens`` is the most the reply may use (the call's ``max_tokens``).
    """

    tenant_id: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    policy: TenantLLMPolicy


@dataclass(frozen=True, slots=True)
class SpendSettle:
    """A reserved call is over: what it reserved and what it used."""

    tenant_id: str
    month: date
    provider: str
    model: str
    reserved_tokens: int
    reserved_cost: Decimal
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class CapReserve:
    """An attempt about to be sent, to reserve in its run's and its group's caps.

    ``run`` and ``group`` are the caps the worker knows (role and plan); the rows' own caps
    (submit, group creation) are applied by the database. ``task_id`` / ``group_id`` None:
    no such scope. ``completion_tokens`` is the call's ``max_tokens``.
    """

    tenant_id: str
    task_id: int | None
    group_id: str | None
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    run: CapSet
    group: CapSet


@dataclass(frozen=True, slots=True)
class CapSettle:
    """An attempt's reservations are over: released unsent, or settled. ``held`` names
    each (scope, key) it reserved in: ``("run", "<task id>")``, ``("group", "<group id>")``."""

    tenant_id: str
    held: tuple[tuple[str, str], ...]
    provider: str
    model: str
    reserved_tokens: int
    reserved_cost: Decimal
    prompt_tokens: int
    completion_tokens: int
    sent: bool


MAX_LIST_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class TaskListParams:
    """Which of a tenant's tasks to list, newest first, a page at a time.

    Attributes:
        limit: most tasks returned (1..1000).
        before_id: the cursor: only tasks with a smaller id (the last id of the previous
            page); None starts from the newest.
        queue, group_id, state: when given, only tasks of that role, campaign or state.
        created_after, created_before: when given, only tasks created at or after / before
            these instants (timezone-aware).
    """

    limit: int = 100
    before_id: int | None = None
    queue: str | None = None
    group_id: str | None = None
    state: TaskState | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIST_LIMIT:
            raise InvalidTask(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {self.limit}")
        for name in ("created_after", "created_before"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise InvalidTask(f"{name} must be timezone-aware")
        if self.queue is not None:
            validate_queue_name(self.queue)
