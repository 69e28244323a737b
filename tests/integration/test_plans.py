"""Plans as data and admission at enqueue: roles, overrides, monthly limits, races."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import ConfigurationError, PlanViolation, QuotaExceeded
from conveyor.store.params import NewTask, PeriodicTask, TenantAgentUpdate
from conveyor.store.postgres import PostgresStore
from tests.integration.helpers import fetchval


async def test_the_plan_matrix_is_seeded(store: PostgresStore) -> None:
    plans = {p.id: p for p in await store.list_plans()}
    assert plans["free"].allowed_roles == ("copywriter", "seo")
    assert plans["free"].max_concurrent_per_role == 1
    assert plans["pro"].allowed_roles == ("copywriter", "seo", "social", "analyst")
    assert plans["pro"].max_concurrent_per_role == 2
    assert len(plans["agency"].allowed_roles or ()) == 7
    assert plans["agency"].max_concurrent_per_role == 4
    assert plans["enterprise"].allowed_roles is None  # all seven and custom roles


async def test_a_role_outside_the_plan_is_refused_and_nothing_is_stored(
    store: PostgresStore,
) -> None:
    await store.create_tenant("small", plan="free")
    batch = [NewTask("copywriter", tenant_id="small"), NewTask("analyst", tenant_id="small")]
    with pytest.raises(PlanViolation, match="plan 'free' allows copywriter, seo") as caught:
        await store.enqueue_batch(batch)
    assert caught.value.queue == "analyst"
    assert await fetchval(store, "SELECT count(*) FROM tasks") == 0
    assert await store.tenant_usage("small") == {}
    # an allowed role goes through, and enterprise tenants may use custom roles
    await store.enqueue(NewTask("copywriter", tenant_id="small"))
    await store.create_tenant("bigco", plan="enterprise")
    await store.enqueue(NewTask("brand_guardian", tenant_id="bigco"))


async def test_overrides_enable_and_disable_roles(store: PostgresStore) -> None:
    await store.create_tenant("small", plan="free")
    await store.set_tenant_agent(TenantAgentUpdate("small", "analyst", enabled=True))
    await store.enqueue(NewTask("analyst", tenant_id="small"))
    await store.set_tenant_agent(TenantAgentUpdate("small", "seo", enabled=False))
    with pytest.raises(PlanViolation, match="disabled"):
        await store.enqueue(NewTask("seo", tenant_id="small"))
    [analyst, seo] = await store.list_tenant_agents("small")
    assert (analyst.queue, analyst.enabled, seo.queue, seo.enabled) == (
        "analyst",
        True,
        "seo",
        False,
    )


async def test_the_monthly_plan_limit_refuses_the_batch_that_crosses_it(
    store: PostgresStore,
) -> None:
    await store.create_tenant("small", plan="free")  # 1,000 tasks a month
    await store.enqueue_batch([NewTask("seo", tenant_id="small") for _ in range(990)])
    with pytest.raises(QuotaExceeded, match="used 990 of its 1000 plan tasks"):
        await store.enqueue_batch([NewTask("copywriter", tenant_id="small") for _ in range(11)])
    assert await fetchval(store, "SELECT count(*) FROM tasks") == 990
    assert await store.tenant_usage("small") == {"*": 990, "seo": 990}
    await store.enqueue_batch([NewTask("copywriter", tenant_id="small") for _ in range(10)])
    assert (await store.tenant_usage("small"))["*"] == 1000


async def test_a_role_limit_from_an_override(store: PostgresStore) -> None:
    await store.create_tenant("acme", plan="agency")
    await store.set_tenant_agent(TenantAgentUpdate("acme", "researcher", monthly_task_limit=3))
    await store.enqueue_batch([NewTask("researcher", tenant_id="acme") for _ in range(3)])
    with pytest.raises(QuotaExceeded, match="'researcher' tasks"):
        await store.enqueue(NewTask("researcher", tenant_id="acme"))
    await store.enqueue(NewTask("copywriter", tenant_id="acme"))  # other roles go on


async def test_duplicates_by_idempotency_key_do_not_count(store: PostgresStore) -> None:
    await store.create_tenant("small", plan="free")
    for _ in range(3):
        await store.enqueue(NewTask("seo", tenant_id="small", idempotency_key="same"))
    assert await store.tenant_usage("small") == {"*": 1, "seo": 1}


async def test_concurrent_submitters_never_overshoot_the_limit(
    store: PostgresStore, wide_store: PostgresStore
) -> None:
    await store.create_tenant("small", plan="free")
    await store.enqueue_batch([NewTask("seo", tenant_id="small") for _ in range(990)])

    async def submit() -> bool:
        try:
            await wide_store.enqueue(NewTask("copywriter", tenant_id="small"))
        except QuotaExceeded:
            return False
        return True

    accepted = await asyncio.gather(*(submit() for _ in range(20)))
    assert sum(accepted) == 10
    assert await fetchval(store, "SELECT count(*) FROM tasks") == 1000
    assert (await store.tenant_usage("small"))["*"] == 1000


async def test_unknown_plans_and_disallowed_schedules_are_refused(store: PostgresStore) -> None:
    with pytest.raises(ConfigurationError, match="unknown plan 'gold'; the plans are"):
        await store.create_tenant("x", plan="gold")
    await store.create_tenant("small", plan="free")
    with pytest.raises(PlanViolation):
        await store.register_periodic(
            [PeriodicTask("report", "0 * * * *", "analyst", tenant_id="small")]
        )
