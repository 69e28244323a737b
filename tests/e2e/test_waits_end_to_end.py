"""Human in the loop over real processes: a task waits for approval across a worker
restart and is resumed by a signal sent over HTTP; its step and its effect each ran once.
And a worker whose tasks are all waiting holds none of them: it runs other work at once."""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor import Client, SignalRefused
from conveyor.core.api_keys import new_key
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.api_process import ApiProcess
from tests.e2e.test_worker_process import WorkerProcess

APP = "tests.e2e.waiting_agents:app"


async def until(check: Callable[[], Any], what: str, timeout: float = 60) -> None:
    """Poll ``check()`` (sync or async) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def lines(ledger: Path, what: str) -> list[str]:
    path = ledger / f"{what}.log"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.timeout(180)
async def test_a_task_waits_for_approval_across_a_worker_restart(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    await store.create_tenant("acme")
    issued = new_key(secrets.token_bytes)
    await store.create_api_key(issued.key_id, "acme", issued.secret_hash, "e2e")
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    api = ApiProcess(database_dsn, tmp_path / "api.log")
    first = WorkerProcess(database_dsn, tmp_path / "first.log", app=APP)
    second: WorkerProcess | None = None
    try:
        api.wait_ready()
        await until(lambda: store.queue_declarations(["approve"]), "the worker to register")
        with Client(api.url, issued.token) as client:
            made = client.submit("approve", {"topic": "spring", "ledger": str(ledger)})
            await until(lambda: client.get(made.id).state is TaskState.WAITING, "the task to wait")
            waiting = client.get(made.id)
            assert waiting.waiting_for == "approval" and waiting.wait_until is not None
            assert waiting.attempts == 0  # the wait is not charged

            assert first.stop() == 0, first.output  # SIGTERM: a clean stop
            record = await store.get_task(made.id)
            assert record.state is TaskState.WAITING and record.worker_id is None

            second = WorkerProcess(database_dsn, tmp_path / "second.log", app=APP)
            sent = client.signal(made.id, "approval", {"approved": True, "by": "ana"})
            assert sent.resumed and not sent.duplicate
            await until(
                lambda: client.get(made.id).state is TaskState.SUCCEEDED, "the task to finish"
            )
            done = client.get(made.id)
            with pytest.raises(SignalRefused) as late:  # a finished task takes no signal
                client.signal(made.id, "approval", {"approved": False})
            assert late.value.reason == "finished"
    finally:
        if second is not None:
            assert second.stop() == 0, second.output
        if first.process.poll() is None:
            first.stop()
        api.stop()
    assert done.result == {
        "text": "a post about spring",
        "receipt": {"sent_to": "reviewer@example.com"},
        "decision": {"approved": True, "by": "ana"},
        "attempt": 1,
    }
    assert done.attempts == 1
    # the step and the effect ran once each, though the handler ran twice (in two processes)
    assert lines(ledger, "draft") == ["drafted"]
    assert lines(ledger, "notify") == ["a post about spring"]
    assert lines(ledger, "runs") == ["1", "1"]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_ten_thousand_waiting_tasks_hold_no_worker_slot(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    """A worker of 16 slots parks 10,000 tasks: each run ends in ctx.wait_for and gives its
    slot back. With all 10,000 waiting, no task holds a lease or a worker, and the same
    worker runs new work at once; signals then finish the parked ones."""
    parked = await store.enqueue_batch([NewTask("park", {"n": n}) for n in range(10_000)])
    ids = [p.task_id for p in parked]
    worker = WorkerProcess(database_dsn, tmp_path / "worker.log", "--concurrency", "16", app=APP)
    try:

        async def all_waiting() -> bool:
            return await count(store, "state = 'waiting'") == 10_000

        await until(all_waiting, "10,000 tasks to wait", timeout=240)
        # nothing is held: no lease, no worker, no running task
        assert await count(store, "lease_token IS NOT NULL OR worker_id IS NOT NULL") == 0
        assert await count(store, "state <> 'waiting'") == 0
        [row] = [w for w in await store.list_workers() if w.state == "running"]
        assert row.concurrency == 16 and row.running == 0

        quick = await store.enqueue_batch([NewTask("quick", {"n": n}) for n in range(50)])

        async def quick_done() -> bool:
            records = [await store.get_task(q.task_id) for q in quick]
            return all(r.state is TaskState.SUCCEEDED for r in records)

        await until(quick_done, "other work to run beside 10,000 waiting tasks")
        assert await count(store, "state = 'waiting'") == 10_000  # still parked

        for task_id in ids[:100]:
            await store.deliver_signal(task_id, "go", {"n": task_id})

        async def signalled_done() -> bool:
            states = [(await store.get_task(i)).state for i in ids[:100]]
            return set(states) == {TaskState.SUCCEEDED}

        await until(signalled_done, "the signalled tasks to finish")
        assert await count(store, "state = 'waiting'") == 9_900
        assert (await store.get_task(ids[0])).result == {"n": ids[0]}
    finally:
        assert worker.stop() == 0, worker.output


async def count(store: PostgresStore, where: str) -> int:
    """Rows of the hot table matching ``where`` (a fixed condition of this module)."""
    async with store.transaction() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM tasks WHERE {where}"))
