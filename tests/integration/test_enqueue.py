"""Enqueue on real PostgreSQL: single and bulk, field round-trips, delays, validation,
tenants, idempotency keys (also under 20 racing submitters) and the caller's transaction."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.errors import InvalidTask, UnknownTenant
from conveyor.store.params import ClaimRequest, Finish, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import active_ids, claim, fetchval, lease


async def test_enqueue_one_round_trips_every_field(store: PostgresStore) -> None:
    await store.create_tenant("acme")
    task = NewTask(
        queue="copywriter",
        payload={"brief": "launch", "nested": {"words": [1, 2, 3]}},
        tenant_id="acme",
        priority=1,
        max_attempts=7,
        timeout_seconds=2.5,
        idempotency_key="order-1",
        parent_id=42,
        group_id="campaign-9",
        trace_context={"traceparent": "00-abc-def-01"},
    )
    result = await store.enqueue(task)
    assert result.created is True

    record = await store.get_task(result.task_id)
    assert record.id == result.task_id
    assert record.state is TaskState.QUEUED
    assert record.tenant_id == "acme"
    assert record.queue == "copywriter"
    assert record.priority == 1
    assert record.max_attempts == 7
    assert record.timeout_seconds == 2.5
    assert record.attempts == 0
    assert record.idempotency_key == "order-1"
    assert record.parent_id == 42
    assert record.group_id == "campaign-9"
    assert record.payload == {"brief": "launch", "nested": {"words": [1, 2, 3]}}
    assert record.trace_context == {"traceparent": "00-abc-def-01"}
    assert record.result is None and record.last_error is None and record.worker_id is None
    assert record.finished_at is None and record.lease_expires_at is None
    assert record.run_at is not None and record.run_at <= datetime.now(UTC) + timedelta(seconds=1)


async def test_defaults_are_normal_priority_agent_attempts_no_timeout(
    store: PostgresStore,
) -> None:
    result = await store.enqueue(NewTask(queue="q"))
    record = await store.get_task(result.task_id)
    assert (record.priority, record.max_attempts, record.timeout_seconds) == (5, None, None)
    assert record.tenant_id == "default" and record.payload == {}


async def test_unset_max_attempts_takes_the_agents_default_at_first_claim(
    store: PostgresStore,
) -> None:
    unset = await store.enqueue(NewTask(queue="q"))
    explicit = await store.enqueue(NewTask(queue="q", max_attempts=7))
    claimed = await store.claim(ClaimRequest(("q",), 10, "w", 30, default_max_attempts=(3,)))
    assert {c.id: c.max_attempts for c in claimed} == {unset.task_id: 3, explicit.task_id: 7}
    assert (await store.get_task(unset.task_id)).max_attempts == 3


async def test_batch_of_ten_thousand_in_one_call(store: PostgresStore) -> None:
    tasks = [
        NewTask(queue=f"q{i % 3}", payload={"n": i}, priority=(1, 5, 10)[i % 3])
        for i in range(10_000)
    ]
    started = time.perf_counter()
    results = await store.enqueue_batch(tasks)
    elapsed = time.perf_counter() - started

    assert len(results) == 10_000
    assert all(r.created for r in results)
    ids = [r.task_id for r in results]
    assert len(set(ids)) == 10_000
    assert await fetchval(store, "SELECT count(*) FROM tasks WHERE state = 'queued'") == 10_000
    # Results follow the input order: each id holds the payload given at its position.
    for position in (0, 1, 4_999, 9_999):
        record = await store.get_task(ids[position])
        assert record.payload == {"n": position}
        assert record.queue == f"q{position % 3}"
        assert record.priority == (1, 5, 10)[position % 3]
    assert elapsed < 10, f"10,000 tasks took {elapsed:.1f}s; enqueue must be one bulk statement"


async def test_empty_batch_is_a_no_op(store: PostgresStore) -> None:
    assert await store.enqueue_batch([]) == []
    assert await active_ids(store) == set()


async def test_future_run_at_is_scheduled_then_promoted_when_due(store: PostgresStore) -> None:
    run_at = datetime.now(UTC) + timedelta(seconds=0.8)
    result = await store.enqueue(NewTask(queue="q", run_at=run_at))
    record = await store.get_task(result.task_id)
    assert record.state is TaskState.SCHEDULED
    assert record.run_at is not None and abs((record.run_at - run_at).total_seconds()) < 0.001

    assert await claim(store) == []  # not ready yet
    assert await store.promote_due() == 0

    await asyncio.sleep((run_at - datetime.now(UTC)).total_seconds() + 0.05)
    assert await store.promote_due() == 1
    assert (await store.get_task(result.task_id)).state is TaskState.QUEUED
    assert [c.id for c in await claim(store)] == [result.task_id]
    assert await store.promote_due() == 0


async def test_past_run_at_is_queued_at_once(store: PostgresStore) -> None:
    result = await store.enqueue(NewTask(queue="q", run_at=datetime.now(UTC) - timedelta(hours=1)))
    assert (await store.get_task(result.task_id)).state is TaskState.QUEUED
    assert [c.id for c in await claim(store)] == [result.task_id]


@pytest.mark.parametrize(
    "fields",
    [
        {"queue": ""},
        {"queue": "has space"},
        {"queue": "-leading-dash"},
        {"queue": "x" * 129},
        {"queue": "q", "priority": 0},
        {"queue": "q", "priority": 11},
        {"queue": "q", "run_at": datetime(2030, 1, 1)},  # naive: no timezone
        {"queue": "q", "max_attempts": 0},
        {"queue": "q", "timeout_seconds": 0},
        {"queue": "q", "idempotency_key": ""},
        {"queue": "q", "idempotency_key": "k" * 256},
        {"queue": "q", "payload": ["not", "a", "dict"]},
    ],
)
async def test_invalid_task_is_refused_before_reaching_the_database(
    store: PostgresStore, fields: dict[str, object]
) -> None:
    with pytest.raises(InvalidTask):
        await store.enqueue(NewTask(**fields))  # type: ignore[arg-type]
    assert await active_ids(store) == set()


async def test_unknown_tenant_raises_and_stores_nothing(store: PostgresStore) -> None:
    with pytest.raises(UnknownTenant) as caught:
        await store.enqueue_batch(
            [
                NewTask(queue="q", tenant_id="default"),
                NewTask(queue="q", tenant_id="ghost", idempotency_key="k1"),
                NewTask(queue="q", tenant_id="phantom"),
            ]
        )
    assert sorted(caught.value.tenant_ids) == ["ghost", "phantom"]
    assert await active_ids(store) == set()
    assert await fetchval(store, "SELECT count(*) FROM idempotency_keys") == 0


async def test_created_tenant_is_accepted(store: PostgresStore) -> None:
    tenant = await store.create_tenant("beta", "Beta Inc", weight=2.0)
    assert (tenant.id, tenant.name, tenant.weight) == ("beta", "Beta Inc", 2.0)
    assert "beta" in {t.id for t in await store.list_tenants()}
    result = await store.enqueue(NewTask(queue="q", tenant_id="beta"))
    assert (await store.get_task(result.task_id)).tenant_id == "beta"


# -- idempotency keys ----------------------------------------------------------------------


async def test_same_key_twice_returns_the_first_task_and_creates_nothing(
    store: PostgresStore,
) -> None:
    first = await store.enqueue(NewTask(queue="q", payload={"v": 1}, idempotency_key="k"))
    second = await store.enqueue(NewTask(queue="q", payload={"v": 2}, idempotency_key="k"))
    assert first.created is True
    assert second.created is False
    assert second.task_id == first.task_id
    assert await active_ids(store) == {first.task_id}
    assert (await store.get_task(first.task_id)).payload == {"v": 1}


async def test_duplicate_keys_inside_one_batch(store: PostgresStore) -> None:
    earlier = await store.enqueue(NewTask(queue="q", idempotency_key="old"))
    results = await store.enqueue_batch(
        [
            NewTask(queue="q", idempotency_key="a"),
            NewTask(queue="q", idempotency_key="b"),
            NewTask(queue="q", idempotency_key="a"),
            NewTask(queue="q"),
            NewTask(queue="q", idempotency_key="old"),
            NewTask(queue="q", idempotency_key="b"),
        ]
    )
    assert [r.created for r in results] == [True, True, False, True, False, False]
    assert results[2].task_id == results[0].task_id
    assert results[5].task_id == results[1].task_id
    assert results[4].task_id == earlier.task_id
    assert len({results[0].task_id, results[1].task_id, results[3].task_id}) == 3
    assert await active_ids(store) == {
        earlier.task_id,
        results[0].task_id,
        results[1].task_id,
        results[3].task_id,
    }


async def test_keys_are_unique_per_tenant_not_globally(store: PostgresStore) -> None:
    await store.create_tenant("other")
    mine = await store.enqueue(NewTask(queue="q", idempotency_key="k"))
    theirs = await store.enqueue(NewTask(queue="q", idempotency_key="k", tenant_id="other"))
    assert mine.created and theirs.created
    assert mine.task_id != theirs.task_id


async def test_key_still_dedupes_after_the_first_task_finished(store: PostgresStore) -> None:
    first = await store.enqueue(NewTask(queue="q", idempotency_key="k"))
    [claimed] = await claim(store)
    assert await store.finish([Finish(lease(claimed), TaskState.SUCCEEDED, {"ok": 1})]) == set()
    assert await active_ids(store) == set()

    again = await store.enqueue(NewTask(queue="q", idempotency_key="k"))
    assert again == type(again)(task_id=first.task_id, created=False)
    assert await active_ids(store) == set()
    assert (await store.get_task(first.task_id)).state is TaskState.SUCCEEDED


@pytest.mark.timeout(60)
async def test_twenty_concurrent_submitters_of_one_key_create_one_task(
    wide_store: PostgresStore,
) -> None:
    for round_number in range(3):
        key = f"race-{round_number}"
        results = await asyncio.gather(
            *(
                wide_store.enqueue(NewTask(queue="q", payload={"who": i}, idempotency_key=key))
                for i in range(20)
            )
        )
        assert sum(r.created for r in results) == 1
        assert len({r.task_id for r in results}) == 1
        count = await fetchval(
            wide_store, "SELECT count(*) FROM tasks WHERE idempotency_key = $1", key
        )
        assert count == 1


@pytest.mark.timeout(60)
async def test_concurrent_batches_with_overlapping_keys_in_opposite_orders(
    wide_store: PostgresStore,
) -> None:
    """Batches that share keys in different orders neither deadlock nor duplicate."""
    keys = [f"k{i}" for i in range(500)]
    orders = [keys, keys[::-1]] * 4
    results = await asyncio.gather(
        *(
            wide_store.enqueue_batch([NewTask(queue="q", idempotency_key=k) for k in order])
            for order in orders
        )
    )
    by_key: dict[str, set[int]] = {}
    for order, batch in zip(orders, results, strict=True):
        for key, result in zip(order, batch, strict=True):
            by_key.setdefault(key, set()).add(result.task_id)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert sum(r.created for batch in results for r in batch) == 500
    assert await fetchval(wide_store, "SELECT count(*) FROM tasks") == 500


# -- the caller's transaction ------------------------------------------------------------


class _Abort(Exception):
    pass


async def test_enqueue_in_a_rolled_back_transaction_queues_nothing(store: PostgresStore) -> None:
    with pytest.raises(_Abort):
        async with store.transaction() as conn:
            result = await store.enqueue(NewTask(queue="q", idempotency_key="tx"), connection=conn)
            # Visible inside the caller's transaction...
            assert await conn.fetchval("SELECT count(*) FROM tasks") == 1
            raise _Abort
    # ...and gone with it, key included.
    assert await active_ids(store) == set()
    assert await claim(store) == []
    again = await store.enqueue(NewTask(queue="q", idempotency_key="tx"))
    assert again.created is True and again.task_id != result.task_id


async def test_enqueue_in_a_committed_transaction_is_queued(store: PostgresStore) -> None:
    async with store.transaction() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES ('newco', 'New Co')")
        result = await store.enqueue(NewTask(queue="q", tenant_id="newco"), connection=conn)
        batch = await store.enqueue_batch(
            [NewTask(queue="q", tenant_id="newco") for _ in range(3)], connection=conn
        )
    assert await active_ids(store) == {result.task_id, *(r.task_id for r in batch)}
    assert len(await claim(store)) == 4


async def test_uncommitted_enqueue_is_invisible_to_claimers(store: PostgresStore) -> None:
    async with store.transaction() as conn:
        await store.enqueue(NewTask(queue="q"), connection=conn)
        assert await claim(store) == []  # another connection: not committed yet
    assert len(await claim(store)) == 1
