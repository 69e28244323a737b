"""Pausing queues and reading their status on real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from tests.integration.helpers import claim, enqueue_many, make_dead


async def test_a_paused_queue_is_not_claimed_but_others_are(store: PostgresStore) -> None:
    paused_ids = await enqueue_many(store, 3, queue="paused")
    open_ids = await enqueue_many(store, 2, queue="open")
    await store.pause_queue("paused")

    # Submissions to a paused queue are still accepted.
    [late] = await enqueue_many(store, 1, queue="paused")
    claimed = await claim(store, "paused", "open", limit=10)
    assert [c.id for c in claimed] == open_ids
    assert await claim(store, "paused", limit=10) == []

    await store.resume_queue("paused")
    resumed = await claim(store, "paused", limit=10)
    assert [c.id for c in resumed] == [*paused_ids, late]


async def test_pause_and_resume_are_idempotent(store: PostgresStore) -> None:
    await enqueue_many(store, 1)
    await store.pause_queue("q")
    await store.pause_queue("q")
    assert await claim(store) == []
    await store.resume_queue("q")
    await store.resume_queue("q")
    assert len(await claim(store)) == 1
    # Resuming a queue that was never paused is harmless.
    await store.resume_queue("never-paused")


async def test_queue_status_reports_depths_dead_counts_and_pauses(store: PostgresStore) -> None:
    await enqueue_many(store, 4, queue="copy")
    await store.enqueue(NewTask(queue="copy", run_at=datetime.now(UTC) + timedelta(hours=1)))
    await claim(store, "copy", limit=1)
    await make_dead(store, 2, queue="seo")
    await store.pause_queue("idle")
    await store.pause_queue("copy")

    status = {s.queue: s for s in await store.queue_status()}
    assert set(status) == {"copy", "seo", "idle"}

    copy = status["copy"]
    assert (copy.queued, copy.scheduled, copy.running, copy.dead) == (3, 1, 1, 0)
    assert copy.paused is True
    assert copy.oldest_queued_seconds is not None and 0 <= copy.oldest_queued_seconds < 60

    seo = status["seo"]
    assert (seo.queued, seo.scheduled, seo.running, seo.dead) == (0, 0, 0, 2)
    assert seo.paused is False and seo.oldest_queued_seconds is None

    idle = status["idle"]
    assert (idle.queued, idle.dead, idle.paused) == (0, 0, True)

    await store.resume_queue("copy")
    assert {s.queue: s.paused for s in await store.queue_status()}["copy"] is False


async def test_queue_status_of_an_empty_database_is_empty(store: PostgresStore) -> None:
    assert await store.queue_status() == []
