"""Weighted fair dequeue: a flood from one tenant lines up behind everyone else's work."""

from __future__ import annotations

from collections import Counter

from conveyor.store.params import ClaimRequest, NewTask
from conveyor.store.postgres import PostgresStore


async def claim_tenants(store: PostgresStore, count: int) -> list[str]:
    claimed = await store.claim(ClaimRequest(("copywriter",), count, "w", 30))
    tenants = {t.id: t.tenant_id for t in claimed}
    return [tenants[t.id] for t in sorted(claimed, key=lambda t: t.id)]


async def test_a_flood_does_not_delay_the_others(store: PostgresStore) -> None:
    for tenant in ("flood", "b", "c"):
        await store.create_tenant(tenant)
    await store.enqueue_batch([NewTask("copywriter", tenant_id="flood") for _ in range(2000)])
    await store.enqueue_batch([NewTask("copywriter", tenant_id="b") for _ in range(5)])
    await store.enqueue_batch([NewTask("copywriter", tenant_id="c") for _ in range(5)])
    first = Counter(await claim_tenants(store, 20))
    # b and c are served at once, interleaved with the flood, not after 2,000 of its tasks
    assert first["b"] == 5 and first["c"] == 5 and first["flood"] == 10


async def test_without_fairness_the_flood_goes_first(database_dsn: str) -> None:
    store = await PostgresStore.open(database_dsn, fairness=False)
    try:
        for tenant in ("flood", "b"):
            await store.create_tenant(tenant)
        await store.enqueue_batch([NewTask("copywriter", tenant_id="flood") for _ in range(200)])
        await store.enqueue_batch([NewTask("copywriter", tenant_id="b") for _ in range(5)])
        assert Counter(await claim_tenants(store, 20)) == {"flood": 20}
    finally:
        await store.close()


async def test_weights_share_the_queue_in_proportion(store: PostgresStore) -> None:
    await store.create_tenant("heavy", weight=3)
    await store.create_tenant("light", weight=1)
    await store.enqueue_batch([NewTask("copywriter", tenant_id="heavy") for _ in range(300)])
    await store.enqueue_batch([NewTask("copywriter", tenant_id="light") for _ in range(300)])
    served = Counter(await claim_tenants(store, 100))
    assert 70 <= served["heavy"] <= 80 and served["heavy"] + served["light"] == 100


async def test_priority_still_dominates_fairness(store: PostgresStore) -> None:
    await store.create_tenant("b")
    await store.enqueue_batch([NewTask("copywriter", priority=10) for _ in range(50)])
    await store.enqueue_batch([NewTask("copywriter", tenant_id="b", priority=1)])
    claimed = await store.claim(ClaimRequest(("copywriter",), 1, "w", 30))
    assert claimed[0].tenant_id == "b" and claimed[0].priority == 1


async def test_a_tenant_returning_to_an_empty_queue_starts_level(store: PostgresStore) -> None:
    for tenant in ("flood", "b"):
        await store.create_tenant(tenant)
    await store.enqueue_batch([NewTask("copywriter", tenant_id="flood") for _ in range(100)])
    assert len(await claim_tenants(store, 100)) == 100  # the queue is drained
    await store.enqueue_batch([NewTask("copywriter", tenant_id="flood") for _ in range(50)])
    await store.enqueue_batch([NewTask("copywriter", tenant_id="b") for _ in range(50)])
    served = Counter(await claim_tenants(store, 20))
    assert served["b"] >= 8  # not pushed behind the flood's 50 new tasks
