"""Single submits of a tenant arriving together are written in one statement.

Each submit is a transaction that advances the tenant's fairness clock and commits: the
clock's row lock and the commit's flush put one tenant's concurrent submits in single file,
a few milliseconds each. The coalescer holds a tenant's first submit for ``window`` seconds
(or until ``max_items`` are waiting), then writes all of them with one ``enqueue_batch``
through the tenant's view: one lock, one commit. Each caller gets its own result.

A batch that fails is not allowed to fail its neighbours: it is written again one task at a
time, so each caller gets exactly its own answer (a quota that the batch as a whole would
cross, say, refuses only the tasks past it). Repeated idempotency keys within a batch behave
as across batches: the first makes the task, the others are told its id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from conveyor.errors import (
    IdempotencyConflict,
    InvalidTask,
    PlanViolation,
    QuotaExceeded,
    UnknownTenant,
)
from conveyor.store.params import NewTask
from conveyor.store.records import EnqueueResult

Enqueue = Callable[[str, Sequence[NewTask]], Awaitable[list[EnqueueResult]]]
"""``(tenant, tasks) -> results``: the tenant view's enqueue_batch."""


class SubmitCoalescer:
    """Gathers one tenant's concurrent single submits into one enqueue_batch."""

    def __init__(self, enqueue: Enqueue, *, window: float = 0.001, max_items: int = 500) -> None:
        self._enqueue = enqueue
        self._window = window
        self._max_items = max_items
        self._waiting: dict[str, list[tuple[NewTask, asyncio.Future[EnqueueResult]]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def submit(self, tenant: str, task: NewTask) -> EnqueueResult:
        """Enqueue ``task`` for ``tenant`` with whatever else arrives in the window."""
        if self._window <= 0:
            (result,) = await self._enqueue(tenant, [task])
            return result
        future: asyncio.Future[EnqueueResult] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(tenant, [])
        waiting.append((task, future))
        if len(waiting) == 1:
            self._start(self._flush_after_window(tenant, waiting))
        elif len(waiting) >= self._max_items:
            self._waiting.pop(tenant, None)
            self._start(self._flush(tenant, waiting))
        return await future

    def _start(self, flush: Awaitable[None]) -> None:
        task = asyncio.ensure_future(flush)
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_after_window(
        self, tenant: str, waiting: list[tuple[NewTask, asyncio.Future[EnqueueResult]]]
    ) -> None:
        await asyncio.sleep(self._window)
        if self._waiting.get(tenant) is waiting:  # not already flushed for being full
            del self._waiting[tenant]
            await self._flush(tenant, waiting)

    async def _flush(
        self, tenant: str, waiting: list[tuple[NewTask, asyncio.Future[EnqueueResult]]]
    ) -> None:
        tasks = [task for task, _ in waiting]
        try:
            results = await self._enqueue(tenant, tasks)
        except _ONE_TASKS_FAULT as exc:
            if len(waiting) == 1:
                _settle(waiting[0][1], error=exc)
                return
            await self._each_on_its_own(tenant, waiting)
            return
        except BaseException as exc:
            # The database's fault (or a cancel at shutdown): the batch may even have been
            # committed with its answer lost, so writing each again could store tasks
            # twice. Every request gets the error; a client retries with its key.
            for _, future in waiting:
                _settle(future, error=exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(waiting, results, strict=True):
            _settle(future, result=result)

    async def _each_on_its_own(
        self, tenant: str, waiting: list[tuple[NewTask, asyncio.Future[EnqueueResult]]]
    ) -> None:
        """One task's fault must not be its neighbours': each alone, in order."""
        for index, (task, future) in enumerate(waiting):
            try:
                (result,) = await self._enqueue(tenant, [task])
            except Exception as alone:
                _settle(future, error=alone)
            except BaseException as exc:  # cancelled: nobody left waiting forever
                for _, rest in waiting[index:]:
                    _settle(rest, error=exc)
                raise
            else:
                _settle(future, result=result)


# Errors that are about one task of a batch (a refusal the database made before writing
# anything): the batch is written again one task at a time so only that request fails.
_ONE_TASKS_FAULT = (InvalidTask, IdempotencyConflict, PlanViolation, QuotaExceeded, UnknownTenant)


def _settle(
    future: asyncio.Future[EnqueueResult],
    *,
    result: EnqueueResult | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():  # its request went away (client disconnected)
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
