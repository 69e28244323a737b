"""A group's cap counter under concurrent reservations from two stores (two processes'
pools): however the reservations race, no more than the cap is ever reserved or used."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

from conveyor.core.llm_caps import CapScope, CapSet, CapSource, LLMCaps
from conveyor.store.params import CapReserve, CapSettle
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import CapReservation

PROMPT, COMPLETION = 40, 60  # each reservation's worst case: 100 tokens


def ask(task_id: int, group: CapSet, run: CapSet | None = None) -> CapReserve:
    return CapReserve(
        tenant_id="acme",
        task_id=task_id,
        group_id="launch",
        provider="openai",
        model="mock-gpt",
        prompt_tokens=PROMPT,
        completion_tokens=COMPLETION,
        run=run or CapSet(CapScope.RUN),
        group=group,
    )


def settled(task_id: int, got: CapReservation, used: int, scope: CapScope) -> CapSettle:
    return CapSettle(
        tenant_id="acme",
        held=((scope.value, str(task_id) if scope is CapScope.RUN else "launch"),),
        provider="openai",
        model="mock-gpt",
        reserved_tokens=PROMPT + COMPLETION,
        reserved_cost=got.estimate,
        prompt_tokens=used // 2,
        completion_tokens=used - used // 2,
        sent=True,
    )


async def test_racing_reservations_of_one_group_never_pass_its_token_cap(
    store: PostgresStore, wide_store: PostgresStore
) -> None:
    group = CapSet.tightest(CapScope.GROUP, [(CapSource.PLAN, LLMCaps(tokens=1_000))])
    stores = [store, wide_store]
    answers = await asyncio.gather(
        *(stores[i % 2].reserve_llm_caps(ask(i, group)) for i in range(60))
    )
    admitted = [i for i, got in enumerate(answers) if got.ok]
    assert len(admitted) == 10  # 10 x 100 tokens fill the cap exactly, in any order
    refused = [got for got in answers if not got.ok]
    assert all(got.group_status == "refused" and got.run_status == "none" for got in refused)
    assert all(got.group_used.tokens == 1_000 for got in refused)

    # Each admitted attempt used 30 tokens: settling them frees 700 for seven more.
    await asyncio.gather(
        *(
            stores[i % 2].settle_llm_caps(settled(i, answers[i], 30, CapScope.GROUP))
            for i in admitted
        )
    )
    again = await asyncio.gather(
        *(stores[i % 2].reserve_llm_caps(ask(100 + i, group)) for i in range(30))
    )
    assert sum(got.ok for got in again) == 7
    counter = await store.for_tenant("acme").llm_cap_counter(CapScope.GROUP, "launch")
    assert counter is not None
    assert (counter.used.tokens, counter.used.calls) == (300, 10)
    assert (counter.in_flight.tokens, counter.in_flight.calls) == (700, 7)


async def test_racing_calls_and_money_caps_hold_while_attempts_settle_at_random(
    store: PostgresStore, wide_store: PostgresStore
) -> None:
    cap_cost = Decimal("0.0005")
    await store.create_group("acme", "launch", caps=LLMCaps(calls=25, cost=cap_cost))
    group = CapSet(CapScope.GROUP)  # the group's own caps, kept in its row
    stores = [store, wide_store]
    rng = random.Random(7)
    peak = {"calls": 0, "cost": Decimal(0)}

    async def agent(task_id: int) -> int:
        admitted = 0
        for _ in range(10):
            got = await stores[task_id % 2].reserve_llm_caps(ask(task_id, group))
            if not got.ok:
                return admitted
            admitted += 1
            peak["calls"] = max(peak["calls"], got.group_used.calls)
            peak["cost"] = max(peak["cost"], got.group_used.cost)
            await asyncio.sleep(rng.random() / 100)
            used = rng.randrange(0, PROMPT + COMPLETION + 1)
            await stores[task_id % 2].settle_llm_caps(settled(task_id, got, used, CapScope.GROUP))
        return admitted

    counts = await asyncio.gather(*(agent(i) for i in range(12)))
    counter = await store.for_tenant("acme").llm_cap_counter(CapScope.GROUP, "launch")
    assert counter is not None and counter.in_flight.calls == 0
    assert counter.used.calls == sum(counts) <= 25
    assert peak["calls"] <= 25 and peak["cost"] <= cap_cost  # reserved + used, at every step
    assert counter.used.cost <= cap_cost


async def test_a_group_that_refuses_gives_back_what_the_run_reserved(
    store: PostgresStore,
) -> None:
    run = CapSet.tightest(CapScope.RUN, [(CapSource.ROLE, LLMCaps(calls=100))])
    group = CapSet.tightest(CapScope.GROUP, [(CapSource.PLAN, LLMCaps(calls=1))])
    first = await store.reserve_llm_caps(ask(5, group, run))
    second = await store.reserve_llm_caps(ask(5, group, run))
    assert (first.run_status, first.group_status) == ("ok", "ok")
    assert (second.run_status, second.group_status) == ("released", "refused")
    counter = await store.for_tenant("acme").llm_cap_counter(CapScope.RUN, "5")
    assert counter is not None and counter.in_flight.calls == 1  # the first one's alone
    assert counter.enforced == {"calls": {"limit": "100", "source": "role"}}
