"""The task event log: read it after a position, and append an agent's own events.

Lifecycle events are written by the statements that change a task's state (enqueue, claim,
finish, retry, release, reap, cancel, steps and LLM call records); this module reads the
log and writes what agents emit. See migrations/0014_task_events.sql for the ordering rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.core.events import EventPosition
from conveyor.store.connection import Conn
from conveyor.store.event_records import EventFilter, LogHorizon, NewEvent, TaskEvent
from conveyor.store.sql import q

READ_LIMIT = 1000
"""Events per read; a reader that got this many reads again at once."""


async def tail(
    conn: Conn, after: EventPosition, limit: int = READ_LIMIT, floor: int = 0
) -> list[TaskEvent]:
    """Every tenant's events after ``after``, oldest first, up to the horizon (at least
    ``floor``: a horizon already seen, see queries/events.sql)."""
    rows = await conn.fetch(q("event_tail"), after.xid, after.id, limit, floor)
    return [_event(row) for row in rows]


async def head(conn: Conn, floor: int = 0) -> EventPosition:
    """The position of the last event a reader can pass now."""
    row = await conn.fetchrow(q("event_head"), floor)
    assert row is not None  # an aggregate always returns a row
    return EventPosition(row["xid"], row["id"])


async def horizon(conn: Conn, floor: int = 0) -> LogHorizon:
    """Where the log stands now: its horizon and the next transaction id."""
    row = await conn.fetchrow(q("event_horizon"), floor)
    assert row is not None
    return LogHorizon(horizon=row["horizon"], next_xid=row["next_xid"])


async def pending(conn: Conn, after: EventPosition, floor: int = 0) -> bool:
    """Whether committed events after ``after`` wait behind the horizon."""
    return bool(await conn.fetchval(q("event_pending"), after.xid, after.id, floor))


async def tenant_events(
    conn: Conn,
    tenant_id: str,
    after: EventPosition,
    narrow: EventFilter,
    limit: int = READ_LIMIT,
    floor: int = 0,
) -> list[TaskEvent]:
    """One tenant's events after ``after`` that pass ``narrow``, oldest first."""
    rows = await conn.fetch(
        q("tenant_events"),
        tenant_id,
        after.xid,
        after.id,
        narrow.group_id,
        narrow.queue,
        narrow.task_id,
        limit,
        floor,
    )
    return [_event(row) for row in rows]


async def task_events(
    conn: Conn,
    tenant_id: str,
    task_id: int,
    after: EventPosition,
    limit: int = READ_LIMIT,
    floor: int = 0,
) -> list[TaskEvent]:
    """One task's events after ``after``, oldest first (none for another tenant's task)."""
    rows = await conn.fetch(q("task_events"), tenant_id, task_id, after.xid, after.id, limit, floor)
    return [_event(row) for row in rows]


async def append(conn: Conn, events: Sequence[NewEvent]) -> int:
    """Write agents' own events in one statement; how many were written."""
    if not events:
        return 0
    rows = [
        {
            "tenant_id": e.tenant_id,
            "task_id": e.task_id,
            "queue": e.queue,
            "group_id": e.group_id,
            "kind": e.kind,
            "attempt": e.attempt,
            "data": e.data,
        }
        for e in events
    ]
    count = await conn.fetchval(q("append_events"), rows)
    return int(count or 0)


def _event(row: Any) -> TaskEvent:
    return TaskEvent(
        position=EventPosition(row["xid"], row["id"]),
        at=row["at"],
        tenant_id=row["tenant_id"],
        task_id=row["task_id"],
        queue=row["queue"],
        group_id=row["group_id"],
        kind=row["kind"],
        attempt=row["attempt"],
        data=row["data"],
    )
