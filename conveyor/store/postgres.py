"""PostgresStore: the store seam implemented on PostgreSQL with asyncpg.

The engine: it satisfies every caller's protocol of ``ports.py`` and is handed to the
worker, the maintenance loop, the gateway and operators' tools, each typed against the
protocol it needs. Tenant-facing code never holds it: it holds ``store.for_tenant(id)``.

Each method is one operation, runs the named statements of ``queries/*.sql`` and translates
driver errors at this boundary. Methods that accept ``connection`` run inside the caller's
transaction (enqueue exactly when the caller's own writes commit); without it they use the
pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import asyncpg

from conveyor.core.llm_caps import LLMCaps
from conveyor.store import (
    admin,
    api_keys,
    backpressure,
    debounce,
    declarations,
    effects,
    enqueue,
    finish,
    groups,
    leases,
    migrate,
    periodic,
    queue_metrics,
    reports,
    retention,
)
from conveyor.store.agent_definitions import AgentDefinitionOperations
from conveyor.store.connection import (
    Conn,
    create_pool,
    mark_users_error,
    pooled,
    translated_errors,
)
from conveyor.store.event_operations import EventOperations
from conveyor.store.llm_operations import LLMOperations
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
    TaskListParams,
    TenantAgentUpdate,
    WorkerInfo,
)
from conveyor.store.ports import Admin, Maintenance, TenantScopedStore, WorkerLeases
from conveyor.store.records import (
    ApiKey,
    ClaimedTask,
    DeadTask,
    EffectRecord,
    EnqueueResult,
    GroupStatus,
    HeartbeatResult,
    KeyCredentials,
    Plan,
    QueueDeclaration,
    QueueLoad,
    QueueSettings,
    QueueStatus,
    QueueSummary,
    ReapResult,
    TaskRecord,
    Tenant,
    TenantAgent,
    TenantWaits,
    WorkerStatus,
)
from conveyor.store.tenant import TenantStore
from conveyor.store.waits import WaitOperations
from conveyor.store.webhooks import WebhookOperations
from conveyor.types import TaskState

T = TypeVar("T")


class PostgresStore(
    LLMOperations,
    EventOperations,
    WaitOperations,
    AgentDefinitionOperations,
    WebhookOperations,
):
    """The durable queue on PostgreSQL. Build it with :meth:`open`; close it when done."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, *, fairness: bool = True) -> None:
        super().__init__(pool)
        self.dsn = dsn
        self.direct_dsn = dsn
        """DSN for LISTEN and session-level work; open_store sets the direct one here."""
        self.fairness = fairness
        """Fair dequeue between tenants (see fairness.sql); False orders by priority, id."""

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        statement_cache_size: int = 100,
        fairness: bool = True,
    ) -> PostgresStore:
        """Open a pool to ``dsn`` (already migrated)."""
        pool = await create_pool(
            dsn, min_size=min_size, max_size=max_size, statement_cache_size=statement_cache_size
        )
        return cls(pool, dsn, fairness=fairness)

    def for_tenant(self, tenant_id: str) -> TenantStore:
        """The store bound to ``tenant_id``: every tenant-facing read and write goes through
        it, and it cannot address another tenant's rows (see ``tenant.py``)."""
        return TenantStore(self, tenant_id)

    async def close(self) -> None:
        """Send a pending event wake-up, then close every pooled connection."""
        await self.event_wake.close()
        await self.chunk_wake.close()
        await self._pool.close()

    @property
    def pool_size(self) -> int:
        """Connections the pool holds now."""
        return self._pool.get_size()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A pooled connection inside a transaction, for enqueueing with other writes.

        The caller's code may change the session (``SET``, a session advisory lock), so
        the connection gets asyncpg's full reset before it goes back to the pool (the pool
        itself skips it: ``connection.keep_session``).
        """
        async with translated_errors(), pooled(self._pool, self.acquire_observer) as conn:
            try:
                async with conn.transaction():
                    try:
                        yield conn
                    except BaseException as exc:
                        mark_users_error(exc, conn)  # the caller's error, not the store's
                        raise
            finally:
                await _reset_or_discard(conn)
                self._events_written()  # whatever the caller enqueued has committed

    # -- submitting ---------------------------------------------------------------------

    async def enqueue(self, task: NewTask, *, connection: Conn | None = None) -> EnqueueResult:
        """Enqueue one task (see :meth:`enqueue_batch`)."""
        return (await self.enqueue_batch([task], connection=connection))[0]

    async def enqueue_batch(
        self, tasks: Sequence[NewTask], *, connection: Conn | None = None
    ) -> list[EnqueueResult]:
        """Enqueue many tasks in one statement; with ``connection``, in its transaction."""
        if connection is not None:
            async with translated_errors(), connection.transaction():
                return await enqueue.enqueue_batch(connection, tasks, fair=self.fairness)
        results = await self._with_partitions(
            lambda: self._run_in_transaction(
                lambda c: enqueue.enqueue_batch(c, tasks, fair=self.fairness)
            )
        )
        self._events_written()
        return results

    async def enqueue_debounced(self, task: NewTask) -> EnqueueResult:
        """Add a debounced task, or replace the payload of its waiting twin (same tenant,
        queue and ``debounce_key``) in one statement: see ``store/debounce.py``."""
        result = await self._with_partitions(
            lambda: self._run_in_transaction(lambda c: debounce.enqueue_debounced(c, task))
        )
        self._events_written()
        return result

    # -- leases -------------------------------------------------------------------------

    async def claim(self, request: ClaimRequest) -> list[ClaimedTask]:
        """Lease up to ``request.limit`` ready tasks in priority and fairness order."""
        claimed = await self._with_partitions(lambda: self._run(lambda c: leases.claim(c, request)))
        if claimed:
            self._events_written()
        return claimed

    async def heartbeat(
        self,
        worker_id: str,
        held: Sequence[LeaseRef],
        lease_seconds: float,
        *,
        unwritten: int = 0,
        seconds_since_outcome: float = 0.0,
    ) -> HeartbeatResult:
        """Extend all of a worker's leases in one statement; record what it reports."""
        return await self._run(
            lambda c: leases.heartbeat(
                c,
                worker_id,
                held,
                lease_seconds,
                unwritten=unwritten,
                seconds_since_outcome=seconds_since_outcome,
            )
        )

    async def release(self, held: Sequence[LeaseRef]) -> list[int]:
        """Give leased tasks back without counting an attempt (graceful shutdown)."""
        released = await self._with_partitions(lambda: self._run(lambda c: leases.release(c, held)))
        self._events_written()
        return released

    async def release_orphans(self, worker_id: str, held: Sequence[int]) -> list[int]:
        """Give back tasks leased to ``worker_id`` other than ``held`` (a claim whose reply
        was lost), without counting an attempt; their ids."""
        released = await self._with_partitions(
            lambda: self._run(lambda c: leases.release_orphans(c, worker_id, held))
        )
        if released:
            self._events_written()
        return released

    async def reap_expired(self, limit: int = 1000) -> ReapResult | None:
        """Requeue expired leases (one reaper at a time); None if another reaper ran."""
        # a lease out of attempts finishes as dead: into this month's history partition
        reaped = await self._with_partitions(
            lambda: self._run(lambda c: leases.reap_expired(c, limit))
        )
        if reaped is not None and (reaped.requeued or reaped.dead or reaped.cancelled):
            self._events_written()
        return reaped

    async def promote_due(self, limit: int = 10_000) -> int:
        """Make due scheduled tasks ready; how many."""
        return await self._run(lambda c: leases.promote_due(c, limit, fair=self.fairness))

    # -- finishing ----------------------------------------------------------------------

    async def finish(self, finishes: Sequence[Finish]) -> set[int]:
        """Finish leased tasks in one statement; returns the ids refused for a lost lease.

        Groups whose tasks were among them are checked for completion right after.
        """
        done = await self._with_partitions(lambda: self._run(lambda c: finish.finish(c, finishes)))
        if finishes:
            self._events_written()
        await self._complete_groups(done.groups)
        return done.refused

    async def _complete_groups(self, pairs: set[tuple[str, str]]) -> None:
        if not pairs:
            return
        follow_ups = await self._run(lambda c: groups.complete_groups(c, pairs))
        if follow_ups:
            self._events_written()

    async def create_group(
        self,
        tenant_id: str,
        group_id: str,
        *,
        on_complete: NewTask | None = None,
        caps: LLMCaps | None = None,
    ) -> None:
        """Register a campaign; ``on_complete`` is enqueued once when all its tasks finish.
        ``caps`` (given: set or replaced, ``LLMCaps()`` clears them) bound its LLM use."""
        await self._run_in_transaction(
            lambda c: groups.create_group(c, tenant_id, group_id, on_complete, caps)
        )

    async def group_status(self, tenant_id: str, group_id: str) -> GroupStatus:
        """Counts by state of a campaign's tasks, and its completion."""
        return await self._run(lambda c: groups.group_status(c, tenant_id, group_id))

    async def sweep_open_groups(self, limit: int = 500) -> list[int]:
        """Complete open groups that are done (maintenance); the follow-up task ids."""
        follow_ups = await self._run(lambda c: groups.sweep_open_groups(c, limit))
        if follow_ups:
            self._events_written()
        return follow_ups

    async def retry(self, retries: Sequence[RetryLease]) -> set[int]:
        """Send leased tasks back to wait; returns the ids refused for a lost lease."""
        refused = await self._with_partitions(lambda: self._run(lambda c: finish.retry(c, retries)))
        self._events_written()
        return refused

    async def cancel(
        self, task_id: int, *, tenant_id: str | None = None, reason: str = "cancelled"
    ) -> TaskState:
        """Cancel a task; CANCELLED if done now, RUNNING if its worker was asked to stop.

        Without ``tenant_id`` this is an operator's cancel of any tenant's task (CLI,
        admin); tenant-facing code cancels through :meth:`for_tenant`.
        """
        state = await self._with_partitions(
            lambda: self._run(lambda c: finish.cancel(c, task_id, tenant_id, reason))
        )
        self._events_written()
        return state

    async def get_task(self, task_id: int, *, tenant_id: str | None = None) -> TaskRecord:
        """A task by id, active or finished; TaskNotFound if absent or another tenant's.

        Without ``tenant_id`` this is an operator's read of any tenant's task (CLI, admin);
        tenant-facing code reads through :meth:`for_tenant`.
        """
        return await self._run(lambda c: finish.get_task(c, task_id, tenant_id))

    async def list_tasks(self, tenant_id: str, query: TaskListParams) -> list[TaskRecord]:
        """A tenant's tasks, active and finished, newest first (see ``TaskListParams``)."""
        return await self._run(lambda c: finish.list_tasks(c, tenant_id, query))

    async def task_counts(
        self, tenant_id: str, since: datetime, until: datetime
    ) -> dict[str, dict[TaskState, int]]:
        """A tenant's tasks created in [since, until), per queue and state."""
        return await self._run(lambda c: reports.tenant_task_counts(c, tenant_id, since, until))

    # -- operations ---------------------------------------------------------------------

    async def create_tenant(
        self,
        tenant_id: str,
        name: str | None = None,
        weight: float | None = None,
        *,
        plan: str | None = None,
    ) -> Tenant:
        """Create or update a tenant (None keeps a field's value; a new tenant has no plan)."""
        return await self._run(lambda c: admin.create_tenant(c, tenant_id, name, weight, plan))

    async def list_plans(self) -> list[Plan]:
        """Every plan, smallest first."""
        return await self._run(admin.list_plans)

    async def update_plan(self, update: PlanUpdate) -> Plan:
        """Change a plan's limits (None fields keep their value)."""
        return await self._run(lambda c: admin.update_plan(c, update))

    async def set_queue_limits(self, limits: QueueLimits) -> QueueSettings:
        """Set a role's global cap, starvation guard and depth threshold (None fields keep
        their value)."""
        return await self._run(lambda c: admin.set_queue_limits(c, limits))

    async def queue_loads(self, window_seconds: float = 60.0) -> list[QueueLoad]:
        """Depth and recent drain of every queue with a depth threshold, in one statement
        (``store/backpressure.py``)."""
        return await self._run(lambda c: backpressure.queue_loads(c, window_seconds))

    async def set_tenant_agent(self, override: TenantAgentUpdate) -> TenantAgent:
        """Create or update a tenant's override of one role."""
        return await self._run(lambda c: admin.set_tenant_agent(c, override))

    async def list_tenant_agents(self, tenant_id: str) -> list[TenantAgent]:
        """A tenant's role overrides."""
        return await self._run(lambda c: admin.list_tenant_agents(c, tenant_id))

    async def tenant_usage(self, tenant_id: str, *, now: datetime | None = None) -> dict[str, int]:
        """Tasks the tenant submitted this month, per queue and in all (``"*"``)."""
        moment = now or datetime.now(UTC)
        month = date(moment.year, moment.month, 1)
        return await self._run(lambda c: admin.tenant_usage(c, tenant_id, month))

    async def list_tenants(self) -> list[Tenant]:
        """Every tenant."""
        return await self._run(admin.list_tenants)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        """One tenant; None when there is none."""
        return await self._run(lambda c: admin.get_tenant(c, tenant_id))

    async def list_queue_settings(self) -> list[QueueSettings]:
        """Every queue's switches and limits (queues never paused nor capped may lack one)."""
        return await self._run(admin.list_queue_settings)

    async def pause_queue(self, queue: str) -> None:
        """Stop claims from ``queue``; submissions are still accepted."""
        await self._run(lambda c: admin.set_queue_paused(c, queue, True))

    async def resume_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again."""
        await self._run(lambda c: admin.set_queue_paused(c, queue, False))

    async def queue_declarations(
        self, names: Sequence[str] | None = None
    ) -> list[QueueDeclaration]:
        """Declared queues (all, or those of ``names``) and what declares each."""
        return await self._run(lambda c: declarations.queue_declarations(c, names))

    async def declare_queues(self, names: Sequence[str]) -> list[str]:
        """Declare queues by an operator's say-so; returns those not declared so before."""
        return await self._run(lambda c: declarations.declare_queues(c, names))

    async def require_declared_queues(self, names: Sequence[str]) -> None:
        """Raise UndeclaredQueue if nothing declares one of ``names`` (see declarations.py)."""
        await self._run(lambda c: declarations.require_declared(c, names))

    async def list_dead(
        self, *, queue: str | None = None, tenant_id: str | None = None, limit: int = 100
    ) -> list[DeadTask]:
        """The dead-letter queue, newest first."""
        return await self._run(lambda c: admin.list_dead(c, queue, tenant_id, limit))

    async def replay_dead(self, which: ReplayFilter, *, batch_size: int = 1000) -> list[int]:
        """Replay every matching dead task, ``batch_size`` per transaction; their ids."""
        replayed: list[int] = []
        while True:
            ids = await self._run(lambda c: admin.replay_dead(c, which, batch_size))
            replayed.extend(ids)
            if ids:
                self._events_written()
            if len(ids) < batch_size:
                return replayed

    async def queue_status(self) -> list[QueueStatus]:
        """Depth, age, running and dead counts per queue."""
        return await self._run(admin.queue_status)

    async def queue_metrics(self, top_tenants: int = 10) -> list[queue_metrics.QueueMetrics]:
        """Every queue's load in one statement, the ``top_tenants`` busiest tenants named
        and the rest summed (``store/queue_metrics.py``): what the metrics export."""
        return await self._run(lambda c: queue_metrics.read_queue_metrics(c, top_tenants))

    async def register_worker(self, info: WorkerInfo) -> None:
        """Insert or refresh a worker's liveness row."""
        await self._run(lambda c: admin.register_worker(c, info))

    async def set_worker_state(self, worker_id: str, state: str) -> None:
        """Mark a worker running, stopping or stopped."""
        await self._run(lambda c: admin.set_worker_state(c, worker_id, state))

    async def list_workers(self) -> list[WorkerStatus]:
        """Registered workers with their silence in seconds."""
        return await self._run(admin.list_workers)

    async def prune_workers(self, silent_seconds: float) -> int:
        """Forget workers silent for longer than ``silent_seconds``."""
        return await self._run(lambda c: admin.prune_workers(c, silent_seconds))

    async def register_periodic(
        self, schedules: Sequence[PeriodicTask], *, now: datetime | None = None
    ) -> None:
        """Create or update cron schedules."""
        moment = now or datetime.now(UTC)
        await self._run(lambda c: periodic.register_periodic(c, schedules, moment))

    async def enqueue_due_periodic(self, *, now: datetime | None = None) -> list[int]:
        """Enqueue each schedule's latest due tick exactly once; the new task ids."""
        moment = now or datetime.now(UTC)
        created = await self._run(lambda c: periodic.enqueue_due_periodic(c, moment))
        if created:
            self._events_written()
        return created

    async def apply_retention(self, cutoff: datetime) -> tuple[list[str], int]:
        """Drop history partitions older than ``cutoff`` and prune old ledger rows."""
        dropped = await self._run(lambda c: retention.drop_old_partitions(c, cutoff))
        pruned = await self._run(lambda c: retention.prune_ledgers(c, cutoff))
        return dropped, pruned

    async def tenant_waits(self, since: datetime) -> list[TenantWaits]:
        """Per-tenant wait (enqueue to start) percentiles of tasks finished since ``since``."""
        return await self._run(lambda c: reports.tenant_waits(c, since))

    async def running_by_tenant(self) -> dict[tuple[str, str], int]:
        """Tasks running now per (tenant, queue): what the concurrency caps bound."""
        return await self._run(reports.running_by_tenant)

    async def history_summary(self, since: datetime) -> list[QueueSummary]:
        """Per-queue outcomes and latency percentiles of tasks finished since ``since``."""
        return await self._run(lambda c: reports.history_summary(c, since))

    async def begin_effect(self, owner: EffectOwner) -> EffectRecord:
        """Find a ledger key's result, or take the key to run its effect (see effects.py)."""
        return await self._run(lambda c: effects.begin_effect(c, owner))

    async def complete_effect(self, owner: EffectOwner, result: Any) -> EffectRecord:
        """Record the result of an effect the caller owns."""
        return await self._run(lambda c: effects.complete_effect(c, owner, result))

    async def abandon_effect(self, owner: EffectOwner) -> None:
        """Release a key whose effect failed."""
        await self._run(lambda c: effects.abandon_effect(c, owner))

    async def run_effect_in_transaction(
        self,
        tenant_id: str,
        key: str,
        effect: Callable[[Conn], Awaitable[Any]],
        *,
        task_id: int | None = None,
    ) -> EffectRecord:
        """Run ``effect(conn)`` in a transaction that also records its result, once per key.

        ``effect`` gets a connection of the pool inside the transaction; what it writes there
        commits with the ledger entry or not at all (see effects.run_effect_in_transaction).
        Like :meth:`transaction`, the connection is reset in full before it goes back.
        """
        async with translated_errors(), pooled(self._pool, self.acquire_observer) as conn:
            try:
                return await effects.run_effect_in_transaction(
                    conn, tenant_id, key, task_id, effect
                )
            finally:
                await _reset_or_discard(conn)
                self._events_written()  # whatever the caller enqueued has committed

    async def get_effect(self, tenant_id: str, key: str) -> EffectRecord | None:
        """The recorded result of ``key`` for the tenant, if any."""
        return await self._run(lambda c: effects.get_effect(c, tenant_id, key))

    async def record_step(
        self, tenant_id: str, key: str, result: Any, *, task_id: int
    ) -> EffectRecord:
        """Record a durable step's result (asynchronous commit; see effects.record_step)."""
        record = await self._with_partitions(
            lambda: self._run(lambda c: effects.record_step(c, tenant_id, key, task_id, result))
        )
        self._events_written()
        return record

    async def record_effect(
        self, tenant_id: str, key: str, result: Any, *, task_id: int | None = None
    ) -> tuple[EffectRecord, bool]:
        """Record a result once per (tenant, key): what holds, and whether this call wrote it."""
        return await self._run(lambda c: effects.record_effect(c, tenant_id, key, task_id, result))

    # -- API keys and readiness ---------------------------------------------------------

    async def check_schema(self) -> None:
        """Raise DatabaseUnavailable or SchemaNotReady unless the database is usable now."""
        await self._run(migrate.require_current_schema)

    async def create_api_key(
        self, key_id: str, tenant_id: str | None, secret_hash: bytes, name: str = ""
    ) -> ApiKey:
        """Store a key's hash (``tenant_id`` None: an admin key); UnknownTenant if absent."""
        return await self._run(
            lambda c: api_keys.create_key(c, key_id, tenant_id, secret_hash, name)
        )

    async def find_api_key(self, key_id: str) -> KeyCredentials | None:
        """What checking the key with this id needs; None when there is none."""
        return await self._run(lambda c: api_keys.find_key(c, key_id))

    async def list_api_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Every key (or one tenant's), newest first, without secrets."""
        return await self._run(lambda c: api_keys.list_keys(c, tenant_id))

    async def revoke_api_key(self, key_id: str) -> ApiKey | None:
        """Revoke a key; None when there is no such key."""
        return await self._run(lambda c: api_keys.revoke_key(c, key_id))


def _serves_every_caller(
    store: PostgresStore,
) -> tuple[TenantScopedStore, WorkerLeases, Maintenance, Admin]:
    """Never called: under ``mypy --strict`` this proves the engine satisfies each caller's
    protocol (the gateway's is proven where the worker hands the engine to the gateway)."""
    return store, store, store, store


async def _reset_or_discard(conn: Conn) -> None:
    """Undo what user code did to a lent connection's session, or drop the connection."""
    if conn.is_closed():
        return
    try:
        await conn.reset()
    except Exception:
        conn.terminate()  # broken or stuck: the pool opens a fresh one
