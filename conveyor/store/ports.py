"""The store seam, cut by caller: one Protocol per kind of code that talks to the store.

Each caller types against the protocol it needs, never the engine class, so what a caller
may do is visible in its signature and a second backend has a checklist to pass:

- ``TenantTasks``: a tenant-facing caller (the HTTP API's tenant routes, the SDK) bound to
  one tenant; ``PostgresStore.for_tenant`` hands out one (a ``TenantStore``).
- ``TenantScopedStore``: what that bound view needs of the engine; every operation takes
  the tenant id and its statements require it.
- ``WorkerLeases``: a worker process: claim, heartbeat, release, finish, retry, suspend
  (a durable wait), the effects ledger and signals, child tasks, its liveness row.
- ``Maintenance``: the periodic upkeep: promote, reap, expire waits, partitions, retention,
  sweeps.
- ``EventLog``: an API process's event hub: the whole log's tail, in order.
- ``Admin``: operators (CLI, admin routes): tenants, plans, queues, the dead-letter queue,
  workers, reports, prices, and any tenant's task by id.
- The gateway's own ports live with the gateway (``conveyor.gateway.stores.GatewayStore``).

``PostgresStore`` satisfies all of them (``tests/unit/test_store_ports.py``). The module is
driver-free: it imports only ``params``, ``records`` and ``event_records``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from conveyor.core.events import EventPosition
from conveyor.core.llm_caps import CapScope, LLMCaps
from conveyor.store.event_records import EventFilter, LogHorizon, NewEvent, TaskEvent
from conveyor.store.params import (
    ClaimRequest,
    EffectOwner,
    Finish,
    LeaseRef,
    NewTask,
    PeriodicTask,
    PlanUpdate,
    QueueLimits,
    ReplayFilter,
    RetryLease,
    SuspendLease,
    TaskListParams,
    TenantAgentUpdate,
    WorkerInfo,
)
from conveyor.store.records import (
    CapCounter,
    ClaimedTask,
    DeadTask,
    EffectRecord,
    EnqueueResult,
    GroupStatus,
    HeartbeatResult,
    LLMPrice,
    LLMUsage,
    Plan,
    QueueDeclaration,
    QueueLoad,
    QueueSettings,
    QueueStatus,
    QueueSummary,
    ReapResult,
    SignalDelivery,
    SignalRecord,
    TaskRecord,
    Tenant,
    TenantAgent,
    TenantLLMPolicy,
    TenantWaits,
    WorkerStatus,
)
from conveyor.types import TaskState


class TenantTasks(Protocol):
    """Everything a tenant-facing caller may do, for the one tenant it is bound to.

    Another tenant's task or group id behaves exactly like an id that does not exist.
    """

    @property
    def tenant_id(self) -> str:
        """The tenant every read and write is bound to."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A connection in a transaction, to enqueue together with the caller's writes."""
        ...

    async def enqueue(self, task: NewTask, *, connection: Any = None) -> EnqueueResult: ...
    async def enqueue_batch(
        self, tasks: Sequence[NewTask], *, connection: Any = None
    ) -> list[EnqueueResult]: ...
    async def enqueue_debounced(self, task: NewTask) -> EnqueueResult: ...
    async def get_task(self, task_id: int) -> TaskRecord: ...
    async def list_tasks(self, query: TaskListParams | None = None) -> list[TaskRecord]: ...
    async def cancel(self, task_id: int, *, reason: str = "cancelled") -> TaskState: ...
    async def signal(self, task_id: int, name: str, payload: Any = None) -> SignalDelivery: ...
    async def create_group(
        self, group_id: str, *, on_complete: NewTask | None = None, caps: LLMCaps | None = None
    ) -> None: ...
    async def group_status(self, group_id: str) -> GroupStatus: ...
    async def llm_cap_counter(self, scope: CapScope, key: str) -> CapCounter | None: ...
    async def usage(self, *, now: datetime | None = None) -> dict[str, int]: ...
    async def llm_usage(
        self,
        since: datetime,
        *,
        group_id: str | None = None,
        task_id: int | None = None,
        until: datetime | None = None,
    ) -> list[LLMUsage]: ...
    async def task_counts(
        self, since: datetime, until: datetime
    ) -> dict[str, dict[TaskState, int]]: ...
    async def events(
        self, after: EventPosition, narrow: EventFilter | None = None, limit: int = 1000
    ) -> list[TaskEvent]: ...
    async def task_events(
        self, task_id: int, after: EventPosition, limit: int = 1000
    ) -> list[TaskEvent]: ...


class TenantScopedStore(Protocol):
    """The engine's tenant-scoped operations: what a ``TenantStore`` is built on.

    ``tenant_id`` is required by each, and by the SQL each runs.
    """

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...
    async def enqueue_batch(
        self, tasks: Sequence[NewTask], *, connection: Any = None
    ) -> list[EnqueueResult]: ...
    async def enqueue_debounced(self, task: NewTask) -> EnqueueResult: ...
    async def get_task(self, task_id: int, *, tenant_id: str) -> TaskRecord: ...
    async def list_tasks(self, tenant_id: str, query: TaskListParams) -> list[TaskRecord]: ...
    async def cancel(self, task_id: int, *, tenant_id: str, reason: str) -> TaskState: ...
    async def deliver_signal(
        self, task_id: int, name: str, payload: Any = None, *, tenant_id: str
    ) -> SignalDelivery: ...
    async def create_group(
        self,
        tenant_id: str,
        group_id: str,
        *,
        on_complete: NewTask | None = None,
        caps: LLMCaps | None = None,
    ) -> None: ...
    async def group_status(self, tenant_id: str, group_id: str) -> GroupStatus: ...
    async def llm_cap_counter(
        self, tenant_id: str, scope: CapScope, key: str
    ) -> CapCounter | None: ...
    async def tenant_usage(
        self, tenant_id: str, *, now: datetime | None = None
    ) -> dict[str, int]: ...
    async def llm_usage(
        self,
        tenant_id: str,
        since: datetime,
        *,
        group_id: str | None = None,
        task_id: int | None = None,
        until: datetime | None = None,
    ) -> list[LLMUsage]: ...
    async def task_counts(
        self, tenant_id: str, since: datetime, until: datetime
    ) -> dict[str, dict[TaskState, int]]: ...
    async def tenant_events(
        self, tenant_id: str, after: EventPosition, narrow: EventFilter, limit: int = 1000
    ) -> list[TaskEvent]: ...
    async def task_events(
        self, tenant_id: str, task_id: int, after: EventPosition, limit: int = 1000
    ) -> list[TaskEvent]: ...


class WorkerLeases(Protocol):
    """What a worker process does with the store: its leases, effects and liveness."""

    @property
    def dsn(self) -> str:
        """The pool's database (through a pooler such as PgBouncer, if there is one)."""
        ...

    @property
    def direct_dsn(self) -> str:
        """Where the worker listens for wake-ups and cancel requests (LISTEN/NOTIFY needs a
        session of its own: ``CONVEYOR_DIRECT_DATABASE_URL``, else the pool's)."""
        ...

    async def claim(self, request: ClaimRequest) -> list[ClaimedTask]: ...
    async def heartbeat(
        self,
        worker_id: str,
        held: Sequence[LeaseRef],
        lease_seconds: float,
        *,
        unwritten: int = 0,
        seconds_since_outcome: float = 0.0,
    ) -> HeartbeatResult: ...
    async def release(self, held: Sequence[LeaseRef]) -> list[int]: ...
    async def release_orphans(self, worker_id: str, held: Sequence[int]) -> list[int]: ...
    async def append_events(self, new: Sequence[NewEvent]) -> int: ...
    async def finish(self, finishes: Sequence[Finish]) -> set[int]: ...
    async def retry(self, retries: Sequence[RetryLease]) -> set[int]: ...
    async def suspend(self, waits: Sequence[SuspendLease]) -> set[int]:
        """Let leased tasks wait for a signal without a lease; the ids refused."""
        ...

    async def get_signal(self, tenant_id: str, task_id: int, name: str) -> SignalRecord | None:
        """What a task holds under a signal name (a payload or a timeout), if anything."""
        ...

    async def enqueue(self, task: NewTask) -> EnqueueResult: ...
    async def register_worker(self, info: WorkerInfo) -> None: ...
    async def set_worker_state(self, worker_id: str, state: str) -> None: ...
    async def begin_effect(self, owner: EffectOwner) -> EffectRecord: ...
    async def complete_effect(self, owner: EffectOwner, result: Any) -> EffectRecord: ...
    async def abandon_effect(self, owner: EffectOwner) -> None: ...
    async def get_effect(self, tenant_id: str, key: str) -> EffectRecord | None: ...
    async def record_step(
        self, tenant_id: str, key: str, result: Any, *, task_id: int
    ) -> EffectRecord: ...
    async def record_effect(
        self, tenant_id: str, key: str, result: Any, *, task_id: int | None = None
    ) -> tuple[EffectRecord, bool]: ...
    async def run_effect_in_transaction(
        self,
        tenant_id: str,
        key: str,
        effect: Callable[[Any], Awaitable[Any]],
        *,
        task_id: int | None = None,
    ) -> EffectRecord:
        """``effect`` gets the backend's connection inside the transaction (asyncpg's)."""
        ...


class EventLog(Protocol):
    """What an API process's event hub reads: every tenant's events in log order."""

    async def event_tail(self, after: EventPosition, limit: int = 1000) -> list[TaskEvent]: ...
    async def event_head(self) -> EventPosition: ...
    async def event_horizon(self) -> LogHorizon: ...
    async def event_pending(self, after: EventPosition) -> bool: ...


class Maintenance(Protocol):
    """The periodic upkeep one worker per cluster runs (see ``worker/maintenance.py``)."""

    async def promote_due(self, limit: int = 10_000) -> int: ...
    async def prune_chunks(self, cutoff: datetime) -> int: ...
    async def reap_expired(self, limit: int = 1000) -> ReapResult | None: ...
    async def expire_waits(self, limit: int = 1000) -> list[int]: ...
    async def ensure_partitions(
        self, *, now: datetime | None = None, months_ahead: int = 3
    ) -> list[str]: ...
    async def apply_retention(self, cutoff: datetime) -> tuple[list[str], int]: ...
    async def sweep_open_groups(self, limit: int = 500) -> list[int]: ...
    async def prune_llm_cache(self) -> int: ...
    async def prune_workers(self, silent_seconds: float) -> int: ...
    async def register_periodic(
        self, schedules: Sequence[PeriodicTask], *, now: datetime | None = None
    ) -> None: ...
    async def enqueue_due_periodic(self, *, now: datetime | None = None) -> list[int]: ...


class Admin(Protocol):
    """What operators do (CLI, admin routes): across tenants, on purpose."""

    async def get_task(self, task_id: int, *, tenant_id: str | None = None) -> TaskRecord:
        """Any tenant's task when ``tenant_id`` is None."""
        ...

    async def cancel(
        self, task_id: int, *, tenant_id: str | None = None, reason: str = "cancelled"
    ) -> TaskState:
        """Any tenant's task when ``tenant_id`` is None."""
        ...

    async def deliver_signal(
        self,
        task_id: int,
        name: str,
        payload: Any = None,
        *,
        tenant_id: str | None = None,
        reserved: bool = False,
    ) -> SignalDelivery:
        """Any tenant's task when ``tenant_id`` is None; ``reserved`` admits Conveyor's own
        ``conveyor:`` names (the webhook adapter's)."""
        ...

    async def create_tenant(
        self,
        tenant_id: str,
        name: str | None = None,
        weight: float | None = None,
        *,
        plan: str | None = None,
    ) -> Tenant: ...
    async def list_tenants(self) -> list[Tenant]: ...
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...
    async def list_plans(self) -> list[Plan]: ...
    async def update_plan(self, update: PlanUpdate) -> Plan: ...
    async def set_tenant_agent(self, override: TenantAgentUpdate) -> TenantAgent: ...
    async def list_tenant_agents(self, tenant_id: str) -> list[TenantAgent]: ...
    async def set_queue_limits(self, limits: QueueLimits) -> QueueSettings: ...
    async def queue_loads(self, window_seconds: float = 60.0) -> list[QueueLoad]: ...
    async def pause_queue(self, queue: str) -> None: ...
    async def resume_queue(self, queue: str) -> None: ...
    async def list_queue_settings(self) -> list[QueueSettings]: ...
    async def queue_declarations(
        self, names: Sequence[str] | None = None
    ) -> list[QueueDeclaration]: ...
    async def declare_queues(self, names: Sequence[str]) -> list[str]: ...
    async def require_declared_queues(self, names: Sequence[str]) -> None: ...
    async def queue_status(self) -> list[QueueStatus]: ...
    async def list_dead(
        self, *, queue: str | None = None, tenant_id: str | None = None, limit: int = 100
    ) -> list[DeadTask]: ...
    async def replay_dead(self, which: ReplayFilter, *, batch_size: int = 1000) -> list[int]: ...
    async def list_workers(self) -> list[WorkerStatus]: ...
    async def tenant_waits(self, since: datetime) -> list[TenantWaits]: ...
    async def running_by_tenant(self) -> dict[tuple[str, str], int]: ...
    async def history_summary(self, since: datetime) -> list[QueueSummary]: ...
    async def list_llm_prices(self) -> list[LLMPrice]: ...
    async def set_llm_price(
        self, model: str, provider: str, input_per_mtok: Decimal, output_per_mtok: Decimal
    ) -> LLMPrice: ...
    async def tenant_llm_policy(self, tenant_id: str, queue: str) -> TenantLLMPolicy: ...
    async def tenant_llm_month(self, tenant_id: str, month: date) -> dict[str, Any] | None: ...
    async def set_tenant_llm_limits(
        self,
        tenant_id: str,
        *,
        monthly_token_budget: int | None = None,
        monthly_spend_limit: Decimal | None = None,
        clear_tokens: bool = False,
        clear_spend: bool = False,
    ) -> None: ...
