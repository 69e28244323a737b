"""Slots leased ahead of demand: calls that come in waves take them without a round trip,
the limit still holds across two gateways, and what a lease did not use goes back."""

from __future__ import annotations

import asyncio

from conveyor.core.drip import DEFAULT_MARGIN
from conveyor.gateway import load_gateway_config
from conveyor.gateway.budgets.budget import BudgetAsk
from conveyor.gateway.budgets.coalescing import CoalescingBuckets
from conveyor.gateway.budgets.shared import SharedBudget
from conveyor.gateway.scope import CallScope
from conveyor.store.postgres import PostgresStore
from tests.integration.budget_harness import assert_the_limit_held, two_gateways_call
from tests.integration.helpers import fetchval

PROVIDER_ASK = BudgetAsk(CallScope(tenant_id="default"), "openai", "mock-gpt", 5, 5)
WAVES, WAVE = 6, 10


def leased_config(requests_per_minute: int, lateness: float) -> dict[str, object]:
    provider = {
        "kind": "openai",
        "base_url": "http://127.0.0.1:9",
        "api_key": "k",
        "requests_per_minute": requests_per_minute,
        "budget_lease": lateness,
    }
    return {"providers": {"openai": provider}, "aliases": {"writer": ["openai/mock-gpt"]}}


async def bucket_clock(store: PostgresStore, *, relative: bool = False) -> float:
    """The provider's request bucket clock: epoch seconds, or seconds ahead of now."""
    value = await fetchval(
        store,
        "SELECT extract(epoch FROM tat - CASE WHEN $1 THEN now() ELSE 'epoch' END)::float8 "
        "FROM llm_buckets WHERE tenant_id = '' AND provider = 'openai' AND kind = 'requests'",
        relative,
    )
    return float(value)


def waves_budget(store: PostgresStore) -> SharedBudget:
    """A leasing budget of 6,000 requests/min over ``store``, as a worker builds it."""
    budget = SharedBudget.for_config(
        CoalescingBuckets(store), load_gateway_config(leased_config(6_000, 0.25))
    )
    assert budget.leases is not None
    return budget


async def reserve_in_waves(
    budget: SharedBudget, waves: int, size: int, gap: float, ask: BudgetAsk = PROVIDER_ASK
) -> list[float]:
    """``waves`` waves of ``size`` reservations at once, ``gap`` seconds apart: how long
    each one waited for its slot."""
    waited: list[float] = []
    for _ in range(waves):
        held = await asyncio.gather(*(budget.reserve(ask) for _ in range(size)))
        waited += [r.waited for r in held]
        await asyncio.sleep(gap)
    return waited


async def test_calls_in_waves_take_leased_slots_without_a_round_trip(
    store: PostgresStore,
) -> None:
    budget = waves_budget(store)
    assert budget.leases is not None
    waited = await reserve_in_waves(budget, WAVES, WAVE, 0.05)  # blocks booked between
    served = budget.leases.served
    # The first wave books the first block; every later one finds it there.
    assert served >= (WAVES - 1) * WAVE - WAVE // 2, served
    assert budget.leases.renewals >= 1
    assert all(w == 0 for w in waited)  # 60 calls fit the burst of 100: none waits
    assert budget.leases.held()[("openai", "requests")] > 0  # a block is booked ahead
    before = await bucket_clock(store)
    await budget.aclose()
    after = await bucket_clock(store)
    # Leased time is never given back (a refund mid-queue could hand the same stretch of
    # the clock to the next booker): closing leaves the bucket's clock where it was.
    assert after == before
    assert budget.leases.held() == {}
    assert budget.leases.take([]) is None


async def test_a_lease_of_zero_seconds_turns_leasing_off(store: PostgresStore) -> None:
    budget = SharedBudget.for_config(store, load_gateway_config(leased_config(600, 0)))
    assert budget.leases is None
    rates = budget._rates["openai"].requests
    assert rates is not None and rates.margin == DEFAULT_MARGIN


async def test_a_leased_budget_widens_its_margin_by_the_lateness(store: PostgresStore) -> None:
    budget = SharedBudget.for_config(store, load_gateway_config(leased_config(600, 0.3)))
    rates = budget._rates["openai"].requests
    assert rates is not None and abs(rates.margin - (DEFAULT_MARGIN + 0.3)) < 1e-9


async def test_a_short_rate_window_caps_the_lease_at_a_hundredth_of_it(
    store: PostgresStore,
) -> None:
    config = leased_config(600, 0.25)
    config["providers"]["openai"]["rate_window"] = 5  # type: ignore[index]
    budget = SharedBudget.for_config(store, load_gateway_config(config))
    rates = budget._rates["openai"].requests
    # 0.05 s of lateness, not 0.25: the margin (and what it costs) stays a small share.
    assert rates is not None and abs(rates.margin - (DEFAULT_MARGIN + 0.05)) < 1e-9


async def test_two_leasing_gateways_sharing_a_budget_never_exceed_the_providers_limit(
    database_dsn: str,
) -> None:
    stores = [await PostgresStore.open(database_dsn, max_size=4) for _ in range(2)]
    try:
        seen = await two_gateways_call(stores, lateness=0.6, spacing=0.03)
    finally:
        for store in stores:
            await store.close()
    assert_the_limit_held(seen, leased=True)


async def test_leases_renewed_between_waves_do_not_run_the_bucket_ahead(
    store: PostgresStore,
) -> None:
    # Waves of 20 calls every 0.5 s, a fifth of the 100/s the bucket drips. Blocks are kept
    # fresh between the waves; booking each while the last one's clock still lay ahead
    # would book the bucket faster than it drips, and later waves would wait for slots
    # nobody used.
    budget = waves_budget(store)
    assert budget.leases is not None
    waited = await reserve_in_waves(budget, 8, 20, 0.5)
    ahead = await bucket_clock(store, relative=True)
    renewals = budget.leases.renewals
    await budget.aclose()
    assert renewals >= 8  # blocks were renewed between the waves
    assert all(w == 0 for w in waited)  # 20 calls a wave fit the burst: nobody waits
    # At most about one block (25 slots of 10 ms) and a wave ahead, not seconds.
    assert ahead < 0.6, ahead
    assert budget.leases.served > 0


async def test_four_processes_in_waves_on_a_busy_bucket_book_no_slots_nobody_uses(
    database_dsn: str,
) -> None:
    # Four processes, each a wave of 10 calls every 0.5 s (80 % of the 100/s drip), the
    # waves staggered. Blocks booked after a wave on a bucket the others keep busy would go
    # stale unused and push everyone's slots back; leasing must not make anyone wait.
    stores = [await PostgresStore.open(database_dsn, max_size=2) for _ in range(4)]
    budgets = [waves_budget(store) for store in stores]
    waited: list[float] = []

    async def process(budget: SharedBudget, offset: float) -> None:
        await asyncio.sleep(offset)
        waited.extend(await reserve_in_waves(budget, 8, 10, 0.5))

    try:
        await asyncio.gather(*(process(b, i * 0.125) for i, b in enumerate(budgets)))
        ahead = await bucket_clock(stores[0], relative=True)
    finally:
        for budget in budgets:
            await budget.aclose()
        for store in stores:
            await store.close()
    assert len(waited) == 320
    assert max(waited) < 0.05, max(waited)  # the burst covers every wave: nobody waits
    assert ahead < 0.6, ahead  # a wave and a block ahead at most, not seconds


async def test_a_call_whose_token_draw_exceeds_a_block_is_neither_leased_nor_counted(
    store: PostgresStore,
) -> None:
    config = leased_config(6_000, 0.25)
    provider = config["providers"]["openai"]  # type: ignore[index]
    provider["tokens_per_minute"] = 100_000  # a block holds at most ~200 tokens
    budget = SharedBudget.for_config(CoalescingBuckets(store), load_gateway_config(config))
    assert budget.leases is not None
    big = BudgetAsk(CallScope(tenant_id="default"), "openai", "mock-gpt", 500, 500)
    small = BudgetAsk(CallScope(tenant_id="default"), "openai", "mock-gpt", 5, 5)
    await reserve_in_waves(budget, 3, 2, 0.1, big)
    assert budget.leases.renewals == 0 and budget.leases.served == 0  # nothing booked ahead
    # A steady stream: blocks are booked even on the token bucket the big calls keep busy.
    await reserve_in_waves(budget, 16, 5, 0.05, small)
    await budget.aclose()
    assert budget.leases.served > 0  # small calls take both their slots from blocks
