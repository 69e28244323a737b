"""Per-tenant caps, start rate limits, the global cap per role and aging, in the claim."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from conveyor.store.params import (
    ClaimRequest,
    Finish,
    LeaseRef,
    NewTask,
    PlanUpdate,
    QueueLimits,
    StartRate,
    TenantAgentUpdate,
)
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import ClaimedTask
from conveyor.types import TaskState


async def claim(store: PostgresStore, limit: int = 100, *queues: str) -> list[ClaimedTask]:
    return await store.claim(ClaimRequest(queues or ("copywriter",), limit, "w", 60))


async def finish(store: PostgresStore, tasks: list[ClaimedTask]) -> None:
    await store.finish([Finish(LeaseRef(t.id, t.lease_token), TaskState.SUCCEEDED) for t in tasks])


async def flood(store: PostgresStore, tenant: str, count: int, **fields: Any) -> None:
    await store.enqueue_batch(
        [NewTask("copywriter", tenant_id=tenant, **fields) for _ in range(count)]
    )


async def execute(store: PostgresStore, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(store.dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_the_plan_cap_holds_and_other_tenants_are_served(store: PostgresStore) -> None:
    await store.create_tenant("free1", plan="free")  # 1 per role
    await store.create_tenant("pro1", plan="pro")  # 2 per role
    await store.create_tenant("open")  # no plan: no cap
    await flood(store, "free1", 50)
    await flood(store, "pro1", 50)
    await flood(store, "open", 5)
    served = Counter(t.tenant_id for t in await claim(store))
    assert served == {"free1": 1, "pro1": 2, "open": 5}
    assert await claim(store) == []  # everyone left is at the cap


async def test_a_finished_task_frees_its_slot(store: PostgresStore) -> None:
    await store.create_tenant("pro1", plan="pro")
    await flood(store, "pro1", 10)
    first = await claim(store)
    assert len(first) == 2
    await finish(store, first[:1])
    again = await claim(store)
    assert len(again) == 1 and again[0].tenant_id == "pro1"


async def test_an_override_replaces_the_plan_cap(store: PostgresStore) -> None:
    await store.create_tenant("big", plan="agency")  # 4 per role
    await store.set_tenant_agent(TenantAgentUpdate("big", "copywriter", max_concurrent=7))
    await flood(store, "big", 20)
    assert len(await claim(store)) == 7


async def test_editing_a_plan_applies_to_its_tenants(store: PostgresStore) -> None:
    await store.create_tenant("pro1", plan="pro")
    await flood(store, "pro1", 20)
    plan = await store.update_plan(PlanUpdate("pro", max_concurrent_per_role=3))
    assert plan.max_concurrent_per_role == 3
    assert len(await claim(store)) == 3


async def test_caps_are_per_role(store: PostgresStore) -> None:
    await store.create_tenant("pro1", plan="pro")
    await store.enqueue_batch(
        [NewTask(role, tenant_id="pro1") for role in ("copywriter", "seo") for _ in range(5)]
    )
    served = Counter(t.queue for t in await claim(store, 100, "copywriter", "seo"))
    assert served == {"copywriter": 2, "seo": 2}


async def test_a_capped_backlog_beyond_the_window_does_not_hide_others(
    store: PostgresStore,
) -> None:
    await store.create_tenant("flooder", plan="free")
    await store.create_tenant("late", plan="pro")
    await flood(store, "flooder", 60)
    assert len(await claim(store, 10)) == 1  # the flooder is at its cap from now on
    # Keys 0: the flooder's rows fill the whole claim window (4 x 10 rows) ahead of late's.
    await execute(store, "UPDATE tasks SET fairness_key = 0 WHERE tenant_id = 'flooder'")
    await flood(store, "late", 3)
    await execute(store, "UPDATE tasks SET fairness_key = 1 WHERE tenant_id = 'late'")
    served = Counter(t.tenant_id for t in await claim(store, 10))
    assert served == {"late": 2}


async def test_the_start_rate_limit_spends_its_burst_then_refills(store: PostgresStore) -> None:
    await store.create_tenant("t1", plan="agency")
    await store.create_tenant("other")
    await store.set_tenant_agent(
        TenantAgentUpdate("t1", "copywriter", max_concurrent=100, start_rate=StartRate(5, 3600))
    )
    await flood(store, "t1", 30)
    await flood(store, "other", 3)
    first = Counter(t.tenant_id for t in await claim(store))
    assert first == {"t1": 5, "other": 3}  # the burst, and the unlimited tenant
    assert await claim(store) == []  # the bucket is dry for 12 minutes
    # An hour later (moved by hand rather than waited for) the bucket is full again.
    await execute(store, "UPDATE tenant_rate SET tat = tat - interval '1 hour'")
    assert len(await claim(store)) == 5


async def test_a_plan_start_rate_applies_per_role(store: PostgresStore) -> None:
    await store.update_plan(PlanUpdate("pro", start_rate=StartRate(1, 3600)))
    await store.create_tenant("p", plan="pro")
    await store.enqueue_batch(
        [NewTask(role, tenant_id="p") for role in ("copywriter", "seo") for _ in range(3)]
    )
    served = Counter(t.queue for t in await claim(store, 100, "copywriter", "seo"))
    assert served == {"copywriter": 1, "seo": 1}


async def test_the_global_cap_holds_across_tenants(store: PostgresStore) -> None:
    settings = await store.set_queue_limits(QueueLimits("copywriter", max_running=3))
    assert settings.max_running == 3
    for tenant in ("a", "b"):
        await store.create_tenant(tenant)
        await flood(store, tenant, 10)
    first = await claim(store)
    assert len(first) == 3
    assert await claim(store) == []
    await finish(store, first[:2])
    assert len(await claim(store)) == 2
    await store.set_queue_limits(QueueLimits("copywriter", max_running=0))  # removed
    assert len(await claim(store)) == 15


async def test_aging_gives_a_starved_level_a_share(store: PostgresStore) -> None:
    await store.create_tenant("x")
    await store.create_tenant("y")
    await flood(store, "x", 200, priority=1)
    await flood(store, "y", 50, priority=10)
    assert {t.priority for t in await claim(store, 20)} == {1}
    # Priority 10 has not been served for longer than the queue's aging (30 s by default).
    await execute(
        store,
        "UPDATE queue_clocks SET last_served_at = now() - interval '1 minute' WHERE priority = 10",
    )
    served = Counter(t.priority for t in await claim(store, 20))
    assert served == {1: 18, 10: 2}  # a tenth of the batch, taken first
    assert {t.priority for t in await claim(store, 20)} == {1}  # served again just now


async def test_a_tenants_own_low_priority_backlog_does_not_push_back_its_urgent_work(
    store: PostgresStore,
) -> None:
    for tenant in ("x", "y", "z"):
        await store.create_tenant(tenant)
    await flood(store, "x", 1000, priority=10)
    await flood(store, "y", 100, priority=1)
    await flood(store, "z", 100, priority=1)
    await flood(store, "x", 1, priority=1)
    first = await claim(store, 3)
    assert "x" in {t.tenant_id for t in first}


async def test_a_delayed_batch_takes_its_keys_when_it_becomes_due(store: PostgresStore) -> None:
    for tenant in ("early", "now"):
        await store.create_tenant(tenant)
    soon = datetime.now(UTC) + timedelta(hours=1)
    await flood(store, "early", 100, run_at=soon)
    await flood(store, "now", 100)
    assert len(await claim(store, 60)) == 60  # the level's virtual time moves on
    await execute(store, "UPDATE tasks SET run_at = now() WHERE state = 'scheduled'")
    assert await store.promote_due() == 100
    served = Counter(t.tenant_id for t in await claim(store, 20))
    # keyed at promotion: interleaved with the waiting tenant, not all ahead of it
    assert 5 <= served["early"] <= 15 and served["now"] >= 5
