"""Caps under contention: sampled while many claimers and four workers run at once."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import asyncpg

from conveyor import App, TaskContext
from conveyor.store.params import ClaimRequest, Finish, LeaseRef, NewTask, TenantAgentUpdate
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.worker_harness import running

RUNNING_PER_TENANT = """
    SELECT tenant_id, count(*) AS n FROM tasks
    WHERE queue = 'copywriter' AND state = 'running' GROUP BY tenant_id
"""


async def sample_until(
    dsn: str, done: Callable[[], Awaitable[bool]], check: Callable[[dict[str, int]], None]
) -> int:
    """Sample running tasks per tenant (one snapshot each) until ``done``; returns samples."""
    conn = await asyncpg.connect(dsn)
    samples = 0
    try:
        while not await done():
            rows = await conn.fetch(RUNNING_PER_TENANT)
            check({r["tenant_id"]: r["n"] for r in rows})
            samples += 1
            await asyncio.sleep(0.002)
    finally:
        await conn.close()
    return samples


async def race_claims(dsn: str, seed: int, batch: int, stop_at: float, hold: float) -> int:
    """One claimer on a pool of its own: claim, hold the tasks up to ``hold`` s, finish them,
    until ``stop_at``; returns how many tasks it started."""
    rng = random.Random(seed)
    own = await PostgresStore.open(dsn, min_size=1, max_size=1)
    started = 0
    try:
        while time.monotonic() < stop_at:
            got = await own.claim(ClaimRequest(("copywriter",), batch, f"w{seed}", 60))
            started += len(got)
            await asyncio.sleep(rng.random() * hold)
            if got:
                await own.finish(
                    [Finish(LeaseRef(t.id, t.lease_token), TaskState.SUCCEEDED) for t in got]
                )
            else:
                await asyncio.sleep(0.001)
    finally:
        await own.close()
    return started


async def test_racing_claimers_never_exceed_a_cap(store: PostgresStore, database_dsn: str) -> None:
    """16 claimers, cap 1, and urgent tasks arriving all the time (rows that sort ahead)."""
    tenants = [f"t{i:02d}" for i in range(20)]
    for tenant in tenants:
        await store.create_tenant(tenant, plan="free")
        await store.enqueue_batch([NewTask("copywriter", tenant_id=tenant) for _ in range(60)])
    over: list[dict[str, int]] = []
    stop_at = time.monotonic() + 4

    async def urgent() -> None:
        rng = random.Random(99)
        while time.monotonic() < stop_at:
            tenant = rng.choice(tenants)
            await store.enqueue(NewTask("copywriter", tenant_id=tenant, priority=1))
            await asyncio.sleep(0.001)

    async def finished() -> bool:
        return time.monotonic() >= stop_at

    def check(counts: dict[str, int]) -> None:
        if any(n > 1 for n in counts.values()):
            over.append(counts)

    results = await asyncio.gather(
        *(race_claims(database_dsn, i, 10, stop_at, 0.005) for i in range(16)),
        urgent(),
        sample_until(database_dsn, finished, check),
    )
    started, samples = sum(results[:16]), results[-1]
    assert started > 100 and samples > 50  # the race really ran
    assert over == []


async def test_four_workers_never_exceed_the_plan_caps(
    store: PostgresStore, database_dsn: str
) -> None:
    """Four worker runtimes (own pools), each with room for far more than the caps allow."""
    app = App("caps")

    @app.agent("copywriter")
    async def write(ctx: TaskContext, payload: dict[str, Any]) -> None:
        await asyncio.sleep(payload["ms"] / 1000)

    caps = {"free1": 1, "pro1": 2, "pro2": 2, "agency1": 4}
    plans = {"free1": "free", "pro1": "pro", "pro2": "pro", "agency1": "agency"}
    rng = random.Random(7)
    for tenant, plan in plans.items():
        await store.create_tenant(tenant, plan=plan)
        await store.enqueue_batch(
            [NewTask("copywriter", {"ms": rng.randint(5, 25)}, tenant_id=tenant) for _ in range(60)]
        )
    over: list[dict[str, int]] = []
    seen_max: dict[str, int] = dict.fromkeys(caps, 0)

    def check(counts: dict[str, int]) -> None:
        for tenant, n in counts.items():
            seen_max[tenant] = max(seen_max[tenant], n)
            if n > caps[tenant]:
                over.append(counts)

    async def drained() -> bool:
        return await store.queue_status() == [] or all(
            q.queued == 0 and q.running == 0 for q in await store.queue_status()
        )

    async with AsyncExitStack() as stack:
        for i in range(4):
            own = await PostgresStore.open(database_dsn, min_size=1, max_size=4)
            stack.push_async_callback(own.close)
            await stack.enter_async_context(
                running(app, own, concurrency=32, poll_seconds=0.02, worker_id=f"cap-{i}")
            )
        samples = await asyncio.wait_for(sample_until(database_dsn, drained, check), 60)
    assert samples > 20
    assert over == []
    assert seen_max == caps  # every tenant reached its cap: the workers stayed busy


async def test_a_large_cap_is_served_by_several_claimers_at_once(
    store: PostgresStore, database_dsn: str
) -> None:
    """A cap of 8 or more is striped: a claim in flight does not shut others out."""
    await store.create_tenant("big", plan="enterprise")
    await store.set_tenant_agent(TenantAgentUpdate("big", "copywriter", max_concurrent=12))
    await store.enqueue_batch([NewTask("copywriter", tenant_id="big") for _ in range(100)])
    claim = "SELECT * FROM conveyor_claim_v2('{copywriter}', 2, 'w', 60, '{5}')"
    first, second = await asyncpg.connect(database_dsn), await asyncpg.connect(database_dsn)
    try:
        async with first.transaction():
            held = await first.fetch(claim)  # its stripe lock is held until this commits
            async with second.transaction():
                alongside = await second.fetch(claim)
        assert len(held) == 2 and len(alongside) == 2
        stripes = await first.fetch(
            "SELECT id, cap_stripe FROM tasks WHERE id = ANY ($1::bigint[])",
            [r["id"] for r in held + alongside],
        )
        by_id = {r["id"]: r["cap_stripe"] for r in stripes}
        # each claim ran under stripes of its own (a quota of 3 each: 12 / 4)
        assert {by_id[r["id"]] for r in held}.isdisjoint({by_id[r["id"]] for r in alongside})
    finally:
        await first.close()
        await second.close()
    # Filling up: never more than the cap, however the stripes are taken.
    taken = 4
    for _ in range(20):
        taken += len(await store.claim(ClaimRequest(("copywriter",), 5, "w", 60)))
    assert taken == 12


async def test_racing_claimers_never_exceed_a_striped_cap(
    store: PostgresStore, database_dsn: str
) -> None:
    await store.create_tenant("big", plan="enterprise")
    await store.set_tenant_agent(TenantAgentUpdate("big", "copywriter", max_concurrent=10))
    await store.enqueue_batch([NewTask("copywriter", tenant_id="big") for _ in range(3000)])
    over: list[dict[str, int]] = []
    stop_at = time.monotonic() + 3

    async def finished() -> bool:
        return time.monotonic() >= stop_at

    def check(counts: dict[str, int]) -> None:
        if counts.get("big", 0) > 10:
            over.append(counts)

    results = await asyncio.gather(
        *(race_claims(database_dsn, i, 4, stop_at, 0.004) for i in range(12)),
        sample_until(database_dsn, finished, check),
    )
    assert sum(results[:12]) > 100 and results[-1] > 50
    assert over == []
