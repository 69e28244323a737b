"""Operations: tenants, pausing queues, the dead-letter queue, status and workers."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from conveyor.core.llm_caps import CapDimension, LLMCaps
from conveyor.errors import ConfigurationError
from conveyor.store.connection import Conn
from conveyor.store.llm_caps import caps_from
from conveyor.store.params import (
    PlanUpdate,
    QueueLimits,
    ReplayFilter,
    TenantAgentUpdate,
    WorkerInfo,
)
from conveyor.store.records import (
    DeadTask,
    Plan,
    QueueSettings,
    QueueStatus,
    Tenant,
    TenantAgent,
    WorkerStatus,
)
from conveyor.store.sql import q


async def create_tenant(
    conn: Conn, tenant_id: str, name: str | None, weight: float | None, plan: str | None = None
) -> Tenant:
    """Create a tenant, or update the name, weight and plan given of an existing one."""
    try:
        row = await conn.fetchrow(q("create_tenant"), tenant_id, name, weight, plan)
    except asyncpg.ForeignKeyViolationError:
        plans = ", ".join(p.id for p in await list_plans(conn))
        raise ConfigurationError(f"unknown plan {plan!r}; the plans are: {plans}") from None
    assert row is not None
    return Tenant(**dict(row))


async def list_plans(conn: Conn) -> list[Plan]:
    """Every plan, smallest first."""
    return [_plan(r) for r in await conn.fetch(q("list_plans"))]


async def update_plan(conn: Conn, update: PlanUpdate) -> Plan:
    """Change a plan (None fields keep their value); ConfigurationError if there is none."""
    rate = update.start_rate
    row = await conn.fetchrow(
        q("update_plan"),
        update.plan_id,
        update.max_concurrent_per_role,
        update.monthly_task_limit,
        update.weight,
        rate.limit if rate else None,
        rate.interval_seconds if rate else None,
        list(update.allowed_roles) if update.allowed_roles is not None else None,
        update.monthly_token_budget,
        update.llm_requests_per_minute,
        update.llm_tokens_per_minute,
        update.monthly_spend_limit,
        update.run_caps is not None,
        *_cap_args(update.run_caps),
        update.group_caps is not None,
        *_cap_args(update.group_caps),
    )
    if row is None:
        plans = ", ".join(p.id for p in await list_plans(conn))
        raise ConfigurationError(f"unknown plan {update.plan_id!r}; the plans are: {plans}")
    return _plan(row)


_CAP_COLUMNS = tuple(
    f"{scope}_llm_{dimension}" for scope in ("run", "group") for dimension in CapDimension
)


def _plan(row: Any) -> Plan:
    fields = {k: v for k, v in dict(row).items() if k not in _CAP_COLUMNS}
    return Plan(
        **{**fields, "allowed_roles": _tuple(row["allowed_roles"])},
        run_caps=caps_from(row, "run_llm_"),
        group_caps=caps_from(row, "group_llm_"),
    )


def _cap_args(caps: LLMCaps | None) -> tuple[int | None, int | None, Decimal | None]:
    if caps is None:
        return None, None, None
    return caps.calls, caps.tokens, caps.cost


async def set_queue_limits(conn: Conn, limits: QueueLimits) -> QueueSettings:
    """Set a role's global cap, starvation guard, depth threshold and lifecycle events
    switch (None fields keep their value)."""
    row = await conn.fetchrow(
        q("set_queue_limits"),
        limits.queue,
        limits.max_running,
        limits.aging_seconds,
        limits.depth_threshold,
        limits.events,
    )
    assert row is not None
    return QueueSettings(**dict(row))


async def set_tenant_agent(conn: Conn, override: TenantAgentUpdate) -> TenantAgent:
    """Create or update a tenant's override of one role (None fields keep their value)."""
    row = await conn.fetchrow(
        q("set_tenant_agent"),
        override.tenant_id,
        override.queue,
        override.enabled,
        override.max_concurrent,
        override.monthly_task_limit,
        override.model_override,
        override.adapter_override,
        override.start_rate.limit if override.start_rate else None,
        override.start_rate.interval_seconds if override.start_rate else None,
    )
    assert row is not None
    return TenantAgent(**dict(row))


async def list_tenant_agents(conn: Conn, tenant_id: str) -> list[TenantAgent]:
    """A tenant's role overrides."""
    return [TenantAgent(**dict(r)) for r in await conn.fetch(q("list_tenant_agents"), tenant_id)]


async def tenant_usage(conn: Conn, tenant_id: str, month: date) -> dict[str, int]:
    """Tasks accepted this month per queue, and in all under ``"*"``."""
    rows = await conn.fetch(q("tenant_usage"), tenant_id, month)
    return {row["queue"]: row["tasks"] for row in rows}


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


async def list_tenants(conn: Conn) -> list[Tenant]:
    """Every tenant, by id."""
    return [Tenant(**dict(row)) for row in await conn.fetch(q("list_tenants"))]


async def get_tenant(conn: Conn, tenant_id: str) -> Tenant | None:
    """One tenant; None when there is none."""
    row = await conn.fetchrow(q("get_tenant"), tenant_id)
    return None if row is None else Tenant(**dict(row))


async def list_queue_settings(conn: Conn) -> list[QueueSettings]:
    """The switches and limits of every queue that has a row (paused, capped, declared)."""
    return [QueueSettings(**dict(row)) for row in await conn.fetch(q("list_queue_settings"))]


async def set_queue_paused(conn: Conn, queue: str, paused: bool) -> None:
    """Pause (no claims) or resume a queue; enqueueing into a paused queue still works."""
    async with conn.transaction():
        await conn.execute(q("set_queue_paused"), queue, paused)
        if not paused:
            await conn.execute(q("notify_queues"), [queue])


async def list_dead(
    conn: Conn, queue: str | None, tenant_id: str | None, limit: int
) -> list[DeadTask]:
    """The newest dead tasks first, optionally of one queue or tenant."""
    rows = await conn.fetch(q("list_dead"), queue, tenant_id, limit)
    return [DeadTask(**dict(row)) for row in rows]


async def replay_dead(conn: Conn, which: ReplayFilter, limit: int) -> list[int]:
    """Move up to ``limit`` dead tasks back to the queue with fresh attempts; their ids."""
    async with conn.transaction():
        rows = await conn.fetch(
            q("replay_dead"),
            list(which.task_ids) if which.task_ids else None,
            which.queue,
            which.tenant_id,
            which.everything,
            limit,
        )
        if rows:
            await conn.execute(q("notify_queues"), [row["queue"] for row in rows])
    return [row["id"] for row in rows]


async def queue_status(conn: Conn) -> list[QueueStatus]:
    """Depth, age and dead count per queue, paused ones flagged."""
    depths = {row["queue"]: row for row in await conn.fetch(q("queue_depths"))}
    dead = {row["queue"]: row["dead"] for row in await conn.fetch(q("dead_counts"))}
    paused = {row["name"] for row in await conn.fetch(q("paused_queues"))}
    statuses = []
    for name in sorted(set(depths) | set(dead) | paused):
        row = depths.get(name)
        statuses.append(
            QueueStatus(
                queue=name,
                queued=row["queued"] if row else 0,
                scheduled=row["scheduled"] if row else 0,
                running=row["running"] if row else 0,
                dead=dead.get(name, 0),
                oldest_queued_seconds=row["oldest_queued_seconds"] if row else None,
                paused=name in paused,
                waiting=row["waiting"] if row else 0,
            )
        )
    return statuses


async def register_worker(conn: Conn, info: WorkerInfo) -> None:
    """Insert or refresh the worker's liveness row."""
    await conn.execute(
        q("upsert_worker"), info.worker_id, info.host, info.pid, list(info.queues), info.concurrency
    )


async def set_worker_state(conn: Conn, worker_id: str, state: str) -> None:
    """Mark a worker running, stopping or stopped."""
    await conn.execute(q("set_worker_state"), worker_id, state)


async def list_workers(conn: Conn) -> list[WorkerStatus]:
    """Every registered worker with how long it has been silent."""
    rows = await conn.fetch(q("list_workers"))
    return [WorkerStatus(**{**dict(row), "queues": tuple(row["queues"])}) for row in rows]


async def prune_workers(conn: Conn, silent_seconds: float) -> int:
    """Forget workers silent for longer than ``silent_seconds``; how many were removed."""
    status = await conn.execute(q("prune_workers"), silent_seconds)
    return int(status.split()[-1])
