"""The metrics read from PostgreSQL and from a real worker: queue depth and age per queue
and for the busiest tenants (the rest summed as "other"), the dead-letter count, the pool's
size and acquire waits, and the task hook's duration and wait histograms with per-queue
outcomes. Every metric lives on the shared registry, so each test uses queues of its own."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor import App, NewTask, PermanentError, TaskContext
from conveyor.observability.metrics import REGISTRY
from conveyor.observability.pool_metrics import unwatch_pool, watch_pool
from conveyor.observability.queue_metrics import COLLECTOR, LoadSampler
from conveyor.observability.task_metrics import TaskMetrics
from conveyor.store.params import ClaimRequest, Finish, LeaseRef
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.worker_harness import running, settle


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_one_statement_reads_every_queue_and_names_only_the_busiest_tenants(
    store: PostgresStore,
) -> None:
    waiting = {"big": 5, "mid": 3, "small": 1, "tiny": 1}
    for tenant in waiting:
        await store.create_tenant(tenant)
    await store.enqueue_batch(
        [
            NewTask(queue="mail", tenant_id=t, payload={})
            for t, n in waiting.items()
            for _ in range(n)
        ]
        + [
            NewTask(
                queue="seo",
                tenant_id="tiny",
                payload={},
                run_at=datetime.now(UTC) + timedelta(hours=1),
            )
        ]
    )
    await store.enqueue_batch([NewTask(queue="seo", tenant_id="small", payload={})])
    claimed = await store.claim(ClaimRequest(("seo",), 1, "w1", 30.0))
    await store.enqueue_batch([NewTask(queue="seo", tenant_id="small", payload={}, max_attempts=1)])
    dying = await store.claim(ClaimRequest(("seo",), 1, "w1", 30.0))
    await store.finish([Finish(LeaseRef(dying[0].id, dying[0].lease_token), TaskState.DEAD)])
    assert len(claimed) == 1

    found = {q.queue: q for q in await store.queue_metrics(top_tenants=2)}

    mail, seo = found["mail"], found["seo"]
    assert (mail.queued, mail.scheduled, mail.running, mail.dead) == (10, 0, 0, 0)
    assert mail.oldest_queued_seconds is not None and mail.oldest_queued_seconds >= 0
    # "big" and "mid" wait the most over all queues: named; "small" and "tiny" are "other"
    assert [(t.tenant_id, t.queued) for t in mail.tenants] == [("big", 5), ("mid", 3), (None, 2)]
    assert (seo.queued, seo.scheduled, seo.running, seo.dead) == (0, 1, 1, 1)
    assert seo.oldest_queued_seconds is None
    assert [(t.tenant_id, t.scheduled, t.running) for t in seo.tenants] == [(None, 1, 1)]


async def test_the_sampler_exports_its_snapshot_and_the_pool(store: PostgresStore) -> None:
    queue = f"sampled-{secrets.token_hex(3)}"
    await store.create_tenant("acme")
    await store.enqueue_batch([NewTask(queue=queue, tenant_id="acme", payload={})] * 3)
    try:
        sampler = LoadSampler(store, top_tenants=1)
        assert sample("conveyor_queue_depth", queue=queue) is None  # nothing read yet
        await sampler.sample()
        assert sample("conveyor_queue_depth", queue=queue) == 3
        assert sample("conveyor_queue_running_tasks", queue=queue) == 0
        assert sample("conveyor_queue_dead_tasks", queue=queue) == 0
        age = sample("conveyor_queue_oldest_age_seconds", queue=queue)
        assert age is not None and age >= 0
        assert sample("conveyor_tenant_queue_depth", queue=queue, tenant="acme") == 3
        assert (sample("conveyor_queue_metrics_read_timestamp_seconds") or 0) > 0
        assert sample("conveyor_db_pool_max_connections") == 8  # the fixture's pool
        open_now = sample("conveyor_db_pool_open_connections")
        assert open_now is not None and open_now >= 1
    finally:
        COLLECTOR.snapshot = None


async def test_every_acquire_of_a_watched_pool_is_observed(store: PostgresStore) -> None:
    watch_pool(store)
    try:
        before = sample("conveyor_db_pool_acquire_seconds_count") or 0
        for _ in range(3):
            await store.queue_status()
        after = sample("conveyor_db_pool_acquire_seconds_count") or 0
    finally:
        unwatch_pool(store)
    assert after - before >= 3
    await store.queue_status()
    assert sample("conveyor_db_pool_acquire_seconds_count") == after  # unwatched: no more


async def test_the_task_hook_observes_runs_and_the_worker_counts_outcomes_per_queue(
    store: PostgresStore,
) -> None:
    ok_queue, bad_queue = f"ok-{secrets.token_hex(3)}", f"bad-{secrets.token_hex(3)}"
    app = App("metered")

    @app.agent(ok_queue)
    async def fine(ctx: TaskContext, payload: dict[str, Any]) -> int:
        return 1

    @app.agent(bad_queue)
    async def broken(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise PermanentError("no")

    made = await store.enqueue_batch(
        [NewTask(queue=ok_queue, payload={})] * 4 + [NewTask(queue=bad_queue, payload={})] * 2
    )
    async with running(app, store, hooks=[TaskMetrics()]) as worker:
        for result in made:
            await settle(store, result.task_id)
        while sum(worker.outcomes_by_queue.values()) < 6:  # the flush after the last finish
            await worker.recorder.flush()
    by_queue = worker.outcomes_by_queue
    assert by_queue[ok_queue, "succeeded"] == 4
    assert by_queue[bad_queue, "dead"] == 2
    assert sample("conveyor_task_duration_seconds_count", queue=ok_queue) == 4
    assert sample("conveyor_task_duration_seconds_count", queue=bad_queue) == 2
    assert sample("conveyor_task_queue_wait_seconds_count", queue=ok_queue) == 4
    waited = sample("conveyor_task_queue_wait_seconds_sum", queue=ok_queue)
    assert waited is not None and waited >= 0
