"""Monthly partitions of history tables: created ahead of time, dropped whole by retention."""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from conveyor.core.partitions import months_to_create, partitions_to_drop
from conveyor.store.connection import Conn
from conveyor.store.sql import q

PARTITIONED_TABLES = ("task_history", "llm_calls", "task_events")
PRUNE_BATCH = 10_000


async def ensure_partitions(conn: Conn, now: datetime, months_ahead: int) -> list[str]:
    """Create the partitions of this month and the next ``months_ahead``; their names."""
    names = []
    for table in PARTITIONED_TABLES:
        for month in months_to_create(now, months_ahead):
            start = date(month.year, month.month, 1)
            try:
                name = await conn.fetchval(q("ensure_month_partition"), table, start)
            except (asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                # A concurrent caller (another worker at month rollover) created it between
                # the function's check and its CREATE, and has committed: look again.
                name = await conn.fetchval(q("ensure_month_partition"), table, start)
            names.append(name)
    return names


async def drop_old_partitions(conn: Conn, cutoff: datetime) -> list[str]:
    """Drop every partition whose whole month ends at or before ``cutoff``; their names."""
    dropped = []
    for table in PARTITIONED_TABLES:
        names = [row["relname"] for row in await conn.fetch(q("list_partitions"), table)]
        for name in partitions_to_drop(names, table, cutoff):
            await conn.execute(q("drop_partition"), table, name)
            dropped.append(name)
    return dropped


async def prune_ledgers(conn: Conn, cutoff: datetime) -> int:
    """Delete idempotency keys, effects, the signals of finished tasks and LLM cap counters
    (of tasks and groups no call touched since) older than ``cutoff``, in bounded batches."""
    removed = 0
    for statement in ("prune_idempotency_keys", "prune_effects", "prune_signals", "prune_llm_caps"):
        while True:
            status = await conn.execute(q(statement), cutoff, PRUNE_BATCH)
            count = int(status.split()[-1])
            removed += count
            if count < PRUNE_BATCH:
                break
    return removed
