"""Finishing and retrying on real PostgreSQL: a finished task moves from ``tasks`` to
``task_history`` in one transaction; retries wait, keep their error, and snoozes give the
attempt back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.store.params import Finish, LeaseRef, RetryLease
from conveyor.store.postgres import PostgresStore
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


@pytest.mark.parametrize("state", [TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED])
async def test_finish_moves_the_row_to_history(store: PostgresStore, state: TaskState) -> None:
    [task_id] = await enqueue_many(store, 1, idempotency_key="k", group_id="g")
    [task] = await claim(store, worker="w9")
    error = None if state is TaskState.SUCCEEDED else {"type": "X", "message": "why"}
    result = {"answer": 42} if state is TaskState.SUCCEEDED else None

    assert await store.finish([Finish(lease(task), state, result, error)]) == set()

    assert task_id not in await active_ids(store)
    assert task_id in await history_ids(store)
    row = await fetchval(store, "SELECT to_jsonb(h) FROM task_history h WHERE id = $1", task_id)
    assert row["state"] == state.value
    record = await store.get_task(task_id)
    assert record.state is state
    assert record.result == result
    assert record.last_error == error
    assert record.attempts == 1
    assert record.worker_id == "w9"
    assert record.idempotency_key == "k" and record.group_id == "g"
    assert record.payload == {"n": 0}
    assert record.started_at is not None and record.finished_at is not None
    assert record.created_at <= record.started_at <= record.finished_at


async def test_finish_is_one_transaction_for_the_whole_batch(store: PostgresStore) -> None:
    ids = await enqueue_many(store, 50)
    held = await claim(store, limit=50)
    finishes = [Finish(lease(c), TaskState.SUCCEEDED, {"n": c.payload["n"]}) for c in held]
    assert await store.finish(finishes) == set()
    assert await active_ids(store) == set()
    assert await history_ids(store) == set(ids)
    assert (await store.get_task(ids[17])).result == {"n": 17}


async def test_a_row_is_never_in_both_tables_or_neither(store: PostgresStore) -> None:
    """While finishes commit, a reader sees each task in exactly one of the two tables."""
    ids = await enqueue_many(store, 400)
    held = await claim(store, limit=400)
    seen: list[int] = []

    async def reader() -> None:
        for _ in range(30):
            total = await fetchval(
                store,
                "SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM task_history)",
            )
            seen.append(total)
            await asyncio.sleep(0)

    async def finisher() -> None:
        for start in range(0, 400, 20):
            chunk = held[start : start + 20]
            await store.finish([Finish(lease(c), TaskState.SUCCEEDED) for c in chunk])

    await asyncio.gather(reader(), finisher())
    assert set(seen) == {400}
    assert await history_ids(store) == set(ids)


async def test_mixed_batch_refuses_only_the_lost_leases(store: PostgresStore) -> None:
    ids = await enqueue_many(store, 3)
    a, b, c = await claim(store, limit=3)
    refused = await store.finish(
        [
            Finish(lease(a), TaskState.SUCCEEDED, "ok"),
            Finish(LeaseRef(b.id, b.lease_token + 7), TaskState.SUCCEEDED, "zombie"),
            Finish(LeaseRef(123_456, 1), TaskState.DEAD),
            Finish(lease(c), TaskState.DEAD, error={"type": "Permanent"}),
        ]
    )
    assert refused == {b.id, 123_456}
    assert (await store.get_task(a.id)).result == "ok"
    assert (await store.get_task(b.id)).state is TaskState.RUNNING
    assert (await store.get_task(c.id)).state is TaskState.DEAD
    assert await active_ids(store) == {ids[1]}


async def test_finish_nothing_is_a_no_op(store: PostgresStore) -> None:
    assert await store.finish([]) == set()
    assert await store.retry([]) == set()


async def test_finish_needs_a_terminal_state() -> None:
    with pytest.raises(ValueError, match="terminal"):
        Finish(LeaseRef(1, 1), TaskState.QUEUED)


async def test_finish_recreates_a_missing_month_partition(store: PostgresStore) -> None:
    """If maintenance never created this month's partition, finishing still works."""
    [task_id] = await enqueue_many(store, 1)
    [task] = await claim(store)
    month = await fetchval(store, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')")
    await execute(store, f"DROP TABLE task_history_p{month}")
    assert await store.finish([Finish(lease(task), TaskState.SUCCEEDED, 1)]) == set()
    assert (await store.get_task(task_id)).state is TaskState.SUCCEEDED
    assert await fetchval(store, f"SELECT count(*) FROM task_history_p{month}") == 1


async def test_error_given_at_finish_wins_over_an_earlier_one(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1)
    [task] = await claim(store)
    await store.retry([RetryLease(lease(task), 0, {"type": "First"})])
    [task] = await claim(store)
    await store.finish([Finish(lease(task), TaskState.DEAD, error={"type": "Second"})])
    assert (await store.get_task(task_id)).last_error == {"type": "Second"}


async def test_finish_without_an_error_keeps_the_last_one(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1)
    [task] = await claim(store)
    await store.retry([RetryLease(lease(task), 0, {"type": "Flaky"})])
    [task] = await claim(store)
    await store.finish([Finish(lease(task), TaskState.SUCCEEDED, {"ok": True})])
    record = await store.get_task(task_id)
    assert record.last_error == {"type": "Flaky"}
    assert record.result == {"ok": True}
    assert record.attempts == 2


# -- retry ---------------------------------------------------------------------------------


async def test_retry_with_delay_schedules_the_task_and_keeps_the_error(
    store: PostgresStore,
) -> None:
    [task_id] = await enqueue_many(store, 1)
    [task] = await claim(store)
    error = {"type": "RateLimited", "message": "429", "traceback": "..."}
    before = datetime.now(UTC)
    assert await store.retry([RetryLease(lease(task), delay=30, error=error)]) == set()

    record = await store.get_task(task_id)
    assert record.state is TaskState.SCHEDULED
    assert record.run_at is not None
    assert before + timedelta(seconds=29) < record.run_at < before + timedelta(seconds=31)
    assert record.last_error == error
    assert record.attempts == 1  # the failed attempt counts
    assert record.worker_id is None and record.lease_expires_at is None
    assert await claim(store) == []
    assert await store.promote_due() == 0  # not due yet


async def test_retry_after_a_short_delay_is_claimable_again(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1, max_attempts=3)
    [task] = await claim(store)
    await store.retry([RetryLease(lease(task), delay=0.2, error={"type": "E1"})])
    await asyncio.sleep(0.3)
    assert await store.promote_due() == 1
    [again] = await claim(store)
    assert again.id == task_id and again.attempts == 2
    assert again.lease_token != task.lease_token
    # Retrying without a new error keeps the previous one.
    await store.retry([RetryLease(lease(again), delay=0)])
    record = await store.get_task(task_id)
    assert record.state is TaskState.QUEUED
    assert record.last_error == {"type": "E1"}


async def test_retry_with_zero_delay_is_queued_at_once(store: PostgresStore) -> None:
    await enqueue_many(store, 1)
    [task] = await claim(store)
    assert await store.retry([RetryLease(lease(task), delay=0)]) == set()
    assert (await store.get_task(task.id)).state is TaskState.QUEUED
    [again] = await claim(store)
    assert again.attempts == 2


async def test_negative_delay_is_treated_as_zero(store: PostgresStore) -> None:
    await enqueue_many(store, 1)
    [task] = await claim(store)
    assert await store.retry([RetryLease(lease(task), delay=-5)]) == set()
    assert (await store.get_task(task.id)).state is TaskState.QUEUED


async def test_snooze_gives_the_attempt_back(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1, max_attempts=1)
    [task] = await claim(store)
    assert task.attempts == 1
    await store.retry([RetryLease(lease(task), delay=0, count_attempt=False)])
    record = await store.get_task(task_id)
    assert (record.state, record.attempts) == (TaskState.QUEUED, 0)
    [again] = await claim(store)
    assert again.attempts == 1  # still its first (and only) attempt


async def test_retry_batch_mixes_delays_snoozes_and_lost_leases(store: PostgresStore) -> None:
    ids = await enqueue_many(store, 3)
    a, b, c = await claim(store, limit=3)
    refused = await store.retry(
        [
            RetryLease(lease(a), delay=60, error={"type": "A"}),
            RetryLease(lease(b), delay=0, count_attempt=False),
            RetryLease(LeaseRef(c.id, c.lease_token - 1), delay=0),
        ]
    )
    assert refused == {c.id}
    states = [(await store.get_task(i)).state for i in ids]
    assert states == [TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING]
    assert (await store.get_task(b.id)).attempts == 0
