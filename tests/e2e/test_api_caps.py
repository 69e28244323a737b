"""Runaway guards through the HTTP API: caps set at submit (the SDK), on a group and on a
plan, enforced by a worker calling the mock provider over real HTTP, and each task's and
group's caps and spend read back from the API process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from conveyor import App, AsyncClient, TaskContext
from conveyor.client.cap_models import CapLimits
from conveyor.gateway import Gateway, load_gateway_config
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import (
    ApiProcess,
    bearer,
    issue_key,
    module_api_fixture,  # noqa: F401  (the module's `api` fixture)
    module_store_fixture,  # noqa: F401  (its `store`)
    unique,
)
from tests.integration.worker_harness import running, settle

MESSAGES = [{"role": "user", "content": "look it up once more"}]


@pytest.fixture
async def mock() -> AsyncIterator[MockLLM]:
    async with MockLLM(MockConfig()) as server:
        yield server


def gateway(store: PostgresStore, url: str) -> Gateway:
    config = {
        "providers": {"openai": {"kind": "openai", "base_url": url, "api_key": "k"}},
        "aliases": {"writer": ["openai/mock-gpt"]},
    }
    return Gateway.with_store(load_gateway_config(config), store, environ={})


def looping(queue: str) -> App:
    app = App("loops")

    @app.agent(queue, timeout=60)
    async def loop(ctx: TaskContext, payload: dict[str, Any]) -> None:
        while True:
            await ctx.llm.chat(model="writer", messages=MESSAGES, max_tokens=20)

    return app


async def test_a_submit_caps_a_looping_agent_and_the_task_shows_its_cap_and_spend(
    api: ApiProcess, store: PostgresStore, mock: MockLLM
) -> None:
    queue, tenant = unique("research"), unique("acme")
    await store.declare_queues([queue])
    token = await issue_key(store, tenant)
    async with AsyncClient(api.url, token) as client:
        created = await client.submit(queue, {"topic": "x"}, caps=CapLimits(calls=4))
        before = await client.get(created.id)
        assert before.caps is not None and before.caps.calls is not None
        assert (before.caps.calls.limit, before.caps.calls.source) == (4, "submit")
        assert before.caps.used_calls == 0
        async with gateway(store, mock.url) as llm, running(looping(queue), store, llm=llm):
            await settle(store, created.id)
        after = await client.get(created.id)
    assert after.state == "dead"
    assert after.last_error is not None and after.last_error["type"] == "LLMCapExceeded"
    assert "the run cap of 4 LLM calls (set by the submit)" in after.last_error["message"]
    assert after.caps is not None
    assert (after.caps.used_calls, after.caps.in_flight_calls) == (4, 0)
    assert after.usage is not None and after.usage.calls == 4 == mock.stats.requests_total
    assert after.caps.used_tokens == after.usage.prompt_tokens + after.usage.completion_tokens


async def test_a_campaigns_cap_set_at_its_creation_stops_all_its_tasks(
    api: ApiProcess, store: PostgresStore, mock: MockLLM
) -> None:
    queue, tenant = unique("research"), unique("acme")
    await store.declare_queues([queue])
    token = await issue_key(store, tenant)
    async with AsyncClient(api.url, token) as client:
        group = await client.create_group("launch", caps=CapLimits(calls=9))
        assert group.caps is not None and group.caps.calls is not None
        assert group.caps.calls.source == "group"
        ids = [(await client.submit(queue, group_id="launch")).id for _ in range(3)]
        app = looping(queue)
        async with gateway(store, mock.url) as llm, running(app, store, llm=llm, concurrency=3):
            for task_id in ids:
                await settle(store, task_id)
        seen = await client.get_group("launch")
        tasks = [await client.get(task_id) for task_id in ids]
    assert seen.counts == {"dead": 3}
    assert seen.caps is not None and (seen.caps.used_calls, seen.caps.in_flight_calls) == (9, 0)
    assert seen.usage.calls == 9 == mock.stats.requests_total
    assert all("the group cap of 9 LLM calls" in str(t.last_error) for t in tasks)
    assert all(t.caps is None for t in tasks)  # no cap of their own: no run counter


async def test_caps_that_make_no_sense_are_refused_naming_the_field(
    api: ApiProcess, store: PostgresStore
) -> None:
    queue, tenant = unique("research"), unique("acme")
    await store.declare_queues([queue])
    token = await issue_key(store, tenant)
    bad = [
        ({"calls": -1}, "caps.calls"),
        ({"tokens": 1.5}, "caps.tokens"),
        ({"cost": "a lot"}, "caps.cost"),
        ({"dollars": 5}, "caps.dollars"),
    ]
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        for caps, field in bad:
            refused = await client.post("/v1/tasks", json={"queue": queue, "caps": caps})
            assert refused.status_code == 422, refused.text
            assert [e["field"] for e in refused.json()["errors"]] == [field]
            group = await client.post("/v1/groups", json={"id": "g", "caps": caps})
            assert group.status_code == 422
            assert [e["field"] for e in group.json()["errors"]] == [field]


async def test_an_admin_sets_and_removes_a_plans_caps(
    api: ApiProcess, store: PostgresStore
) -> None:
    admin = await issue_key(store, None)
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(admin)) as client:
        body = {"run_caps": {"calls": 50, "cost": "2.5"}, "group_caps": {"tokens": 1_000_000}}
        set_ = await client.patch("/v1/admin/plans/agency", json=body)
        assert set_.status_code == 200, set_.text
        plan = set_.json()
        assert plan["run_caps"] == {"calls": 50, "tokens": None, "cost": "2.5000"}
        assert plan["group_caps"]["tokens"] == 1_000_000
        kept = (await client.patch("/v1/admin/plans/agency", json={"weight": 4})).json()
        assert kept["run_caps"]["calls"] == 50  # fields left out keep their value
        cleared = (await client.patch("/v1/admin/plans/agency", json={"run_caps": {}})).json()
        assert cleared["run_caps"] == {"calls": None, "tokens": None, "cost": None}
        assert cleared["group_caps"]["tokens"] == 1_000_000
        await client.patch("/v1/admin/plans/agency", json={"group_caps": {}})
    assert Decimal(plan["run_caps"]["cost"]) == Decimal("2.5")
