"""Read-only reports over finished tasks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from conveyor.store.connection import Conn
from conveyor.store.sql import q


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


async def history_summary(conn: Conn, since: datetime) -> list[QueueSummary]:
    """Per-queue summary of tasks finished at or after ``since``."""
    rows = await conn.fetch(q("history_summary"), since)
    return [QueueSummary(**dict(row)) for row in rows]


@dataclass(frozen=True, slots=True)
class TenantWaits:
    """How long one tenant's finished tasks waited between enqueue and start (seconds)."""

    tenant_id: str
    tasks: int
    wait_p50: float | None
    wait_p99: float | None


async def tenant_waits(conn: Conn, since: datetime) -> list[TenantWaits]:
    """Per-tenant wait percentiles of tasks finished at or after ``since``."""
    return [TenantWaits(**dict(row)) for row in await conn.fetch(q("tenant_waits"), since)]


async def running_by_tenant(conn: Conn) -> dict[tuple[str, str], int]:
    """Tasks running now per (tenant, queue)."""
    rows = await conn.fetch(q("running_by_tenant"))
    return {(row["tenant_id"], row["queue"]): row["running"] for row in rows}
