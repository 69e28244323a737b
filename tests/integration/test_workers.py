"""Worker liveness rows on real PostgreSQL: register, list, change state, prune."""

from __future__ import annotations

import pytest

from conveyor.errors import StoreError
from conveyor.store.params import WorkerInfo
from conveyor.store.postgres import PostgresStore
from tests.integration.helpers import claim, enqueue_many, execute


async def test_register_and_list_workers(store: PostgresStore) -> None:
    await store.register_worker(WorkerInfo("w1", "host-a", 101, ("copy", "seo"), 8))
    await store.register_worker(WorkerInfo("w2", "host-b", 202, ("copy",), 2))
    await enqueue_many(store, 3, queue="copy")
    await claim(store, "copy", limit=2, worker="w1")

    workers = {w.id: w for w in await store.list_workers()}
    assert set(workers) == {"w1", "w2"}
    w1 = workers["w1"]
    assert (w1.host, w1.pid, w1.queues, w1.concurrency) == ("host-a", 101, ("copy", "seo"), 8)
    assert w1.state == "running"
    assert w1.running == 2
    assert workers["w2"].running == 0
    assert 0 <= w1.silent_seconds < 5
    assert w1.started_at <= w1.heartbeat_at
    assert [w.id for w in await store.list_workers()] == ["w1", "w2"]  # by start time


async def test_registering_again_refreshes_the_row(store: PostgresStore) -> None:
    await store.register_worker(WorkerInfo("w1", "host-a", 1, ("a",), 1))
    await store.set_worker_state("w1", "stopped")
    first = (await store.list_workers())[0]
    await store.register_worker(WorkerInfo("w1", "host-b", 2, ("b", "c"), 4))
    [again] = await store.list_workers()
    assert (again.host, again.pid, again.queues, again.concurrency) == ("host-b", 2, ("b", "c"), 4)
    assert again.state == "running"
    assert again.heartbeat_at >= first.heartbeat_at


async def test_set_worker_state(store: PostgresStore) -> None:
    await store.register_worker(WorkerInfo("w1", "h", 1, ("q",), 1))
    for state in ("stopping", "stopped", "running"):
        await store.set_worker_state("w1", state)
        assert (await store.list_workers())[0].state == state
    with pytest.raises(StoreError):
        await store.set_worker_state("w1", "exploded")
    assert (await store.list_workers())[0].state == "running"


async def test_prune_forgets_only_silent_workers(store: PostgresStore) -> None:
    await store.register_worker(WorkerInfo("old", "h", 1, ("q",), 1))
    await store.register_worker(WorkerInfo("fresh", "h", 2, ("q",), 1))
    silence = "UPDATE workers SET heartbeat_at = now() - interval '10 minutes' WHERE id = $1"
    await execute(store, silence, "old")
    assert (await store.list_workers())[0].silent_seconds > 590
    assert await store.prune_workers(silent_seconds=3600) == 0
    assert await store.prune_workers(silent_seconds=60) == 1
    assert [w.id for w in await store.list_workers()] == ["fresh"]
    # A heartbeat (even with no tasks held) keeps a worker from being pruned.
    await execute(store, silence, "fresh")
    await store.heartbeat("fresh", [], 30)
    assert await store.prune_workers(silent_seconds=60) == 0
    assert [w.id for w in await store.list_workers()] == ["fresh"]
