"""Retention on real PostgreSQL: monthly history partitions are created ahead of time and
dropped whole, only when their entire month is older than the cutoff."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.core.partitions import Month, partition_name
from conveyor.store.params import Finish, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import claim, enqueue_many, execute, fetchval, lease


async def partitions(store: PostgresStore) -> set[str]:
    rows = await fetchval(
        store,
        """SELECT coalesce(array_agg(c.relname::text), '{}') FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent IN ('task_history'::regclass, 'llm_calls'::regclass,
                                 'task_events'::regclass)""",
    )
    return set(rows)


async def insert_history(store: PostgresStore, task_id: int, finished_at: datetime) -> None:
    await execute(
        store,
        """INSERT INTO task_history (id, tenant_id, queue, state, priority, attempts,
                                     max_attempts, payload, created_at, finished_at)
           VALUES ($1, 'default', 'q', 'succeeded', 5, 1, 5, '{}', $2, $2)""",
        task_id,
        finished_at,
    )


async def test_migrate_created_this_month_and_three_ahead(store: PostgresStore) -> None:
    this = Month.of(datetime.now(UTC))
    expected = {partition_name("task_history", this.plus(i)) for i in range(4)}
    assert expected <= await partitions(store)


async def test_ensure_partitions_creates_months_ahead_idempotently(store: PostgresStore) -> None:
    now = datetime(2031, 11, 20, tzinfo=UTC)
    names = await store.ensure_partitions(now=now, months_ahead=3)
    months = ["2031_11", "2031_12", "2032_01", "2032_02"]
    assert names == [
        f"{table}_p{m}" for table in ("task_history", "llm_calls", "task_events") for m in months
    ]
    assert set(names) <= await partitions(store)
    assert await store.ensure_partitions(now=now, months_ahead=3) == names  # again: no error
    async with store.transaction() as conn:
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        bounds = await conn.fetchval(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = $1", names[1]
        )
    assert "2031-12-01 00:00:00+00" in bounds and "2032-01-01 00:00:00+00" in bounds
    # A row lands in the partition of its month.
    await insert_history(store, 1, datetime(2031, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert await fetchval(store, f"SELECT count(*) FROM {names[1]}") == 1


async def test_retention_drops_only_partitions_whose_month_ended_before_the_cutoff(
    store: PostgresStore,
) -> None:
    for month in (1, 2, 3):
        await store.ensure_partitions(now=datetime(2020, month, 15, tzinfo=UTC), months_ahead=0)
    await insert_history(store, 101, datetime(2020, 1, 10, tzinfo=UTC))
    await insert_history(store, 102, datetime(2020, 2, 29, 23, 59, tzinfo=UTC))
    await insert_history(store, 103, datetime(2020, 3, 1, tzinfo=UTC))  # older than the cutoff
    await insert_history(store, 104, datetime(2020, 3, 31, tzinfo=UTC))
    # A task finished now, into this month's partition.
    current = await store.enqueue(NewTask(queue="q"))
    [task] = await claim(store)
    await store.finish([Finish(lease(task), TaskState.SUCCEEDED, {"kept": True})])
    before = await partitions(store)

    cutoff = datetime(2020, 3, 15, tzinfo=UTC)
    dropped, _ = await store.apply_retention(cutoff)

    assert dropped == [
        "task_history_p2020_01",
        "task_history_p2020_02",
        "llm_calls_p2020_01",
        "llm_calls_p2020_02",
        "task_events_p2020_01",
        "task_events_p2020_02",
    ]
    assert await partitions(store) == before - set(dropped)
    # March 2020 straddles the cutoff: kept whole, including its row older than the cutoff.
    ids = set(await fetchval(store, "SELECT array_agg(id) FROM task_history"))
    assert ids == {103, 104, current.task_id}
    assert (await store.get_task(current.task_id)).result == {"kept": True}

    # A cutoff exactly at a month's end drops that month too; nothing younger goes.
    dropped, _ = await store.apply_retention(datetime(2020, 4, 1, tzinfo=UTC))
    assert dropped == ["task_history_p2020_03", "llm_calls_p2020_03", "task_events_p2020_03"]
    assert set(await fetchval(store, "SELECT array_agg(id) FROM task_history")) == {current.task_id}
    assert await store.apply_retention(datetime(2020, 4, 1, tzinfo=UTC)) == ([], 0)


async def test_retention_never_drops_current_or_future_partitions(store: PostgresStore) -> None:
    before = await partitions(store)
    now = datetime.now(UTC)
    dropped, _ = await store.apply_retention(now - timedelta(days=90))
    assert dropped == []
    assert await partitions(store) == before


async def test_retention_prunes_old_idempotency_keys_only(store: PostgresStore) -> None:
    old = await store.enqueue(NewTask(queue="q", idempotency_key="old"))
    new = await store.enqueue(NewTask(queue="q", idempotency_key="new"))
    await execute(
        store,
        "UPDATE idempotency_keys SET created_at = now() - interval '100 days' WHERE key = 'old'",
    )
    _, pruned = await store.apply_retention(datetime.now(UTC) - timedelta(days=90))
    assert pruned == 1
    keys = await fetchval(store, "SELECT array_agg(key ORDER BY key) FROM idempotency_keys")
    assert keys == ["new"]
    # The pruned key is free again; the kept one still dedupes.
    again_old = await store.enqueue(NewTask(queue="q", idempotency_key="old"))
    again_new = await store.enqueue(NewTask(queue="q", idempotency_key="new"))
    assert again_old.created and again_old.task_id != old.task_id
    assert not again_new.created and again_new.task_id == new.task_id


@pytest.mark.timeout(60)
async def test_concurrent_callers_create_each_partition_once(wide_store: PostgresStore) -> None:
    for year in (2040, 2041, 2042):
        now = datetime(year, 5, 1, tzinfo=UTC)
        results = await asyncio.gather(
            *(wide_store.ensure_partitions(now=now, months_ahead=2) for _ in range(12))
        )
        expected = [
            f"{table}_p{year}_{m:02d}"
            for table in ("task_history", "llm_calls", "task_events")
            for m in (5, 6, 7)
        ]
        assert all(names == expected for names in results)
        assert set(expected) <= await partitions(wide_store)


@pytest.mark.timeout(60)
async def test_workers_finishing_at_once_into_a_missing_month(wide_store: PostgresStore) -> None:
    """Month rollover without maintenance: every worker's finish recreates the partition."""
    month = await fetchval(wide_store, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')")
    for round_number in range(3):
        await execute(wide_store, f"DROP TABLE task_history_p{month}")
        ids = await enqueue_many(wide_store, 12, queue=f"r{round_number}")
        held = await claim(wide_store, f"r{round_number}", limit=12)
        refused = await asyncio.gather(
            *(wide_store.finish([Finish(lease(c), TaskState.SUCCEEDED)]) for c in held)
        )
        assert refused == [set()] * 12
        assert await fetchval(wide_store, f"SELECT count(*) FROM task_history_p{month}") == 12
        assert {(await wide_store.get_task(i)).state for i in ids} == {TaskState.SUCCEEDED}


async def test_cancel_and_the_reaper_recreate_a_missing_month(store: PostgresStore) -> None:
    """Month rollover without maintenance: a cancel or a reaped dead task still lands."""
    month = await fetchval(store, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')")
    [waiting] = await enqueue_many(store, 1, queue="c")
    [dying] = await enqueue_many(store, 1, queue="r", max_attempts=1)
    await claim(store, "r", lease_seconds=0.05)
    await asyncio.sleep(0.1)
    await execute(store, f"DROP TABLE task_history_p{month}")
    assert await store.cancel(waiting) is TaskState.CANCELLED
    await execute(store, f"DROP TABLE task_history_p{month}")  # and again, for the reaper
    reaped = await store.reap_expired()
    assert reaped is not None
    assert (await store.get_task(dying)).state is TaskState.DEAD
    assert await fetchval(store, f"SELECT count(*) FROM task_history_p{month}") == 1
