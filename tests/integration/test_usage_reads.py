"""The reads the API's usage and admin routes need: a tenant's tasks and LLM calls within
one month, a tenant by id, and every queue's switches."""

from __future__ import annotations

from datetime import UTC, datetime

from conveyor.core.partitions import Month
from conveyor.store.params import NewTask, QueueLimits
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import execute


def call(created_at: str, tenant: str, tokens: int) -> dict[str, object]:
    return {
        "created_at": created_at, "tenant_id": tenant, "task_id": 1, "group_id": None,
        "requested": "writer", "provider": "openai", "model": "mock-gpt", "attempt": 1,
        "outcome": "ok", "stream": False, "prompt_tokens": tokens, "completion_tokens": 1,
        "usage_estimated": False, "latency_ms": 10.0, "ttft_ms": None, "status": 200,
        "error": None,
    }  # fmt: skip


async def test_llm_usage_stops_at_until(store: PostgresStore) -> None:
    await store.create_tenant("acme")
    await store.ensure_partitions(now=datetime(2026, 11, 1, tzinfo=UTC))
    await store.record_llm_calls(
        [
            call("2026-11-30T23:59:59+00:00", "acme", 1),
            call("2026-12-01T00:00:00+00:00", "acme", 10),
            call("2026-12-31T23:59:59+00:00", "acme", 100),
            call("2027-01-01T00:00:00+00:00", "acme", 1000),
            call("2026-12-15T00:00:00+00:00", "globex", 10000),
        ]
    )
    december = Month(2026, 12)
    [row] = await store.for_tenant("acme").llm_usage(december.start, until=december.end)
    assert (row.attempts, row.prompt_tokens) == (2, 110)
    [since] = await store.llm_usage("acme", december.start)
    assert since.prompt_tokens == 1110


async def test_task_counts_are_the_tenant_s_tasks_created_in_the_month(
    store: PostgresStore,
) -> None:
    await store.create_tenant("acme")
    await store.create_tenant("globex")
    acme = store.for_tenant("acme")
    made = await acme.enqueue_batch([NewTask("writer", {}), NewTask("writer", {})])
    await acme.enqueue(NewTask("seo", {}))
    await store.for_tenant("globex").enqueue(NewTask("writer", {}))
    await acme.cancel(made[0].task_id)
    # one task of last month: still queued, it does not count in this month
    old = await acme.enqueue(NewTask("seo", {}))
    await execute(
        store, "UPDATE tasks SET created_at = now() - interval '40 days' WHERE id = $1",
        old.task_id,
    )  # fmt: skip
    month = Month.of(datetime.now(UTC))
    counts = await acme.task_counts(month.start, month.end)
    assert counts == {
        "writer": {TaskState.QUEUED: 1, TaskState.CANCELLED: 1},
        "seo": {TaskState.QUEUED: 1},
    }
    assert await acme.task_counts(month.plus(1).start, month.plus(1).end) == {}


async def test_tenant_by_id_and_queue_settings(store: PostgresStore) -> None:
    await store.create_tenant("acme", "Acme", 2.0)
    found = await store.get_tenant("acme")
    assert found is not None and (found.name, found.weight) == ("Acme", 2.0)
    assert await store.get_tenant("nobody") is None
    await store.pause_queue("writer")
    await store.set_queue_limits(QueueLimits("seo", max_running=4))
    settings = {s.name: s for s in await store.list_queue_settings()}
    assert settings["writer"].paused and settings["seo"].max_running == 4
