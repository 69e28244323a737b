"""Provider budgets shared through PostgreSQL: two gateways (as two worker processes have,
each with its own connection pool) never send the provider more than the budget."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from conveyor.core.drip import DripRate
from conveyor.errors import BudgetRefused, LLMError
from conveyor.gateway import Gateway, load_gateway_config
from conveyor.gateway.budgets.budget import BudgetAsk
from conveyor.gateway.budgets.coalescing import CoalescingBuckets
from conveyor.gateway.budgets.shared import ProviderRates, SharedBudget
from conveyor.gateway.scope import CallScope
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.params import BucketDraw
from conveyor.store.postgres import PostgresStore
from tests.integration.budget_harness import (
    LIMIT,
    MESSAGES,
    WINDOW,
    assert_the_limit_held,
    config,
    two_gateways_call,
)


async def test_two_gateways_sharing_a_budget_never_exceed_the_providers_limit(
    database_dsn: str,
) -> None:
    stores = [await PostgresStore.open(database_dsn, max_size=4) for _ in range(2)]
    try:
        seen = await two_gateways_call(stores)
    finally:
        for store in stores:
            await store.close()
    assert_the_limit_held(seen)


async def test_without_the_budget_the_same_load_is_refused_by_the_provider() -> None:
    async with MockLLM(MockConfig(rate_limit_rpm=LIMIT, rate_limit_window=WINDOW)) as mock:
        loaded = load_gateway_config(config(mock.url, budget=False, attempts=1))
        async with Gateway(loaded) as gateway:
            results = await asyncio.gather(
                *(gateway.chat(model="writer", messages=MESSAGES, max_tokens=8) for _ in range(30)),
                return_exceptions=True,
            )
        assert sum(isinstance(r, LLMError) for r in results) == 10
        assert mock.stats.limit_429s == 10


ASK = BudgetAsk(CallScope(tenant_id="t"), "openai", "mock-gpt", 5, 5)


async def test_a_call_booked_too_far_ahead_is_refused_and_gives_its_slot_back(
    database_dsn: str,
) -> None:
    store = await PostgresStore.open(database_dsn, max_size=2)
    waits: list[float] = []

    async def note_wait(seconds: float) -> None:  # book ahead without sleeping through it
        waits.append(seconds)

    try:
        loaded = load_gateway_config(config("http://127.0.0.1:9", budget=True))
        rates = {"openai": ProviderRates(DripRate(LIMIT, WINDOW), None)}
        budget = SharedBudget(store, rates, max_wait=0.5, sleep=note_wait)
        assert SharedBudget.for_config(store, loaded) is not None
        for _ in range(12):  # a burst of 10, then 0.225 s and 0.45 s ahead (2.25 s / 10)
            await budget.reserve(ASK)
        assert len(waits) == 2 and 0.15 < waits[0] < 0.3 and 0.35 < waits[1] < 0.5
        with pytest.raises(BudgetRefused, match="booked") as first:
            await budget.reserve(ASK)  # 0.675 s ahead: past max_wait
        with pytest.raises(BudgetRefused) as second:
            await budget.reserve(ASK)
        # the refused call gave its slot back, so the next one is booked no further ahead
        assert first.value.retry_after is not None and second.value.retry_after is not None
        assert abs(second.value.retry_after - first.value.retry_after) < 0.1
    finally:
        await store.close()


async def test_concurrent_reservations_share_round_trips_and_keep_their_own_slots(
    store: PostgresStore,
) -> None:
    coalesced = CoalescingBuckets(store)
    tenant_draw = BucketDraw("openai", "requests", 0.5, "acme")
    global_draw = BucketDraw("openai", "requests", 0.1)
    answers = await asyncio.gather(
        *(coalesced.reserve_llm_budget([global_draw, tenant_draw]) for _ in range(40))
    )
    assert coalesced.round_trips < 40  # calls that arrived together went together
    # Each call got a slot of its own in both buckets, one emission after the one before,
    # in the order the calls arrived, as 40 separate reservations would have.
    for index, bucket_seconds in ((0, 0.1), (1, 0.5)):
        slots = [answer[index] for answer in answers]
        gaps = [b - a for a, b in itertools.pairwise(slots)]
        assert all(abs(gap - bucket_seconds) < 0.02 for gap in gaps), gaps
    alone = await store.reserve_llm_budget([global_draw])  # the 41st, sent by itself
    assert abs(alone[0] - answers[-1][0] - 0.1) < 0.05
