"""The dead-letter queue on real PostgreSQL: listing with filters and replaying by id, by
queue, by tenant or everything, in batches, back to the queue with the same id."""

from __future__ import annotations

import pytest

from conveyor.store.params import Finish, ReplayFilter
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import (
    active_ids,
    claim,
    enqueue_many,
    fetchval,
    history_ids,
    lease,
    make_dead,
)


async def test_list_dead_newest_first_with_its_error(store: PostgresStore) -> None:
    ids = await make_dead(store, 3, queue="seo")
    # A succeeded task is not in the dead-letter queue.
    await enqueue_many(store, 1, queue="seo")
    [ok] = await claim(store, "seo")
    await store.finish([Finish(lease(ok), TaskState.SUCCEEDED)])

    dead = await store.list_dead()
    assert [d.id for d in dead] == sorted(ids, reverse=True)  # same finish time: newest id first
    first = dead[-1]
    assert first.queue == "seo" and first.tenant_id == "default"
    assert first.last_error == {"type": "Boom", "message": f"task {first.id}"}
    assert first.attempts == 1 and first.max_attempts == 5
    assert first.payload == {"n": 0}
    assert first.finished_at >= first.created_at


async def test_list_dead_filters_by_queue_tenant_and_limit(store: PostgresStore) -> None:
    await store.create_tenant("acme")
    seo = await make_dead(store, 2, queue="seo")
    copy = await make_dead(store, 3, queue="copy")
    acme = await make_dead(store, 2, queue="seo", tenant_id="acme")

    assert {d.id for d in await store.list_dead(queue="copy")} == set(copy)
    assert {d.id for d in await store.list_dead(queue="seo")} == set(seo + acme)
    assert {d.id for d in await store.list_dead(tenant_id="acme")} == set(acme)
    assert {d.id for d in await store.list_dead(queue="seo", tenant_id="default")} == set(seo)
    assert len(await store.list_dead(limit=4)) == 4
    assert await store.list_dead(queue="nothing-here") == []


async def test_replay_by_id_brings_the_task_back_queued_with_fresh_attempts(
    store: PostgresStore,
) -> None:
    ids = await make_dead(store, 3)
    target = ids[1]
    assert await store.replay_dead(ReplayFilter(task_ids=(target,))) == [target]

    record = await store.get_task(target)
    assert record.id == target
    assert record.state is TaskState.QUEUED
    assert record.attempts == 0
    assert record.last_error == {"type": "Boom", "message": f"task {target}"}  # kept for context
    assert target in await active_ids(store)
    assert target not in await history_ids(store)
    assert {d.id for d in await store.list_dead()} == {ids[0], ids[2]}

    [again] = await claim(store)
    assert again.id == target and again.attempts == 1 and again.payload == {"n": 1}
    # Replaying it again (it is no longer dead) does nothing.
    assert await store.replay_dead(ReplayFilter(task_ids=(target,))) == []


async def test_replay_by_queue_and_by_tenant(store: PostgresStore) -> None:
    await store.create_tenant("acme")
    seo = await make_dead(store, 2, queue="seo")
    copy = await make_dead(store, 2, queue="copy")
    acme = await make_dead(store, 2, queue="copy", tenant_id="acme")

    assert sorted(await store.replay_dead(ReplayFilter(queue="seo"))) == sorted(seo)
    assert sorted(await store.replay_dead(ReplayFilter(tenant_id="acme"))) == sorted(acme)
    assert {d.id for d in await store.list_dead()} == set(copy)
    assert await active_ids(store) == set(seo + acme)


async def test_replay_everything(store: PostgresStore) -> None:
    ids = await make_dead(store, 3, queue="a") + await make_dead(store, 2, queue="b")
    assert sorted(await store.replay_dead(ReplayFilter(everything=True))) == sorted(ids)
    assert await store.list_dead() == []
    assert await active_ids(store) == set(ids)
    assert await fetchval(store, "SELECT count(*) FROM tasks WHERE attempts = 0") == 5


async def test_replay_in_small_batches_still_replays_all(store: PostgresStore) -> None:
    ids = await make_dead(store, 23)
    replayed = await store.replay_dead(ReplayFilter(everything=True), batch_size=5)
    assert sorted(replayed) == sorted(ids)
    assert len(replayed) == len(set(replayed))
    assert await store.list_dead() == []
    assert len(await claim(store, limit=100)) == 23


async def test_replay_leaves_other_states_alone(store: PostgresStore) -> None:
    [dead] = await make_dead(store, 1)
    [ok_id, cancelled_id] = await enqueue_many(store, 2)
    ok, cancelled = await claim(store, limit=2)
    await store.finish(
        [Finish(lease(ok), TaskState.SUCCEEDED), Finish(lease(cancelled), TaskState.CANCELLED)]
    )
    assert await store.replay_dead(ReplayFilter(task_ids=(ok_id, cancelled_id, dead))) == [dead]
    assert (await store.get_task(ok_id)).state is TaskState.SUCCEEDED
    assert (await store.get_task(cancelled_id)).state is TaskState.CANCELLED


async def test_a_replay_filter_must_say_what_to_replay() -> None:
    with pytest.raises(ValueError, match="say which"):
        ReplayFilter()
