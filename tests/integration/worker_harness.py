"""Run a real Worker in-process against a test's store, and wait for tasks to finish."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from conveyor import App
from conveyor.app import TaskHook
from conveyor.errors import ConveyorError
from conveyor.gateway import Gateway
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import TaskRecord
from conveyor.worker.options import WorkerOptions
from conveyor.worker.runtime import Worker


@asynccontextmanager
async def running(
    app: App,
    store: PostgresStore,
    *,
    llm: Gateway | None = None,
    hooks: Sequence[TaskHook] = (),
    **options: Any,
) -> AsyncIterator[Worker]:
    """A worker serving ``app`` until the block ends, with a fast promoter alongside.

    ``llm`` and ``hooks`` are handed to the worker as a composition root would; the test
    owns the gateway (the worker does not close it).
    """
    opts = {"poll_seconds": 0.1, "heartbeat_seconds": 0.2, "lease_seconds": 5, **options}
    worker = Worker(app, store, WorkerOptions(**opts), llm=llm, hooks=hooks)
    stop = asyncio.Event()

    async def promote() -> None:
        while True:
            with contextlib.suppress(ConveyorError):  # a test may cut the database away
                await store.promote_due()
            await asyncio.sleep(0.05)

    promoter = asyncio.create_task(promote())
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        promoter.cancel()


async def settle(store: PostgresStore, task_id: int, timeout: float = 15) -> TaskRecord:
    """Wait until the task reaches a terminal state; returns its record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = await store.get_task(task_id)
        if record.state.is_terminal:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} still {record.state} after {timeout}s")
