"""The tenant's groups (campaigns), its month of usage, and a task's LLM usage, over a real
API process: one server for the module, each test with tenants and queues of its own."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from conveyor.core.partitions import Month
from conveyor.store.params import ClaimRequest, Finish, LeaseRef
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.api_process import (
    ApiProcess,
    bearer,
    issue_key,
    module_api_fixture,  # noqa: F401  (the module's `api` fixture)
    module_store_fixture,  # noqa: F401  (its `store`)
    unique,
)


def llm_call(tenant: str, task_id: int | None, group: str | None, **kw: Any) -> dict[str, Any]:
    return {
        "created_at": datetime.now(UTC).isoformat(), "tenant_id": tenant, "task_id": task_id,
        "group_id": group, "requested": "writer", "provider": "openai", "model": "mock-gpt",
        "attempt": 1, "outcome": "ok", "stream": False, "prompt_tokens": 1000,
        "completion_tokens": 500, "usage_estimated": False, "latency_ms": 10.0,
        "ttft_ms": None, "status": 200, "error": None, **kw,
    }  # fmt: skip


async def test_a_group_with_its_follow_up_counts_tasks_and_cost(
    api: ApiProcess, store: PostgresStore
) -> None:
    writer, summary = unique("writer"), unique("summary")
    await store.declare_queues([writer, summary])
    tenant = unique("acme")
    token = await issue_key(store, tenant)
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        body = {"id": "spring", "on_complete": {"queue": summary, "payload": {"k": 1}}}
        made = await client.post("/v1/groups", json=body)
        assert made.status_code == 201, made.text
        assert made.json()["total"] == 0 and made.json()["usage"]["calls"] == 0
        again = await client.post("/v1/groups", json=body)
        assert again.status_code == 200
        tasks = [{"queue": writer, "group_id": "spring", "payload": {"n": n}} for n in range(3)]
        ids = [
            t["id"]
            for t in (await client.post("/v1/tasks/batch", json={"tasks": tasks})).json()["tasks"]
        ]
        await client.post(f"/v1/tasks/{ids[0]}/cancel")
        await store.record_llm_calls(
            [llm_call(tenant, ids[1], "spring"), llm_call(tenant, ids[2], "spring")]
        )
        group = (await client.get("/v1/groups/spring")).json()
        assert group["counts"] == {"queued": 2, "cancelled": 1} and group["total"] == 3
        assert group["completed_at"] is None and group["follow_up_id"] is None
        usage = group["usage"]
        assert (usage["calls"], usage["prompt_tokens"], usage["completion_tokens"]) == (
            2, 2000, 1000,
        )  # fmt: skip
        # mock-gpt costs $0.50 in and $1.50 out per million tokens (migration 0007)
        assert Decimal(usage["cost"]) == Decimal("0.0025")
        assert usage["by_model"][0]["model"] == "mock-gpt"

        page = (await client.get("/v1/groups/spring/tasks", params={"limit": 2})).json()
        rest = await client.get(
            "/v1/groups/spring/tasks", params={"limit": 2, "cursor": page["next_cursor"]}
        )
        assert [t["id"] for t in page["tasks"] + rest.json()["tasks"]] == sorted(ids, reverse=True)
        queued = await client.get("/v1/groups/spring/tasks", params={"state": "queued"})
        assert len(queued.json()["tasks"]) == 2

        # finishing the rest completes the group: its follow-up is enqueued once
        claimed = await store.claim(ClaimRequest((writer,), 10, "w", 60))
        await store.finish(
            [Finish(LeaseRef(c.id, c.lease_token), TaskState.SUCCEEDED) for c in claimed]
        )
        done = (await client.get("/v1/groups/spring")).json()
        assert done["completed_at"] is not None and done["follow_up_id"] is not None
        follow_up = (await client.get(f"/v1/tasks/{done['follow_up_id']}")).json()
        assert follow_up["queue"] == summary
        assert follow_up["payload"] == {"k": 1, "_group_id": "spring"}

        missing = await client.get("/v1/groups/nothing")
        empty = await client.get("/v1/groups/nothing/tasks")
        assert missing.status_code == empty.status_code == 404
        bad = await client.post(
            "/v1/groups", json={"id": "x", "on_complete": {"queue": "nobody-serves"}}
        )
        assert bad.status_code == 422 and bad.json()["type"].endswith("undeclared-queue")


async def test_a_task_shows_its_llm_usage_and_lists_stay_lean(
    api: ApiProcess, store: PostgresStore
) -> None:
    writer = unique("writer")
    await store.declare_queues([writer])
    tenant = unique("acme")
    token = await issue_key(store, tenant)
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        task_id = (await client.post("/v1/tasks", json={"queue": writer})).json()["id"]
        fresh = (await client.get(f"/v1/tasks/{task_id}")).json()
        assert fresh["usage"] == {
            "calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": "0",
            "unpriced": False, "by_model": [],
        }  # fmt: skip
        await store.record_llm_calls(
            [
                llm_call(tenant, task_id, None),
                llm_call(tenant, task_id, None, outcome="http_error", status=503),
                llm_call(tenant, task_id, None, model="house-unpriced", prompt_tokens=7),
            ]
        )
        usage = (await client.get(f"/v1/tasks/{task_id}")).json()["usage"]
        assert usage["calls"] == 3 and usage["prompt_tokens"] == 2007
        assert usage["unpriced"] is True
        lines = {line["model"]: line for line in usage["by_model"]}
        assert (lines["mock-gpt"]["succeeded"], lines["mock-gpt"]["failed"]) == (1, 1)
        listed = (await client.get("/v1/tasks")).json()["tasks"]
        assert [t["usage"] for t in listed] == [None]


async def test_usage_of_a_month_is_the_tenant_s_own(api: ApiProcess, store: PostgresStore) -> None:
    writer, seo = unique("writer"), unique("seo")
    await store.declare_queues([writer, seo])
    acme, globex = unique("acme"), unique("globex")
    acme_key, globex_key = await issue_key(store, acme), await issue_key(store, globex)
    async with httpx.AsyncClient(base_url=api.url) as client:
        batch = [{"queue": writer}, {"queue": writer}, {"queue": seo}]
        made = await client.post("/v1/tasks/batch", json={"tasks": batch}, headers=bearer(acme_key))
        first = made.json()["tasks"][0]["id"]
        await client.post(f"/v1/tasks/{first}/cancel", headers=bearer(acme_key))
        await client.post("/v1/tasks", json={"queue": seo}, headers=bearer(globex_key))
        await store.record_llm_calls([llm_call(acme, first, None), llm_call(globex, None, None)])
        month = Month.of(datetime.now(UTC))
        text = f"{month.year:04d}-{month.month:02d}"
        report = (
            await client.get("/v1/usage", params={"month": text}, headers=bearer(acme_key))
        ).json()
        assert report["tenant_id"] == acme and report["month"] == text
        by_queue = {q["queue"]: q for q in report["tasks"]}
        assert by_queue == {
            writer: {"queue": writer, "counts": {"queued": 1, "cancelled": 1}, "total": 2},
            seo: {"queue": seo, "counts": {"queued": 1}, "total": 1},
        }
        assert report["tasks_total"] == 3
        assert report["llm"]["calls"] == 1 and report["llm"]["prompt_tokens"] == 1000
        default = (await client.get("/v1/usage", headers=bearer(acme_key))).json()
        assert default == report
        nxt = month.plus(1)
        later = await client.get(
            "/v1/usage",
            params={"month": f"{nxt.year:04d}-{nxt.month:02d}"},
            headers=bearer(acme_key),
        )
        assert later.json()["tasks_total"] == 0 and later.json()["llm"]["calls"] == 0
        bad = await client.get("/v1/usage", params={"month": "2026-13"}, headers=bearer(acme_key))
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"].endswith("month")
