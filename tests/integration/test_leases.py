"""Leases on real PostgreSQL: expiry and redelivery, fencing tokens against zombie workers,
the exclusive reaper, heartbeats and graceful release."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.store.leases import REAPER_LOCK
from conveyor.store.params import Finish, LeaseRef, NewTask, RetryLease, WorkerInfo
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import HeartbeatResult
from conveyor.types import TaskState
from tests.integration.helpers import (
    active_ids,
    claim,
    enqueue_many,
    execute,
    fetchval,
    history_ids,
    lease,
)

SHORT = 0.2  # seconds: a lease that runs out during the test
EXPIRE = 0.3  # seconds to sleep so SHORT leases have expired


async def test_expired_lease_is_fenced_against_the_zombie_worker(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1)
    [first] = await claim(store, worker="w1", lease_seconds=SHORT)
    await asyncio.sleep(EXPIRE)

    reaped = await store.reap_expired()
    assert reaped is not None
    assert reaped.requeued == (task_id,)
    assert reaped.dead == () and reaped.cancelled == ()
    record = await store.get_task(task_id)
    assert record.state is TaskState.QUEUED
    assert record.worker_id is None and record.lease_expires_at is None
    assert record.last_error is not None and record.last_error["type"] == "LeaseExpired"

    [second] = await claim(store, worker="w2", lease_seconds=30)
    assert second.id == task_id
    assert second.lease_token != first.lease_token
    assert second.attempts == 2  # the expired run counted

    # The zombie (w1) wakes up and tries to commit: refused, nothing changes.
    refused = await store.finish([Finish(lease(first), TaskState.SUCCEEDED, {"by": "w1"})])
    assert refused == {task_id}
    assert (await store.get_task(task_id)).state is TaskState.RUNNING
    assert await store.heartbeat("w1", [lease(first)], 30) == HeartbeatResult(
        extended=frozenset(), lost=frozenset({task_id}), cancel_requested=frozenset()
    )

    assert await store.finish([Finish(lease(second), TaskState.SUCCEEDED, {"by": "w2"})]) == set()
    final = await store.get_task(task_id)
    assert final.state is TaskState.SUCCEEDED
    assert final.result == {"by": "w2"}
    assert final.worker_id == "w2"
    assert final.attempts == 2

    # Late again: the zombie still cannot overwrite the finished task.
    assert await store.finish([Finish(lease(first), TaskState.DEAD)]) == {task_id}
    assert (await store.get_task(task_id)).result == {"by": "w2"}


async def test_zombie_retry_and_release_are_refused_too(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1)
    [first] = await claim(store, worker="w1", lease_seconds=SHORT)
    await asyncio.sleep(EXPIRE)
    await store.reap_expired()
    [second] = await claim(store, worker="w2")
    assert await store.retry([RetryLease(lease(first), delay=0)]) == {task_id}
    assert await store.release([lease(first)]) == []
    record = await store.get_task(task_id)
    assert (record.state, record.worker_id, record.attempts) == (TaskState.RUNNING, "w2", 2)
    assert second.id == task_id


async def test_unexpired_lease_is_not_reaped(store: PostgresStore) -> None:
    await enqueue_many(store, 1)
    [task] = await claim(store, lease_seconds=30)
    reaped = await store.reap_expired()
    assert reaped is not None
    assert (reaped.requeued, reaped.dead, reaped.cancelled) == ((), (), ())
    assert (await store.get_task(task.id)).state is TaskState.RUNNING


async def test_expired_lease_is_redelivered_exactly_once(store: PostgresStore) -> None:
    ids = await enqueue_many(store, 5)
    await claim(store, limit=5, lease_seconds=SHORT)
    await asyncio.sleep(EXPIRE)

    # Many reapers at once, then again one after another.
    results = await asyncio.gather(*(store.reap_expired() for _ in range(8)))
    results += [await store.reap_expired() for _ in range(3)]
    requeued = [i for r in results if r is not None for i in r.requeued]
    assert sorted(requeued) == sorted(ids)  # each id once, no more

    redelivered = await claim(store, limit=10, worker="w2")
    assert sorted(c.id for c in redelivered) == sorted(ids)
    assert all(c.attempts == 2 for c in redelivered)
    assert await claim(store, limit=10) == []


async def test_reaper_kills_a_task_whose_attempts_are_exhausted(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1, max_attempts=2)
    for attempt in (1, 2):
        [task] = await claim(store, worker=f"w{attempt}", lease_seconds=SHORT)
        assert task.attempts == attempt
        await asyncio.sleep(EXPIRE)
        reaped = await store.reap_expired()
        assert reaped is not None
        if attempt == 1:
            assert reaped.requeued == (task_id,)
        else:
            assert reaped.requeued == () and reaped.dead == (task_id,)

    record = await store.get_task(task_id)
    assert record.state is TaskState.DEAD
    assert record.attempts == 2
    assert record.last_error is not None
    assert record.last_error["type"] == "LeaseExpired"
    assert "w2" in record.last_error["message"]
    assert record.finished_at is not None
    assert task_id not in await active_ids(store)
    assert task_id in await history_ids(store)
    assert [d.id for d in await store.list_dead()] == [task_id]


async def test_reaper_respects_its_limit(store: PostgresStore) -> None:
    ids = await enqueue_many(store, 7)
    await claim(store, limit=7, lease_seconds=SHORT)
    await asyncio.sleep(EXPIRE)
    first = await store.reap_expired(limit=4)
    second = await store.reap_expired(limit=4)
    assert first is not None and second is not None
    assert len(first.requeued) == 4 and len(second.requeued) == 3
    assert sorted(first.requeued + second.requeued) == sorted(ids)


async def test_reaper_is_exclusive(store: PostgresStore) -> None:
    await enqueue_many(store, 3)
    await claim(store, limit=3, lease_seconds=SHORT)
    await asyncio.sleep(EXPIRE)

    # Another reaper holds the lock (in its transaction): this one does nothing.
    async with store.transaction() as other:
        assert await other.fetchval("SELECT pg_try_advisory_xact_lock($1::bigint)", REAPER_LOCK)
        assert await store.reap_expired() is None
        assert await fetchval(store, "SELECT count(*) FROM tasks WHERE state = 'running'") == 3
    # The lock is released with that transaction.
    reaped = await store.reap_expired()
    assert reaped is not None and len(reaped.requeued) == 3


@pytest.mark.timeout(60)
async def test_concurrent_reapers_never_handle_a_lease_twice(
    wide_store: PostgresStore,
) -> None:
    ids = await enqueue_many(wide_store, 300)
    await claim(wide_store, limit=300, lease_seconds=SHORT)
    await asyncio.sleep(EXPIRE)
    results = await asyncio.gather(*(wide_store.reap_expired() for _ in range(12)))
    working = [r for r in results if r is not None and r.requeued]
    assert len(working) == 1  # one reaper took all (limit 1000 > 300); the rest found nothing
    assert sorted(working[0].requeued) == sorted(ids)
    assert all(r is None or r.requeued == () for r in results if r is not working[0])


async def test_reaper_finishes_a_cancel_requested_task_as_cancelled(
    store: PostgresStore,
) -> None:
    [task_id] = await enqueue_many(store, 1)
    await claim(store, lease_seconds=SHORT)
    assert await store.cancel(task_id) is TaskState.RUNNING
    await asyncio.sleep(EXPIRE)
    reaped = await store.reap_expired()
    assert reaped is not None and reaped.cancelled == (task_id,)
    assert reaped.requeued == () and reaped.dead == ()
    assert (await store.get_task(task_id)).state is TaskState.CANCELLED
    assert await active_ids(store) == set()


# -- heartbeat -----------------------------------------------------------------------------


async def test_heartbeat_extends_every_lease_it_holds(store: PostgresStore) -> None:
    await store.register_worker(WorkerInfo("w1", "host", 1, ("q",), 4))
    await enqueue_many(store, 3)
    held = await claim(store, limit=3, worker="w1", lease_seconds=5)
    before = {c.id: c.lease_expires_at for c in held}
    worker_before = (await store.list_workers())[0].heartbeat_at

    beat = await store.heartbeat("w1", [lease(c) for c in held], 60)
    assert beat.extended == frozenset(before)
    assert beat.lost == frozenset() and beat.cancel_requested == frozenset()
    for task_id, expires in before.items():
        record = await store.get_task(task_id)
        assert record.lease_expires_at is not None
        assert record.lease_expires_at > expires + timedelta(seconds=50)
    assert (await store.list_workers())[0].heartbeat_at > worker_before


async def test_heartbeat_keeps_a_short_lease_alive(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1)
    [task] = await claim(store, lease_seconds=0.5)
    for _ in range(3):
        await asyncio.sleep(0.25)
        beat = await store.heartbeat("w1", [lease(task)], 0.5)
        assert beat.extended == {task_id}
    reaped = await store.reap_expired()
    assert reaped is not None and reaped.requeued == ()  # alive after 0.75 s > 0.5 s
    assert (await store.get_task(task_id)).state is TaskState.RUNNING


async def test_heartbeat_reports_lost_leases_for_stale_tokens(store: PostgresStore) -> None:
    await enqueue_many(store, 2)
    kept, lost = await claim(store, limit=2, worker="w1", lease_seconds=30)
    stale = LeaseRef(lost.id, lost.lease_token + 1_000)
    finished = await store.finish([Finish(lease(lost), TaskState.SUCCEEDED)])
    assert finished == set()
    beat = await store.heartbeat("w1", [lease(kept), stale, LeaseRef(999_999, 1)], 30)
    assert beat.extended == {kept.id}
    assert beat.lost == {lost.id, 999_999}


async def test_heartbeat_reports_cancel_requests(store: PostgresStore) -> None:
    await enqueue_many(store, 2)
    one, two = await claim(store, limit=2, worker="w1")
    assert await store.cancel(two.id) is TaskState.RUNNING
    beat = await store.heartbeat("w1", [lease(one), lease(two)], 30)
    assert beat.extended == {one.id, two.id}  # a cancel request does not take the lease
    assert beat.cancel_requested == {two.id}


async def test_heartbeat_with_nothing_held_touches_the_worker_row(store: PostgresStore) -> None:
    await store.register_worker(WorkerInfo("idle", "host", 1, ("q",), 1))
    before = (await store.list_workers())[0].heartbeat_at
    beat = await store.heartbeat("idle", [], 30)
    assert beat.extended == beat.lost == beat.cancel_requested == frozenset()
    assert (await store.list_workers())[0].heartbeat_at > before


# -- release -------------------------------------------------------------------------------


async def test_release_puts_tasks_back_without_counting_the_attempt(
    store: PostgresStore,
) -> None:
    ids = await enqueue_many(store, 3)
    held = await claim(store, limit=3, worker="w1")
    assert all(c.attempts == 1 for c in held)

    released = await store.release([lease(c) for c in held[:2]])
    assert sorted(released) == sorted(ids[:2])
    for task_id in ids[:2]:
        record = await store.get_task(task_id)
        assert record.state is TaskState.QUEUED
        assert record.attempts == 0
        assert record.worker_id is None and record.lease_expires_at is None
    assert (await store.get_task(ids[2])).state is TaskState.RUNNING

    again = await claim(store, limit=3, worker="w2")
    assert [c.id for c in again] == ids[:2]
    assert all(c.attempts == 1 for c in again)
    # The old leases are gone: releasing them again does nothing.
    assert await store.release([lease(c) for c in held[:2]]) == []
    assert await store.release([]) == []


async def test_release_then_heartbeat_reports_the_lease_lost(store: PostgresStore) -> None:
    await enqueue_many(store, 1)
    [task] = await claim(store)
    await store.release([lease(task)])
    beat = await store.heartbeat("w1", [lease(task)], 30)
    assert beat.lost == {task.id}


async def test_scheduled_tasks_are_promoted_in_bulk(store: PostgresStore) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    results = await store.enqueue_batch([NewTask(queue="q", run_at=later) for _ in range(7)])
    due = [r.task_id for r in results[:5]]
    await execute(store, "UPDATE tasks SET run_at = now() - interval '1 s' WHERE id = ANY($1)", due)
    assert await store.promote_due(limit=3) == 3
    assert await store.promote_due() == 2
    assert await store.promote_due() == 0
    assert sorted(c.id for c in await claim(store, limit=10)) == sorted(due)
