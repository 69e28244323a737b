"""The full gateway on real PostgreSQL against the mock over real HTTP: every attempt in
``llm_calls`` with its cost, monthly token and spend limits that hold across two gateways,
tenants' rates from their plan, the tenant's model override, and waits bounded by the
task's deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from conveyor import App, NewTask, TaskContext, TaskState
from conveyor.core.partitions import Month
from conveyor.errors import BudgetRefused, LLMUnavailable, PermanentError, SpendLimitExceeded
from conveyor.gateway import CallScope, Gateway, load_gateway_config
from conveyor.gateway.budgets.budget import estimate_prompt_tokens
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.params import TenantAgentUpdate
from conveyor.store.postgres import PostgresStore
from tests.integration.helpers import execute, fetchval
from tests.integration.worker_harness import running, settle

MESSAGES = [{"role": "user", "content": "write a slogan for shoes"}]
MAX_TOKENS = 50
ESTIMATE = estimate_prompt_tokens(MESSAGES) + MAX_TOKENS


def config(url: str, **retry: Any) -> dict[str, Any]:
    return {
        "providers": {
            "openai": {"kind": "openai", "base_url": url, "api_key": "k"},
            "local": {"kind": "ollama", "base_url": url},
        },
        "aliases": {"writer": ["openai/mock-gpt"]},
        "retry": {"max_attempts": 3, "base": 0.01, "cap": 0.05, **retry},
    }


def gateway(store: PostgresStore, url: str, **retry: Any) -> Gateway:
    return Gateway.with_store(load_gateway_config(config(url, **retry)), store, environ={})


def this_month() -> datetime:
    return Month.of(datetime.now(UTC)).start


@pytest.fixture
async def mock() -> AsyncIterator[MockLLM]:
    async with MockLLM(MockConfig()) as server:
        yield server


async def test_every_attempt_is_a_priced_row_with_totals_per_tenant_group_and_task(
    store: PostgresStore, mock: MockLLM
) -> None:
    await store.create_tenant("acme")
    mock.configure(script=["503", "ok"])
    first = CallScope(tenant_id="acme", task_id=11, group_id="launch", queue="copywriter")
    async with gateway(store, mock.url) as gw:
        one = await gw.chat(model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS, scope=first)
        two = await gw.chat(
            model="writer", messages=MESSAGES, scope=CallScope(tenant_id="acme", task_id=12)
        )
        await gw.chat(model="openai/unpriced-model", messages=MESSAGES, scope=first)
    # closing the gateway wrote the buffered records

    [priced, unpriced] = await store.llm_usage("acme", this_month())
    assert (priced.model, unpriced.model) == ("mock-gpt", "unpriced-model")
    assert (priced.attempts, priced.succeeded, priced.failed) == (3, 2, 1)  # 503, ok, ok
    assert priced.prompt_tokens == one.prompt_tokens + two.prompt_tokens
    assert priced.completion_tokens == one.completion_tokens + two.completion_tokens
    # mock-gpt is priced at $0.50 in and $1.50 out per million tokens (migration 0007)
    expected = priced.prompt_tokens * Decimal("0.5") + priced.completion_tokens * Decimal("1.5")
    assert priced.cost == expected / 1_000_000 and not priced.unpriced
    assert unpriced.cost == 0 and unpriced.unpriced

    [launch, _] = await store.llm_usage("acme", this_month(), group_id="launch")
    assert (launch.attempts, launch.succeeded) == (2, 1)
    [task_12] = await store.llm_usage("acme", this_month(), task_id=12)
    assert (task_12.attempts, task_12.completion_tokens) == (1, two.completion_tokens)
    rows = await fetchval(
        store,
        "SELECT array_agg(outcome || ':' || coalesce(status, 0) ORDER BY created_at) "
        "FROM llm_calls WHERE task_id = 11",
    )
    assert rows == ["server_error:503", "ok:200", "ok:200"]


async def test_a_monthly_token_budget_holds_across_two_gateways(
    database_dsn: str, mock: MockLLM
) -> None:
    stores = [await PostgresStore.open(database_dsn, max_size=6) for _ in range(2)]
    try:
        await stores[0].create_tenant("small")
        # room for five estimates in flight at once, not six
        await stores[0].set_tenant_llm_limits("small", monthly_token_budget=5 * ESTIMATE + 10)
        mock.configure(latency=0.5)
        gateways = [gateway(s, mock.url) for s in stores]
        scope = CallScope(tenant_id="small")
        results = await asyncio.gather(
            *(
                gateways[i % 2].chat(
                    model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS, scope=scope
                )
                for i in range(20)
            ),
            return_exceptions=True,
        )
        for gw in gateways:
            await gw.aclose()
        answered = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, SpendLimitExceeded)]
        assert len(answered) == 5 and len(refused) == 15
        assert mock.stats.requests_total == 5  # the refused ones sent nothing
        assert isinstance(refused[0], PermanentError) and "monthly tokens" in str(refused[0])
        month = await stores[0].tenant_llm_month("small", this_month().date())
        assert month is not None
        assert month["tokens"] == sum(r.total_tokens for r in answered)
        assert month["reserved_tokens"] == 0  # every reservation was settled
    finally:
        for s in stores:
            await s.close()


async def test_an_exhausted_spend_limit_sends_nothing_and_spares_the_breaker(
    store: PostgresStore, mock: MockLLM
) -> None:
    await store.create_tenant("thrifty")
    await store.set_tenant_llm_limits("thrifty", monthly_spend_limit=Decimal("0.00001"))
    settings = config(mock.url) | {"breaker": {"window": 2, "min_calls": 1}}
    async with Gateway.with_store(load_gateway_config(settings), store, environ={}) as gw:
        for _ in range(3):
            with pytest.raises(SpendLimitExceeded, match=r"monthly spend limit"):
                await gw.chat(
                    model="writer", messages=MESSAGES, scope=CallScope(tenant_id="thrifty")
                )
        assert gw.breakers.state("openai", "mock-gpt").value == "closed"
    assert mock.stats.requests_total == 0
    [refused] = await store.llm_usage("thrifty", this_month())
    assert refused.attempts == 0 and refused.failed == 3  # three budget_refused records


async def test_the_first_limited_call_of_a_month_counts_what_was_already_used(
    store: PostgresStore, mock: MockLLM
) -> None:
    await store.create_tenant("late")
    scope = CallScope(tenant_id="late")
    async with gateway(store, mock.url) as gw:
        used = await gw.chat(model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS, scope=scope)
    await store.set_tenant_llm_limits("late", monthly_token_budget=used.total_tokens + ESTIMATE - 1)
    async with gateway(store, mock.url) as gw:
        with pytest.raises(SpendLimitExceeded):
            await gw.chat(model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS, scope=scope)
    month = await store.tenant_llm_month("late", this_month().date())
    assert month is not None and month["tokens"] == used.total_tokens


async def test_a_plans_request_rate_binds_its_tenants_and_no_one_else(
    store: PostgresStore, mock: MockLLM
) -> None:
    await execute(
        store,
        "INSERT INTO plans (id, name, llm_requests_per_minute) VALUES ('trickle', 'Trickle', 2)",
    )
    await store.create_tenant("slow", plan="trickle")
    await store.create_tenant("free-rider")
    async with gateway(store, mock.url) as gw:
        slow = CallScope(tenant_id="slow", deadline=time.monotonic() + 5)
        await gw.chat(model="writer", messages=MESSAGES, scope=slow)  # the burst of one
        # the next slot is a minute away, the task has 5 s left: refused now, not at 5 s
        with pytest.raises(BudgetRefused, match=r"tenant slow: 2 requests per 60 s") as refused:
            await gw.chat(model="writer", messages=MESSAGES, scope=slow)
        assert not isinstance(refused.value, PermanentError)  # a retry later may fit
        assert "the task has" in str(refused.value)
        other = CallScope(tenant_id="free-rider")
        await asyncio.gather(
            *(gw.chat(model="writer", messages=MESSAGES, scope=other) for _ in range(5))
        )
    assert mock.stats.requests_total == 6


async def test_the_tenants_model_override_applies_to_its_agent(
    store: PostgresStore, mock: MockLLM
) -> None:
    await store.create_tenant("moved")
    await store.set_tenant_agent(
        TenantAgentUpdate("moved", "copywriter", model_override="local/mock-llama")
    )
    async with gateway(store, mock.url) as gw:
        moved = await gw.chat(
            model="writer",
            messages=MESSAGES,
            scope=CallScope(tenant_id="moved", queue="copywriter"),
        )
        other_role = await gw.chat(
            model="writer", messages=MESSAGES, scope=CallScope(tenant_id="moved", queue="seo")
        )
    assert (moved.provider, moved.model) == ("local", "mock-llama")
    assert (other_role.provider, other_role.model) == ("openai", "mock-gpt")


async def test_a_retry_that_would_outlive_the_task_gives_up_at_once(
    store: PostgresStore, mock: MockLLM
) -> None:
    mock.configure(script=["429"], retry_after=30)
    async with gateway(store, mock.url) as gw:
        with pytest.raises(LLMUnavailable, match="deadline") as gave_up:
            await gw.chat(
                model="writer",
                messages=MESSAGES,
                scope=CallScope(tenant_id="default", deadline=time.monotonic() + 3),
            )
    assert gave_up.value.note is not None and "retry would start in 3" in gave_up.value.note
    assert mock.stats.requests_total == 1


async def test_agents_calls_are_accounted_to_their_task_and_an_empty_budget_kills_it(
    store: PostgresStore, mock: MockLLM
) -> None:
    app = App("accounting")

    @app.agent("copywriter", timeout=30)
    async def write(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await ctx.llm.chat(model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS)
        return {"text": reply.text}

    await store.create_tenant("paying")
    await store.create_tenant("broke")
    await store.set_tenant_llm_limits("broke", monthly_token_budget=0)
    async with gateway(store, mock.url) as llm:  # closing it writes its call log
        await store.create_group("paying", "launch")
        paid = await store.enqueue(NewTask("copywriter", tenant_id="paying", group_id="launch"))
        refused = await store.enqueue(NewTask("copywriter", tenant_id="broke"))
        async with running(app, store, llm=llm):
            done = await settle(store, paid.task_id)
            dead = await settle(store, refused.task_id)
    assert done.state is TaskState.SUCCEEDED
    assert dead.state is TaskState.DEAD and dead.attempts == 1  # permanent: not retried
    assert dead.last_error is not None and "monthly tokens" in str(dead.last_error)
    [row] = await store.llm_usage("paying", this_month(), group_id="launch")
    assert (row.attempts, row.succeeded) == (1, 1)
    [by_task] = await store.llm_usage("paying", this_month(), task_id=paid.task_id)
    assert by_task.completion_tokens == row.completion_tokens > 0
    assert mock.stats.requests_total == 1


async def test_deterministic_calls_of_an_opted_in_agent_are_answered_from_the_cache(
    store: PostgresStore, mock: MockLLM
) -> None:
    app = App("cached")

    @app.agent("seo", llm_cache=True)
    async def cached_seo(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await ctx.llm.chat(
            model="writer", messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=payload["t"]
        )
        return {"text": reply.text, "cached": reply.cached}

    @app.agent("copywriter")
    async def uncached(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await ctx.llm.chat(model="writer", messages=MESSAGES, temperature=0)
        return {"cached": reply.cached}

    await store.create_tenant("acme")
    await store.create_tenant("other")
    async with gateway(store, mock.url) as llm:
        results = []
        async with running(app, store, llm=llm, concurrency=1):  # each sees the last
            for queue, tenant, payload in [
                ("seo", "acme", {"t": 0}),
                ("seo", "acme", {"t": 0}),  # the same call: the cache answers
                ("seo", "acme", {"t": 0.7}),  # not deterministic: never cached
                ("seo", "other", {"t": 0}),  # another tenant never sees acme's reply
                ("copywriter", "acme", {}),  # an agent that did not opt in
            ]:
                task = await store.enqueue(NewTask(queue, payload, tenant_id=tenant))
                results.append((await settle(store, task.task_id)).result)
    assert [r["cached"] for r in results if r is not None] == [False, True, False, False, False]
    assert results[0] is not None and results[1] is not None
    assert results[1]["text"] == results[0]["text"]
    assert mock.stats.requests_total == 4
    [acme] = await store.llm_usage("acme", this_month())
    assert (acme.attempts, acme.cached) == (3, 1) and acme.cost > 0
