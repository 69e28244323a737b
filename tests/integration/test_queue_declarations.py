"""Declared queues on real PostgreSQL: what declares a queue, and the check submitters run."""

from __future__ import annotations

import pytest

from conveyor.errors import UndeclaredQueue
from conveyor.store.params import (
    PeriodicTask,
    PlanUpdate,
    QueueLimits,
    TenantAgentUpdate,
    WorkerInfo,
)
from conveyor.store.postgres import PostgresStore
from tests.integration.helpers import claim, enqueue_many, execute

STANDARD_ROLES = (
    "activity_planner", "analyst", "copywriter", "paid_ads", "researcher", "seo", "social",
)  # fmt: skip


async def sources(store: PostgresStore, queue: str) -> tuple[str, ...]:
    found = await store.queue_declarations([queue])
    return found[0].sources if found else ()


async def test_a_fresh_database_declares_the_roles_its_plans_name(store: PostgresStore) -> None:
    declared = await store.queue_declarations()
    assert [d.name for d in declared] == sorted(STANDARD_ROLES)
    assert {d.sources for d in declared} == {("plan",)}
    await store.require_declared_queues(["copywriter", "seo"])


async def test_an_undeclared_queue_is_refused_with_the_name_it_resembles(
    store: PostgresStore,
) -> None:
    with pytest.raises(UndeclaredQueue) as caught:
        await store.require_declared_queues(["copywriter", "copywritr", "zz_nothing"])
    assert caught.value.queues == ["copywritr", "zz_nothing"]
    assert caught.value.suggestions == {"copywritr": "copywriter"}
    message = str(caught.value)
    assert "'copywritr' (did you mean 'copywriter'?)" in message
    assert "conveyor queues declare copywritr zz_nothing" in message


async def test_each_kind_of_declaration_counts(store: PostgresStore) -> None:
    await store.register_worker(WorkerInfo("w1", "host", 1, ("served",), 4))
    await store.set_tenant_agent(TenantAgentUpdate("default", "overridden", enabled=True))
    await store.register_periodic([PeriodicTask("nightly", "0 2 * * *", queue="scheduled")])
    await store.update_plan(PlanUpdate("enterprise", allowed_roles=("planned",)))
    await store.pause_queue("paused")
    await store.set_queue_limits(QueueLimits("capped", 5, None))
    assert await store.declare_queues(["explicit", "explicit"]) == ["explicit"]

    assert await sources(store, "served") == ("declared", "worker")
    assert await sources(store, "overridden") == ("tenant override",)
    assert await sources(store, "scheduled") == ("periodic task",)
    assert await sources(store, "planned") == ("plan",)
    for operator_made in ("paused", "capped", "explicit"):
        assert await sources(store, operator_made) == ("declared",)
    await store.require_declared_queues(
        ["served", "overridden", "scheduled", "planned", "paused", "capped", "explicit"]
    )


async def test_a_queue_once_served_stays_declared_after_its_workers_are_forgotten(
    store: PostgresStore,
) -> None:
    await store.register_worker(WorkerInfo("w1", "host", 1, ("seasonal",), 4))
    await execute(store, "UPDATE workers SET heartbeat_at = now() - interval '2 days'")
    assert await store.prune_workers(86400) == 1
    assert await sources(store, "seasonal") == ("declared",)


async def test_declaring_again_changes_nothing_and_a_declared_queue_claims_as_before(
    store: PostgresStore,
) -> None:
    await store.set_queue_limits(QueueLimits("capped", 1, None))
    await store.pause_queue("capped")
    assert await store.declare_queues(["capped", "fresh"]) == ["fresh"]
    [settings] = await store.queue_declarations(["capped"])
    assert settings.sources == ("declared",)
    paused = await claim(store, "capped", limit=5)
    assert paused == []  # still paused: declaring kept the operator's settings
    await enqueue_many(store, 3, queue="fresh")
    assert len(await claim(store, "fresh", limit=5)) == 3  # a row of defaults: no cap
