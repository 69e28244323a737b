"""The engine's event-log operations: the tail the API fans out, a tenant's or a task's
events after a position, agents' own events (``events.py``), and live LLM output
(``chunks.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from conveyor.core.events import EventPosition
from conveyor.store import chunks, events
from conveyor.store.engine import PoolEngine
from conveyor.store.event_records import (
    EventFilter,
    LiveChunk,
    LogHorizon,
    NewEvent,
    TaskEvent,
)


class EventOperations(PoolEngine):
    """What the API's event streams, workers (``ctx.emit``) and operators do with the log.

    Reads never go below a horizon this store has already seen (``_final_below``): the
    database's horizon can move back, and an event stream relies on a later read returning
    everything an earlier one (the hub's) could (api/events/streams.py).
    """

    _final_below = 0
    """Every transaction id below this has ended (or wrote in another database)."""

    def _saw(self, read: Sequence[TaskEvent]) -> list[TaskEvent]:
        if read:  # an event was below the horizon of its read: so is everything up to it
            self._final_below = max(self._final_below, read[-1].position.xid + 1)
        return list(read)

    async def event_tail(
        self, after: EventPosition, limit: int = events.READ_LIMIT
    ) -> list[TaskEvent]:
        """Every tenant's events after ``after``, oldest first, up to the horizon."""
        floor = self._final_below
        return self._saw(await self._run(lambda c: events.tail(c, after, limit, floor)))

    async def event_head(self) -> EventPosition:
        """The last position a reader can pass now (where a live-only reader starts)."""
        floor = self._final_below
        return await self._run(lambda c: events.head(c, floor))

    async def event_horizon(self) -> LogHorizon:
        """The log's horizon and the next transaction id (see ``LogHorizon``)."""
        floor = self._final_below
        found = await self._run(lambda c: events.horizon(c, floor))
        self._final_below = max(self._final_below, found.horizon)
        return found

    async def event_pending(self, after: EventPosition) -> bool:
        """Whether committed events after ``after`` wait behind the horizon."""
        floor = self._final_below
        return await self._run(lambda c: events.pending(c, after, floor))

    async def tenant_events(
        self,
        tenant_id: str,
        after: EventPosition,
        narrow: EventFilter,
        limit: int = events.READ_LIMIT,
    ) -> list[TaskEvent]:
        """One tenant's events after ``after`` that pass ``narrow``; tenant required."""
        floor = self._final_below
        return self._saw(
            await self._run(
                lambda c: events.tenant_events(c, tenant_id, after, narrow, limit, floor)
            )
        )

    async def task_events(
        self,
        tenant_id: str,
        task_id: int,
        after: EventPosition,
        limit: int = events.READ_LIMIT,
    ) -> list[TaskEvent]:
        """One task's events after ``after``; none for another tenant's task."""
        floor = self._final_below
        return self._saw(
            await self._run(
                lambda c: events.task_events(c, tenant_id, task_id, after, limit, floor)
            )
        )

    async def append_events(self, new: Sequence[NewEvent]) -> int:
        """Write agents' own events (``ctx.emit``) in one statement; how many."""
        count = await self._with_partitions(lambda: self._run(lambda c: events.append(c, new)))
        self._events_written()
        return count

    # -- live LLM output (chunks.py) ------------------------------------------------------

    async def append_chunks(self, new: Sequence[LiveChunk]) -> None:
        """Write a token relay's batch of live output in one statement."""
        await self._run(lambda c: chunks.append(c, new))
        self.chunk_wake.poke()

    async def chunks_after(
        self, watched: Sequence[tuple[str, int, tuple[int, int]]], limit: int = 5000
    ) -> list[LiveChunk]:
        """For each watched ``(tenant_id, task_id, cursor)``, the live output after it."""
        return await self._run(lambda c: chunks.after(c, watched, limit))

    async def tasks_ended(self, task_ids: Sequence[int]) -> set[int]:
        """Which of ``task_ids`` have ended (a live stream of them ends with its output)."""
        return await self._run(lambda c: chunks.ended(c, task_ids))

    async def prune_chunks(self, cutoff: datetime) -> int:
        """Delete the live output of ended tasks written before ``cutoff``."""
        return await self._run(lambda c: chunks.prune(c, cutoff))
