"""Periodic tasks: cron schedules whose every tick is enqueued exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from conveyor.core.cron import latest_tick
from conveyor.store.admission import check_rules
from conveyor.store.connection import Conn
from conveyor.store.enqueue import enqueue_batch
from conveyor.store.params import NewTask, PeriodicTask
from conveyor.store.sql import q


async def register_periodic(conn: Conn, schedules: Sequence[PeriodicTask], now: datetime) -> None:
    """Create or update schedules; a new one first fires at its next tick after ``now``."""
    async with conn.transaction():
        # Refused now: a schedule of an unknown tenant, or of a role its plan does not
        # allow, would fail every later tick.
        await check_rules(conn, [NewTask(queue=s.queue, tenant_id=s.tenant_id) for s in schedules])
        for s in schedules:
            await conn.execute(
                q("register_periodic"),
                s.name,
                s.cron,
                s.queue,
                s.tenant_id,
                s.payload,
                s.priority,
                s.max_attempts,
                latest_tick(s.cron, now),
            )


async def enqueue_due_periodic(conn: Conn, now: datetime) -> list[int]:
    """Enqueue the latest due tick of every schedule that has one; the new task ids.

    Each tick is taken in a transaction that moves ``last_tick`` forward and enqueues the
    task, so however many workers run this at once, a tick is enqueued exactly once.
    """
    created: list[int] = []
    for row in await conn.fetch(q("list_periodic")):
        tick = latest_tick(row["cron"], now)
        if row["last_tick"] is not None and row["last_tick"] >= tick:
            continue
        async with conn.transaction():
            taken = await conn.fetchrow(q("advance_periodic_tick"), row["name"], tick)
            if taken is None:
                continue  # another worker took this tick
            task = NewTask(
                queue=taken["queue"],
                payload={**taken["payload"], "_tick": tick.isoformat()},
                tenant_id=taken["tenant_id"],
                priority=taken["priority"],
                max_attempts=taken["max_attempts"],
                idempotency_key=f"periodic:{taken['name']}:{tick.isoformat()}",
            )
            result = (await enqueue_batch(conn, [task]))[0]
            if result.created:
                created.append(result.task_id)
    return created
