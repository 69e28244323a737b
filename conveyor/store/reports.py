"""Read-only reports over tasks: finished ones, and one tenant's month."""

from __future__ import annotations

from datetime import datetime

from conveyor.store.connection import Conn
from conveyor.store.records import QueueSummary, TenantWaits
from conveyor.store.sql import q
from conveyor.types import TaskState


async def history_summary(conn: Conn, since: datetime) -> list[QueueSummary]:
    """Per-queue summary of tasks finished at or after ``since``."""
    rows = await conn.fetch(q("history_summary"), since)
    return [QueueSummary(**dict(row)) for row in rows]


async def tenant_waits(conn: Conn, since: datetime) -> list[TenantWaits]:
    """Per-tenant wait percentiles of tasks finished at or after ``since``."""
    return [TenantWaits(**dict(row)) for row in await conn.fetch(q("tenant_waits"), since)]


async def running_by_tenant(conn: Conn) -> dict[tuple[str, str], int]:
    """Tasks running now per (tenant, queue)."""
    rows = await conn.fetch(q("running_by_tenant"))
    return {(row["tenant_id"], row["queue"]): row["running"] for row in rows}


async def tenant_task_counts(
    conn: Conn, tenant_id: str, since: datetime, until: datetime
) -> dict[str, dict[TaskState, int]]:
    """A tenant's tasks created in [since, until), per queue and state."""
    counts: dict[str, dict[TaskState, int]] = {}
    for row in await conn.fetch(q("tenant_task_counts"), tenant_id, since, until):
        by_state = counts.setdefault(row["queue"], {})
        state = TaskState(row["state"])
        by_state[state] = by_state.get(state, 0) + row["n"]
    return counts
