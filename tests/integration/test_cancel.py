"""Cancelling on real PostgreSQL: waiting tasks at once, running ones by request, finished
ones report their end state; ids are scoped to their tenant."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.errors import TaskNotFound
from conveyor.store.params import Finish, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import active_ids, claim, enqueue_many, fetchval, history_ids, lease


async def test_queued_task_is_cancelled_at_once(store: PostgresStore) -> None:
    [task_id, other] = await enqueue_many(store, 2)
    assert await store.cancel(task_id, reason="customer changed their mind") is (
        TaskState.CANCELLED
    )
    record = await store.get_task(task_id)
    assert record.state is TaskState.CANCELLED
    assert record.last_error == {"type": "Cancelled", "message": "customer changed their mind"}
    assert record.finished_at is not None
    assert await active_ids(store) == {other}
    assert await history_ids(store) == {task_id}
    assert [c.id for c in await claim(store)] == [other]  # never delivered


async def test_scheduled_task_is_cancelled_at_once(store: PostgresStore) -> None:
    result = await store.enqueue(NewTask(queue="q", run_at=datetime.now(UTC) + timedelta(hours=1)))
    assert await store.cancel(result.task_id) is TaskState.CANCELLED
    assert (await store.get_task(result.task_id)).state is TaskState.CANCELLED
    assert await store.promote_due() == 0 and await active_ids(store) == set()


async def test_running_task_gets_a_cancel_request(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1)
    [task] = await claim(store, worker="w1")
    assert await store.cancel(task_id) is TaskState.RUNNING
    # It keeps running until its worker stops it; asking again changes nothing.
    assert (await store.get_task(task_id)).state is TaskState.RUNNING
    assert await store.cancel(task_id) is TaskState.RUNNING

    beat = await store.heartbeat("w1", [lease(task)], 30)
    assert beat.cancel_requested == {task_id}
    # The worker honours it by finishing the task as cancelled.
    assert await store.finish([Finish(lease(task), TaskState.CANCELLED)]) == set()
    assert (await store.get_task(task_id)).state is TaskState.CANCELLED
    assert await store.cancel(task_id) is TaskState.CANCELLED


async def test_running_task_whose_worker_died_is_cancelled_by_the_reaper(
    store: PostgresStore,
) -> None:
    [task_id] = await enqueue_many(store, 1, max_attempts=5)
    await claim(store, lease_seconds=0.2)
    assert await store.cancel(task_id) is TaskState.RUNNING
    await asyncio.sleep(0.3)
    reaped = await store.reap_expired()
    assert reaped is not None and reaped.cancelled == (task_id,) and reaped.requeued == ()
    assert (await store.get_task(task_id)).state is TaskState.CANCELLED
    assert await claim(store) == []  # attempts were left, but a cancelled task never returns


@pytest.mark.parametrize("end", [TaskState.SUCCEEDED, TaskState.DEAD])
async def test_cancelling_a_finished_task_returns_its_end_state(
    store: PostgresStore, end: TaskState
) -> None:
    [task_id] = await enqueue_many(store, 1)
    [task] = await claim(store)
    await store.finish([Finish(lease(task), end, {"r": 1})])
    assert await store.cancel(task_id) is end
    record = await store.get_task(task_id)
    assert record.state is end
    assert record.result == {"r": 1}


async def test_unknown_id_raises_task_not_found(store: PostgresStore) -> None:
    with pytest.raises(TaskNotFound) as caught:
        await store.cancel(987_654)
    assert caught.value.task_id == 987_654
    with pytest.raises(TaskNotFound):
        await store.get_task(987_654)


async def test_another_tenants_task_is_not_found(store: PostgresStore) -> None:
    await store.create_tenant("acme")
    await store.create_tenant("rival")
    [queued] = await enqueue_many(store, 1, tenant_id="acme")
    [running] = await enqueue_many(store, 1, tenant_id="acme", queue="r")
    await claim(store, "r")
    [done] = await enqueue_many(store, 1, tenant_id="acme", queue="d")
    [task] = await claim(store, "d")
    await store.finish([Finish(lease(task), TaskState.SUCCEEDED)])

    for task_id in (queued, running, done):
        with pytest.raises(TaskNotFound):
            await store.cancel(task_id, tenant_id="rival")
        with pytest.raises(TaskNotFound):
            await store.get_task(task_id, tenant_id="rival")
    # Nothing was touched by the rival's attempts.
    assert (await store.get_task(queued)).state is TaskState.QUEUED
    flag = "SELECT cancel_requested FROM tasks WHERE id = $1"
    assert await fetchval(store, flag, running) is False
    assert (await store.get_task(running, tenant_id="acme")).state is TaskState.RUNNING

    # The owner can cancel its own.
    assert await store.cancel(queued, tenant_id="acme") is TaskState.CANCELLED
    assert await store.cancel(running, tenant_id="acme") is TaskState.RUNNING
    assert await store.cancel(done, tenant_id="acme") is TaskState.SUCCEEDED
