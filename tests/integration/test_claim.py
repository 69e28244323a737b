"""Claiming on real PostgreSQL: order, readiness, limits, several queues, and racing
claimers that never share a task."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.store.params import ClaimRequest, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import claim, enqueue_many, fetchval


async def test_claim_orders_by_priority_then_id(store: PostgresStore) -> None:
    priorities = [5, 10, 1, 5, 1, 10, 5]
    results = await store.enqueue_batch([NewTask(queue="q", priority=p) for p in priorities])
    ids = [r.task_id for r in results]
    expected = [i for _, i in sorted(zip(priorities, ids, strict=True))]

    claimed = await claim(store, limit=100)
    assert [c.id for c in claimed] == expected
    assert [c.priority for c in claimed] == sorted(priorities)


async def test_claim_sets_a_lease_under_one_fresh_token(store: PostgresStore) -> None:
    await store.create_tenant("acme")
    [task_id] = await enqueue_many(
        store, 1, tenant_id="acme", max_attempts=3, timeout_seconds=9.0, group_id="g"
    )
    await enqueue_many(store, 2)
    before = datetime.now(UTC)
    first = await claim(store, limit=3, worker="w-1", lease_seconds=30)
    assert len(first) == 3
    assert len({c.lease_token for c in first}) == 1  # one token per claim call
    task = next(c for c in first if c.id == task_id)
    assert (task.tenant_id, task.queue, task.attempts, task.max_attempts) == ("acme", "q", 1, 3)
    assert (task.timeout_seconds, task.group_id, task.payload) == (9.0, "g", {"n": 0})
    assert before + timedelta(seconds=25) < task.lease_expires_at
    assert task.lease_expires_at < before + timedelta(seconds=35)

    record = await store.get_task(task_id)
    assert record.state is TaskState.RUNNING
    assert record.worker_id == "w-1"
    assert record.attempts == 1
    assert record.started_at is not None
    assert record.lease_expires_at == task.lease_expires_at

    await enqueue_many(store, 1)
    [second] = await claim(store)
    assert second.lease_token != task.lease_token


async def test_only_ready_tasks_are_claimed(store: PostgresStore) -> None:
    [ready] = await enqueue_many(store, 1)
    await store.enqueue(NewTask(queue="q", run_at=datetime.now(UTC) + timedelta(hours=1)))
    [running] = await claim(store)
    assert running.id == ready
    await enqueue_many(store, 1, queue="elsewhere")
    assert await claim(store, limit=10) == []  # scheduled, running and other queues stay


async def test_limit_is_respected_and_the_rest_remains(store: PostgresStore) -> None:
    ids = await enqueue_many(store, 25)
    first = await claim(store, limit=10)
    second = await claim(store, limit=10)
    third = await claim(store, limit=10)
    assert [c.id for c in first] == ids[:10]
    assert [c.id for c in second] == ids[10:20]
    assert [c.id for c in third] == ids[20:]
    assert await claim(store, limit=10) == []


async def test_zero_limit_or_no_queues_claims_nothing(store: PostgresStore) -> None:
    await enqueue_many(store, 3)
    assert await store.claim(ClaimRequest(("q",), 0, "w", 30)) == []
    assert await store.claim(ClaimRequest((), 10, "w", 30)) == []
    assert await fetchval(store, "SELECT count(*) FROM tasks WHERE state = 'queued'") == 3


async def test_one_claim_takes_from_several_queues_in_priority_order(
    store: PostgresStore,
) -> None:
    a = await store.enqueue_batch([NewTask(queue="a", priority=p) for p in (5, 1, 10)])
    b = await store.enqueue_batch([NewTask(queue="b", priority=p) for p in (1, 5)])
    await enqueue_many(store, 2, queue="c")  # not asked for
    claimed = await claim(store, "a", "b", limit=4)
    # priority first; within a priority, queues interleave by fairness key (then id)
    assert [c.priority for c in claimed] == [1, 1, 5, 5]
    assert {(c.queue, c.priority) for c in claimed} == {("a", 1), ("b", 1), ("a", 5), ("b", 5)}
    assert {c.id for c in claimed} == {
        a[1].task_id,
        b[0].task_id,
        a[0].task_id,
        b[1].task_id,
    }
    [last] = await claim(store, "a", "b", limit=4)
    assert last.id == a[2].task_id


async def test_a_queue_named_twice_still_yields_distinct_tasks(store: PostgresStore) -> None:
    ids = await enqueue_many(store, 6)
    claimed = await claim(store, "q", "q", limit=4)
    assert [c.id for c in claimed] == ids[:4]
    assert all(c.attempts == 1 for c in claimed)


@pytest.mark.timeout(60)
async def test_racing_claimers_never_share_a_task(wide_store: PostgresStore) -> None:
    total = 2_000
    ids = await enqueue_many(wide_store, total, queue="race")
    claims: list[tuple[str, int, int]] = []  # (worker, task id, token)
    tokens: list[int] = []

    async def claimer(worker: str) -> None:
        rng = random.Random(worker)
        while True:
            batch = await wide_store.claim(ClaimRequest(("race",), rng.randint(1, 40), worker, 30))
            if not batch:
                # An empty answer can be a moment when every ready row is locked by others.
                remaining = await fetchval(
                    wide_store, "SELECT count(*) FROM tasks WHERE state = 'queued'"
                )
                if remaining == 0:
                    return
                continue
            tokens.append(batch[0].lease_token)
            claims.extend((worker, c.id, c.lease_token) for c in batch)

    await asyncio.gather(*(claimer(f"w{i}") for i in range(16)))

    claimed_ids = [task_id for _, task_id, _ in claims]
    assert len(claimed_ids) == total, "a task was claimed twice or not at all"
    assert sorted(claimed_ids) == sorted(ids)
    assert len(set(tokens)) == len(tokens)  # every claim had its own fencing token
    assert len({w for w, _, _ in claims}) > 1  # the claimers really raced
    running = await fetchval(
        wide_store, "SELECT count(*) FROM tasks WHERE state = 'running' AND attempts = 1"
    )
    assert running == total
    # Each row's lease belongs to the worker (and token) that was told it claimed it.
    stored = await fetchval(
        wide_store,
        "SELECT array_agg(ARRAY[id, lease_token]) FROM tasks",
    )
    assert {(int(i), int(t)) for i, t in stored} == {(i, t) for _, i, t in claims}


@pytest.mark.timeout(60)
async def test_two_stores_racing_on_one_database(
    store: PostgresStore, wide_store: PostgresStore
) -> None:
    ids = await enqueue_many(store, 600)

    async def drain(s: PostgresStore, worker: str) -> list[int]:
        got: list[int] = []
        while batch := await s.claim(ClaimRequest(("q",), 25, worker, 30)):
            got.extend(c.id for c in batch)
        return got

    results = await asyncio.gather(
        *(drain(store, f"a{i}") for i in range(4)), *(drain(wide_store, f"b{i}") for i in range(4))
    )
    everything = [i for got in results for i in got]
    # A claimer may stop early on a moment when every row is locked; sweep up what is left.
    everything += [c.id for c in await claim(store, limit=1000)]
    assert sorted(everything) == sorted(ids)
