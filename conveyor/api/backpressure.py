"""Backpressure at the door: queues past their depth threshold refuse new work by priority.

Each API process holds a snapshot of the queues that shed (``conveyor queues set Q
--depth-threshold N``): their depth and drain rate, read by a background task every
``period`` seconds in one statement (``store.queue_loads``). A submit checks the snapshot
in memory, so reading the depth adds no round trip per request. The rule is
``core/shedding.py`` (batch at the threshold, normal at twice, urgent at four times);
a refusal is ``429 overloaded`` with ``Retry-After`` (the time the excess takes to drain at
the measured rate), and nothing of it is stored.

How far the depth may overshoot a mark: the snapshot is at most one period old, and each
process adds what it accepted itself since, so the overshoot is what *other* processes
accept within one period. When the refresher cannot reach the database for longer than
``stale_after``, every submit answers ``503 database-unavailable`` with ``Retry-After``
without trying it (the submit would fail on the same database).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog

from conveyor.api.problems import Problem
from conveyor.core.shedding import admit
from conveyor.errors import ConveyorError, DatabaseUnavailable
from conveyor.store.records import QueueLoad

DRAIN_WINDOW = 60.0
"""Seconds of finished tasks the drain rate is measured over."""

STALE_AFTER = 5.0
"""Seconds without a successful read of an unreachable database before submits get 503."""

log = structlog.get_logger("conveyor.api")


@dataclass
class _Queue:
    threshold: int
    depth: int
    drain_per_second: float


class DepthWatch:
    """The process's snapshot of the queues that shed, and the check of a submit."""

    def __init__(
        self,
        read: Callable[[float], Awaitable[list[QueueLoad]]],
        *,
        period: float = 1.0,
        stale_after: float = STALE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._period = period
        self._stale_after = stale_after
        self._clock = clock
        self._queues: dict[str, _Queue] = {}
        self._read_at = clock()
        self._unreachable: str | None = None

    async def refresh(self) -> None:
        """Read the loads once; on failure keep the last snapshot (and note an outage)."""
        try:
            async with asyncio.timeout(self._stale_after):  # a silent connection is a failure
                loads = await self._read(DRAIN_WINDOW)
        except (ConveyorError, TimeoutError) as exc:
            # whatever the failure, the snapshot only ages: past stale_after, submits to
            # shedding queues answer 503 rather than trust it
            if not isinstance(exc, DatabaseUnavailable):
                log.warning("queue_depth_read_failed", error=str(exc))
            self._unreachable = str(exc) or type(exc).__name__
            return
        self._queues = {
            load.name: _Queue(load.depth_threshold, load.depth, (load.finished or 0) / DRAIN_WINDOW)
            for load in loads
        }
        self._read_at = self._clock()
        self._unreachable = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DepthWatch]:
        """Refresh in the background while the context is open."""
        await self.refresh()
        task = asyncio.create_task(self._loop(), name="conveyor-depth-watch")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                await self.refresh()
            except Exception as exc:  # a bug here must not end the refresher for good
                log.error("queue_depth_refresh_crashed", error=str(exc), exc_info=exc)

    def check(self, tasks: Iterable[tuple[str, int]]) -> None:
        """Raise the problem refusing these (queue, priority) tasks, if any is refused."""
        if self._unreachable is not None and self._clock() - self._read_at > self._stale_after:
            raise Problem(
                503,
                "database-unavailable",
                "the database is unreachable; retry later",
                headers={"Retry-After": "5"},
            )
        for queue, priority in tasks:
            state = self._queues.get(queue)
            if state is None:
                continue
            refusal = admit(state.threshold, state.depth, priority, state.drain_per_second)
            if refusal is not None:
                raise Problem(
                    429,
                    "overloaded",
                    f"queue {queue!r} holds {refusal.depth} waiting tasks, at or past the mark "
                    f"of {refusal.mark} for priority {priority}: lower priorities are refused "
                    f"first; retry after {refusal.retry_after} s",
                    headers={"Retry-After": str(refusal.retry_after)},
                    queue=queue,
                    priority=priority,
                )

    def accepted(self, queues: Iterable[str]) -> None:
        """Count tasks this process just added to the snapshot (until the next read)."""
        for queue in queues:
            state = self._queues.get(queue)
            if state is not None:
                state.depth += 1
