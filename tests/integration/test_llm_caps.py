"""Runaway guards on real PostgreSQL against the mock over real HTTP: a looping agent stops
at its run's cap (calls, tokens), a campaign at its group's cap (money, tokens) with its
tasks spread over concurrent runs, the tightest of role, plan, submit and group applies and
is named in the error, and an uncapped task is not counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from conveyor import (
    App,
    LLMCapExceeded,
    LLMCaps,
    NewTask,
    SpendLimitExceeded,
    TaskContext,
    TaskState,
)
from conveyor.core.llm_caps import CapScope
from conveyor.gateway import CallScope, Gateway, load_gateway_config
from conveyor.gateway.budgets.budget import estimate_prompt_tokens
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.params import CapReserve, PlanUpdate
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import CapReservation
from tests.integration.worker_harness import running, settle

MESSAGES = [{"role": "user", "content": "call the search tool again"}]
MAX_TOKENS = 40
ESTIMATE = estimate_prompt_tokens(MESSAGES) + MAX_TOKENS


def gateway(store: PostgresStore, url: str) -> Gateway:
    config = {
        "providers": {"openai": {"kind": "openai", "base_url": url, "api_key": "k"}},
        "aliases": {"writer": ["openai/mock-gpt"]},
        "retry": {"max_attempts": 1},
    }
    return Gateway.with_store(load_gateway_config(config), store, environ={})


@pytest.fixture
async def mock() -> AsyncIterator[MockLLM]:
    async with MockLLM(MockConfig()) as server:
        yield server


def looping_app(caps: LLMCaps | None = None) -> App:
    """An agent stuck in a tool loop: it calls the model until something stops it."""
    app = App("loops")

    @app.agent("research", timeout=60, max_attempts=3, caps=caps)
    async def research(ctx: TaskContext, payload: dict[str, Any]) -> None:
        while True:
            await ctx.llm.chat(model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS)

    return app


async def test_a_looping_agent_stops_at_its_runs_call_cap_and_fails_for_good(
    store: PostgresStore, mock: MockLLM
) -> None:
    await store.create_tenant("acme")
    task = await store.enqueue(NewTask("research", tenant_id="acme"))
    async with (
        gateway(store, mock.url) as llm,
        running(looping_app(LLMCaps(calls=5)), store, llm=llm),
    ):
        dead = await settle(store, task.task_id)
    assert dead.state is TaskState.DEAD and dead.attempts == 1  # permanent: not retried
    error = str(dead.last_error)
    assert "LLMCapExceeded" in error
    assert "the run cap of 5 LLM calls (set by the role) would be crossed: 5 used" in error
    assert mock.stats.requests_total == 5
    counter = await store.for_tenant("acme").llm_cap_counter(CapScope.RUN, str(task.task_id))
    assert counter is not None
    assert counter.used.calls == 5 and counter.in_flight.calls == 0
    assert counter.enforced == {"calls": {"limit": "5", "source": "role"}}


async def test_a_looping_agent_stops_at_its_token_cap_counting_each_calls_worst_case(
    store: PostgresStore, mock: MockLLM
) -> None:
    cap = 10 * ESTIMATE
    await store.create_tenant("acme")
    task = await store.enqueue(NewTask("research", tenant_id="acme", llm_caps=LLMCaps(tokens=cap)))
    async with gateway(store, mock.url) as llm, running(looping_app(), store, llm=llm):
        dead = await settle(store, task.task_id)
    assert dead.state is TaskState.DEAD
    assert f"the run cap of {cap:,} tokens (set by the submit)" in str(dead.last_error)
    counter = await store.for_tenant("acme").llm_cap_counter(CapScope.RUN, str(task.task_id))
    assert counter is not None and counter.caps == LLMCaps(tokens=cap)
    # Never past the cap; stopped when the next call's worst case no longer fitted beside
    # what was used and the last call's reservation, given back just after its reply.
    assert counter.used.tokens <= cap < counter.used.tokens + 2 * ESTIMATE
    assert counter.used.calls == mock.stats.requests_total > 10  # replies were shorter


async def test_a_campaign_stops_at_its_groups_spend_cap_across_its_tasks(
    store: PostgresStore, mock: MockLLM
) -> None:
    cap = Decimal("0.001")
    await store.create_tenant("acme")
    await store.create_group("acme", "launch", caps=LLMCaps(cost=cap))
    tasks = [
        await store.enqueue(NewTask("research", tenant_id="acme", group_id="launch"))
        for _ in range(4)
    ]
    async with (
        gateway(store, mock.url) as llm,
        running(looping_app(), store, llm=llm, concurrency=4),
    ):
        finished = [await settle(store, t.task_id, timeout=30) for t in tasks]
    assert all(t.state is TaskState.DEAD for t in finished)
    for task in finished:
        assert f"task {task.id} of group 'launch'" in str(task.last_error)
        assert "the group cap of $0.001000 (set by the group)" in str(task.last_error)
    counter = await store.for_tenant("acme").llm_cap_counter(CapScope.GROUP, "launch")
    assert counter is not None and counter.in_flight.calls == 0
    assert 0 < counter.used.cost <= cap
    [usage] = await store.llm_usage("acme", finished[0].created_at, group_id="launch")
    assert usage.cost == counter.used.cost  # the counter agrees with llm_calls
    assert counter.used.calls == usage.attempts == mock.stats.requests_total
    # Each task got some of the campaign's money: the cap is the group's, not a task's.
    per_task = [
        (await store.llm_usage("acme", t.created_at, task_id=t.id))[0].attempts for t in finished
    ]
    assert sum(per_task) == usage.attempts and min(per_task) >= 1


async def test_a_plans_group_token_cap_binds_every_group_of_its_tenants(
    store: PostgresStore, mock: MockLLM
) -> None:
    cap = 6 * ESTIMATE
    await store.update_plan(PlanUpdate("enterprise", group_caps=LLMCaps(tokens=cap)))
    await store.create_tenant("acme", plan="enterprise")
    tasks = [
        await store.enqueue(NewTask("research", tenant_id="acme", group_id="unregistered"))
        for _ in range(3)
    ]
    async with (
        gateway(store, mock.url) as llm,
        running(looping_app(), store, llm=llm, concurrency=3),
    ):
        finished = [await settle(store, t.task_id) for t in tasks]
    assert all("(set by the plan)" in str(t.last_error) for t in finished)
    counter = await store.for_tenant("acme").llm_cap_counter(CapScope.GROUP, "unregistered")
    assert counter is not None and counter.used.tokens <= cap


async def test_the_tightest_cap_applies_and_the_error_names_it(
    store: PostgresStore, mock: MockLLM
) -> None:
    await store.update_plan(PlanUpdate("enterprise", run_caps=LLMCaps(calls=4, tokens=10_000)))
    await store.create_tenant("acme", plan="enterprise")
    submitted = await store.enqueue(
        NewTask("research", tenant_id="acme", llm_caps=LLMCaps(calls=3))
    )
    role = LLMCaps(calls=10, cost=Decimal("5"))
    scope = CallScope(tenant_id="acme", task_id=submitted.task_id, run_caps=role)
    async with gateway(store, mock.url) as gw:
        for _ in range(3):
            await gw.chat(model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS, scope=scope)
        with pytest.raises(LLMCapExceeded) as refused:
            await gw.chat(model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS, scope=scope)
        # The plan's cap is the tightest for a task without caps of its own.
        other = CallScope(tenant_id="acme", task_id=submitted.task_id + 1000, run_caps=role)
        for _ in range(4):
            await gw.chat(model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS, scope=other)
        with pytest.raises(LLMCapExceeded) as by_plan:
            await gw.chat(model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS, scope=other)
    error = refused.value
    assert (error.scope, error.dimension, error.source) == ("run", "calls", "submit")
    assert (error.limit, error.used, error.needed) == (3, 3, 1)
    assert by_plan.value.source == "plan" and by_plan.value.limit == 4
    assert mock.stats.requests_total == 7  # the refused calls sent nothing


async def test_an_agent_that_catches_the_cap_finishes_with_what_it_has(
    store: PostgresStore, mock: MockLLM
) -> None:
    app = App("careful")

    @app.agent("research", timeout=60, caps=LLMCaps(calls=2))
    async def research(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        notes = []
        try:
            while True:
                reply = await ctx.llm.chat(model="writer", messages=MESSAGES, max_tokens=10)
                notes.append(reply.text)
        except LLMCapExceeded as exc:
            return {"notes": len(notes), "stopped_by": f"{exc.scope} {exc.dimension}"}

    await store.create_tenant("acme")
    task = await store.enqueue(NewTask("research", tenant_id="acme"))
    async with gateway(store, mock.url) as llm, running(app, store, llm=llm):
        done = await settle(store, task.task_id)
    assert done.state is TaskState.SUCCEEDED
    assert done.result == {"notes": 2, "stopped_by": "run calls"}


class CountingStore:
    """The real store, counting the cap reservations the gateway sends it."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.reservations = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def reserve_llm_caps(self, ask: CapReserve) -> CapReservation:
        self.reservations += 1
        return await self._store.reserve_llm_caps(ask)


async def test_an_uncapped_task_is_neither_counted_nor_asked_twice(
    store: PostgresStore, mock: MockLLM
) -> None:
    await store.create_tenant("acme")
    scope = CallScope(tenant_id="acme", task_id=77, group_id="free")
    counting = CountingStore(store)
    config = load_gateway_config(
        {
            "providers": {"openai": {"kind": "openai", "base_url": mock.url, "api_key": "k"}},
            "aliases": {"writer": ["openai/mock-gpt"]},
        }
    )
    async with Gateway.with_store(config, counting, environ={}) as gw:  # type: ignore[arg-type]
        for _ in range(3):
            await gw.chat(model="writer", messages=MESSAGES, scope=scope)
    assert counting.reservations == 1  # the first call learned there is nothing to count
    view = store.for_tenant("acme")
    assert await view.llm_cap_counter(CapScope.RUN, "77") is None
    assert await view.llm_cap_counter(CapScope.GROUP, "free") is None


async def test_an_attempt_a_later_budget_refuses_is_released_and_not_counted(
    store: PostgresStore, mock: MockLLM
) -> None:
    await store.create_tenant("broke")
    await store.set_tenant_llm_limits("broke", monthly_token_budget=0)
    scope = CallScope(tenant_id="broke", task_id=5, run_caps=LLMCaps(calls=3))
    async with gateway(store, mock.url) as gw:
        with pytest.raises(SpendLimitExceeded):  # the caps admitted it, the month did not
            await gw.chat(model="writer", messages=MESSAGES, scope=scope)
    counter = await store.for_tenant("broke").llm_cap_counter(CapScope.RUN, "5")
    assert counter is not None
    assert (counter.used.calls, counter.in_flight.calls, counter.in_flight.tokens) == (0, 0, 0)
    assert mock.stats.requests_total == 0
