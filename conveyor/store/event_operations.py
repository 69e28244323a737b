"""The engine's event-log operations: the tail the API fans out, a tenant's or a task's
events after a position, agents' own events, (``events.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.core.events import EventPosition
from conveyor.store import events
from conveyor.store.engine import PoolEngine
from conveyor.store.event_records import EventFilter, LogHorizon, NewEvent, TaskEvent


class EventOperations(PoolEngine):
    """What the API's event streams, workers (``ctx.emit``) and operators do with the log."""

    async def event_tail(
        self, after: EventPosition, limit: int = events.READ_LIMIT
    ) -> list[TaskEvent]:
        """Every tenant's events after ``after``, oldest first, up to the horizon."""
        return await self._run(lambda c: events.tail(c, after, limit))

    async def event_head(self) -> EventPosition:
        """The last position a reader can pass now (where a live-only reader starts)."""
        return await self._run(events.head)

    async def event_horizon(self) -> LogHorizon:
        """The log's horizon and the next transaction id (see ``LogHorizon``)."""
        return await self._run(events.horizon)

    async def event_pending(self, after: EventPosition) -> bool:
        """Whether committed events after ``after`` wait behind the horizon."""
        return await self._run(lambda c: events.pending(c, after))

    async def tenant_events(
        self,
        tenant_id: str,
        after: EventPosition,
        narrow: EventFilter,
        limit: int = events.READ_LIMIT,
    ) -> list[TaskEvent]:
        """One tenant's events after ``after`` that pass ``narrow``; tenant required."""
        return await self._run(lambda c: events.tenant_events(c, tenant_id, after, narrow, limit))

    async def task_events(
        self,
        tenant_id: str,
        task_id: int,
        after: EventPosition,
        limit: int = events.READ_LIMIT,
    ) -> list[TaskEvent]:
        """One task's events after ``after``; none for another tenant's task."""
        return await self._run(lambda c: events.task_events(c, tenant_id, task_id, after, limit))

    async def append_events(self, new: Sequence[NewEvent]) -> int:
        """Write agents' own events (``ctx.emit``) in one statement; how many."""
        return await self._with_partitions(lambda: self._run(lambda c: events.append(c, new)))
