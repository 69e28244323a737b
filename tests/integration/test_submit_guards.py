"""What the API's submit path asks of the store, on real PostgreSQL: idempotency
fingerprints, debounced enqueue (also under racing submitters), depth thresholds and the
queue loads the backpressure refresher reads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.errors import IdempotencyConflict, InvalidTask
from conveyor.store.params import Finish, NewTask, QueueLimits
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import claim, enqueue_many, execute, fetchval, lease

A, B = b"a" * 32, b"b" * 32


async def test_a_key_returns_the_first_task_only_to_the_same_request(
    store: PostgresStore,
) -> None:
    first = await store.enqueue(
        NewTask(queue="q", payload={"n": 1}, idempotency_key="k", idempotency_fingerprint=A)
    )
    again = await store.enqueue(
        NewTask(queue="q", payload={"n": 1}, idempotency_key="k", idempotency_fingerprint=A)
    )
    assert first.created and not again.created and again.task_id == first.task_id
    with pytest.raises(IdempotencyConflict, match="'k'"):
        await store.enqueue(
            NewTask(queue="q", payload={"n": 2}, idempotency_key="k", idempotency_fingerprint=B)
        )
    # A key taken without a fingerprint (an older release, ctx.spawn) matches any request.
    await store.enqueue(NewTask(queue="q", idempotency_key="bare"))
    bare = await store.enqueue(
        NewTask(queue="q", idempotency_key="bare", idempotency_fingerprint=B)
    )
    assert not bare.created
    assert await fetchval(store, "SELECT count(*) FROM tasks") == 2


async def test_a_conflict_in_a_batch_stores_nothing_of_it(store: PostgresStore) -> None:
    await store.enqueue(NewTask(queue="q", idempotency_key="k", idempotency_fingerprint=A))
    fresh = NewTask(queue="q", idempotency_key="new", idempotency_fingerprint=A)
    clash = NewTask(queue="q", idempotency_key="k", idempotency_fingerprint=B)
    with pytest.raises(IdempotencyConflict):
        await store.enqueue_batch([fresh, clash])
    twice = [
        NewTask(queue="q", idempotency_key="twice", idempotency_fingerprint=A),
        NewTask(queue="q", idempotency_key="twice", idempotency_fingerprint=B),
    ]
    with pytest.raises(IdempotencyConflict, match="twice"):
        await store.enqueue_batch(twice)
    assert await fetchval(store, "SELECT count(*) FROM tasks") == 1
    assert await fetchval(store, "SELECT count(*) FROM idempotency_keys") == 1


def debounced(payload: dict[str, int], key: str = "d", seconds: float = 60) -> NewTask:
    run_at = datetime.now(UTC) + timedelta(seconds=seconds)
    return NewTask(queue="q", payload=payload, run_at=run_at, debounce_key=key)


async def test_a_debounced_submit_replaces_the_waiting_task_s_payload(
    store: PostgresStore,
) -> None:
    first = await store.enqueue_debounced(debounced({"n": 1}))
    second = await store.enqueue_debounced(debounced({"n": 2}, seconds=120))
    other = await store.enqueue_debounced(debounced({"n": 3}, key="other"))
    assert first.created and not first.replaced
    assert second.task_id == first.task_id and second.replaced and not second.created
    assert other.created and other.task_id != first.task_id
    record = await store.get_task(first.task_id)
    assert record.payload == {"n": 2} and record.state is TaskState.SCHEDULED
    assert record.run_at is not None and record.run_at < datetime.now(UTC) + timedelta(
        seconds=90
    )  # the first submit's run_at stays: a steady stream still runs once a window

    # Once claimed, the task has left the waiting set: the next submit adds a task.
    await execute(store, "UPDATE tasks SET run_at = now() WHERE id = $1", first.task_id)
    assert await store.promote_due() == 1
    (running,) = await claim(store)
    after = await store.enqueue_debounced(debounced({"n": 4}))
    assert after.created and after.task_id != first.task_id
    await store.finish([Finish(lease(running), TaskState.SUCCEEDED)])
    assert (await store.get_task(first.task_id)).payload == {"n": 2}


async def test_debounce_is_refused_in_a_batch_and_with_an_idempotency_key(
    store: PostgresStore,
) -> None:
    with pytest.raises(InvalidTask, match="enqueue_debounced"):
        await store.enqueue_batch([debounced({"n": 1})])
    keyed = NewTask(queue="q", run_at=datetime.now(UTC), debounce_key="d", idempotency_key="k")
    with pytest.raises(InvalidTask, match="idempotency"):
        await store.enqueue_debounced(keyed)


@pytest.mark.timeout(60)
async def test_racing_debounced_submits_leave_one_task(wide_store: PostgresStore) -> None:
    for round_number in range(3):
        key = f"burst-{round_number}"
        results = await asyncio.gather(
            *(wide_store.enqueue_debounced(debounced({"who": i}, key=key)) for i in range(20))
        )
        assert sum(r.created for r in results) == 1
        assert sum(r.replaced for r in results) == 19
        assert len({r.task_id for r in results}) == 1
        count = await fetchval(
            wide_store, "SELECT count(*) FROM tasks WHERE debounce_key = $1", key
        )
        assert count == 1


async def test_depth_threshold_and_queue_loads(store: PostgresStore) -> None:
    assert await store.queue_loads() == []
    settings = await store.set_queue_limits(QueueLimits("q", depth_threshold=3))
    assert settings.depth_threshold == 3
    kept = await store.set_queue_limits(QueueLimits("q", max_running=2))
    assert kept.depth_threshold == 3 and kept.max_running == 2

    await enqueue_many(store, 1)
    (load,) = await store.queue_loads()
    assert (load.name, load.depth_threshold, load.depth, load.finished) == ("q", 3, 1, None)
    await enqueue_many(store, 1)  # from half the threshold up, the drain is measured
    (load,) = await store.queue_loads()
    assert (load.depth, load.finished) == (2, 0)

    await enqueue_many(store, 20)
    for task in await claim(store, limit=2):  # the cap of 2
        await store.finish([Finish(lease(task), TaskState.SUCCEEDED)])
    (load,) = await store.queue_loads()
    assert load.depth == 13  # counted up to 4 x 3 + 1, past the highest mark
    assert load.finished == 2

    removed = await store.set_queue_limits(QueueLimits("q", depth_threshold=0))
    assert removed.depth_threshold is None
    assert await store.queue_loads() == []
