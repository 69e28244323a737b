"""The admin routes over a real API process: tenants, keys, plans and the plan matrix,
queues, the dead-letter queue and a tenant's usage. One server for the module; each test
with tenants and queues of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import (
    ADMIN_KEY,
    ApiProcess,
    bearer,
    issue_key,
    make_dead,
    module_api_fixture,  # noqa: F401  (the module's `api` fixture)
    module_store_fixture,  # noqa: F401  (its `store`)
    unique,
)


@pytest.fixture
async def admin(api: ApiProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(ADMIN_KEY)) as client:
        yield client


async def test_tenants_are_created_changed_listed_and_read(admin: httpx.AsyncClient) -> None:
    tenant = unique("acme")
    made = await admin.put(f"/v1/admin/tenants/{tenant}", json={"name": "Acme"})
    assert made.status_code == 200, made.text
    assert made.json()["name"] == "Acme" and made.json()["weight"] == 1
    changed = await admin.put(f"/v1/admin/tenants/{tenant}", json={"plan": "pro", "weight": 2})
    assert (changed.json()["name"], changed.json()["plan_id"]) == ("Acme", "pro")
    assert changed.json()["weight"] == 2
    assert (await admin.get(f"/v1/admin/tenants/{tenant}")).json() == changed.json()
    listed = (await admin.get("/v1/admin/tenants")).json()["tenants"]
    assert changed.json() in listed
    unknown_plan = await admin.put(f"/v1/admin/tenants/{tenant}", json={"plan": "platinum"})
    assert unknown_plan.status_code == 422 and "platinum" in unknown_plan.json()["detail"]
    assert (await admin.get(f"/v1/admin/tenants/{unique('nobody')}")).status_code == 404
    bad = await admin.put("/v1/admin/tenants/bad%20id", json={})
    assert bad.status_code == 422
    typo = await admin.put(f"/v1/admin/tenants/{tenant}", json={"wieght": 2})
    assert typo.status_code == 422 and typo.json()["errors"][0]["field"] == "wieght"


async def test_keys_are_shown_once_listed_and_revoked(
    api: ApiProcess, admin: httpx.AsyncClient, store: PostgresStore
) -> None:
    writer, tenant = unique("writer"), unique("acme")
    await store.declare_queues([writer])
    await store.create_tenant(tenant)
    made = await admin.post("/v1/admin/keys", json={"tenant_id": tenant, "name": "web"})
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["token"].startswith(f"cvk_{key['id']}_") and key["admin"] is False
    submit = await admin.post("/v1/tasks", json={"queue": writer}, headers=bearer(key["token"]))
    assert submit.status_code == 201
    listed = (await admin.get("/v1/admin/keys", params={"tenant_id": tenant})).json()["keys"]
    assert [k["id"] for k in listed] == [key["id"]] and "token" not in listed[0]
    assert key["token"] not in (await admin.get("/v1/admin/keys")).text
    revoked = await admin.post(f"/v1/admin/keys/{key['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = await admin.post("/v1/tasks", json={"queue": writer}, headers=bearer(key["token"]))
    assert refused.status_code == 401
    an_admin = (await admin.post("/v1/admin/keys", json={"admin": True})).json()
    assert an_admin["admin"] and an_admin["tenant_id"] is None
    works = await admin.get("/v1/admin/tenants", headers=bearer(an_admin["token"]))
    assert works.status_code == 200
    both = await admin.post("/v1/admin/keys", json={"tenant_id": tenant, "admin": True})
    unknown = await admin.post("/v1/admin/keys", json={"tenant_id": unique("nobody")})
    missing = await admin.post("/v1/admin/keys/000000000000/revoke")
    assert both.status_code == 422 and unknown.status_code == 422
    assert missing.status_code == 404


async def test_plans_and_the_plan_matrix(admin: httpx.AsyncClient) -> None:
    plans = {p["id"]: p for p in (await admin.get("/v1/admin/plans")).json()["plans"]}
    assert {"free", "pro"} <= set(plans)
    role = unique("writer")
    changed = await admin.patch(
        "/v1/admin/plans/agency",
        json={"monthly_task_limit": 123456, "start_rate": {"limit": 5, "interval_seconds": 60}},
    )
    assert changed.status_code == 200, changed.text
    plan = changed.json()
    assert plan["monthly_task_limit"] == 123456
    assert plan["start_rate"] == {"limit": 5, "interval_seconds": 60}
    assert plan["weight"] == plans["agency"]["weight"]  # left out: kept
    assert (await admin.patch("/v1/admin/plans/platinum", json={})).status_code == 404
    negative = await admin.patch("/v1/admin/plans/agency", json={"weight": -1})
    assert negative.status_code == 422

    tenant = unique("acme")
    await admin.put(f"/v1/admin/tenants/{tenant}", json={"plan": "free"})
    override = await admin.put(
        f"/v1/admin/tenants/{tenant}/agents/{role}",
        json={"max_concurrent": 3, "model_override": "openai/gpt-4o-mini"},
    )
    assert override.status_code == 200, override.text
    assert override.json()["enabled"] is True and override.json()["max_concurrent"] == 3
    disabled = await admin.put(f"/v1/admin/tenants/{tenant}/agents/{role}", json={"enabled": False})
    assert disabled.json()["enabled"] is False and disabled.json()["max_concurrent"] == 3
    matrix = (await admin.get(f"/v1/admin/tenants/{tenant}/agents")).json()
    assert matrix["plan_id"] == "free" and [a["queue"] for a in matrix["agents"]] == [role]
    nobody = unique("nobody")
    assert (await admin.get(f"/v1/admin/tenants/{nobody}/agents")).status_code == 404
    put_nobody = await admin.put(f"/v1/admin/tenants/{nobody}/agents/{role}", json={})
    assert put_nobody.status_code == 404


async def test_queues_are_listed_paused_resumed_and_limited(
    api: ApiProcess, admin: httpx.AsyncClient, store: PostgresStore
) -> None:
    writer, tenant = unique("writer"), unique("acme")
    await store.declare_queues([writer])
    token = await issue_key(store, tenant)
    await admin.post(
        "/v1/tasks/batch", json={"tasks": [{"queue": writer}] * 4}, headers=bearer(token)
    )
    queues = {q["name"]: q for q in (await admin.get("/v1/admin/queues")).json()["queues"]}
    mine = queues[writer]
    assert mine["queued"] == 4 and mine["paused"] is False and "declared" in mine["declared_by"]
    paused = await admin.post(f"/v1/admin/queues/{writer}/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    limited = await admin.patch(f"/v1/admin/queues/{writer}", json={"max_running": 2})
    assert limited.json()["max_running"] == 2 and limited.json()["paused"] is True
    resumed = await admin.post(f"/v1/admin/queues/{writer}/resume")
    assert resumed.json()["paused"] is False and resumed.json()["max_running"] == 2
    uncapped = await admin.patch(f"/v1/admin/queues/{writer}", json={"max_running": 0})
    assert uncapped.json()["max_running"] is None
    shedding = await admin.patch(f"/v1/admin/queues/{writer}", json={"depth_threshold": 50})
    assert shedding.json()["depth_threshold"] == 50 and shedding.json()["max_running"] is None
    assert {q.name: q.depth_threshold for q in await store.list_queue_settings()}[writer] == 50
    calm = await admin.patch(f"/v1/admin/queues/{writer}", json={"depth_threshold": 0})
    assert calm.json()["depth_threshold"] is None
    assert (await admin.post("/v1/admin/queues/bad%20name/pause")).status_code == 422


async def test_the_dead_letter_queue_lists_inspects_and_replays(
    admin: httpx.AsyncClient, store: PostgresStore
) -> None:
    writer, tenant, other = unique("writer"), unique("acme"), unique("globex")
    await store.create_tenant(tenant)
    await store.create_tenant(other)
    ids = await make_dead(store, tenant, writer, 4)
    others = await make_dead(store, other, writer, 1)
    listed = (await admin.get("/v1/admin/dlq", params={"tenant_id": tenant})).json()["tasks"]
    assert sorted(d["id"] for d in listed) == sorted(ids)
    by_queue = await admin.get("/v1/admin/dlq", params={"queue": writer, "limit": 2})
    assert len(by_queue.json()["tasks"]) == 2
    one = (await admin.get(f"/v1/admin/dlq/{ids[0]}")).json()
    assert one["last_error"] == {"type": "Boom", "message": f"task {ids[0]}"}
    assert one["tenant_id"] == tenant and one["queue"] == writer

    assert (await admin.post(f"/v1/admin/dlq/{ids[0]}/replay")).json() == {"ids": [ids[0]]}
    assert (await admin.get(f"/v1/admin/dlq/{ids[0]}")).status_code == 404  # queued again
    assert (await admin.post(f"/v1/admin/dlq/{ids[0]}/replay")).status_code == 404
    many = await admin.post("/v1/admin/dlq/replay", json={"ids": [ids[1], ids[2], 999999999]})
    assert sorted(many.json()["ids"]) == [ids[1], ids[2]]
    by_filter = await admin.post("/v1/admin/dlq/replay", json={"tenant_id": tenant})
    assert by_filter.json()["ids"] == [ids[3]]
    assert (await store.get_task(ids[3])).state.value == "queued"
    assert (await store.get_task(others[0])).state.value == "dead"  # not matched
    nothing = await admin.post("/v1/admin/dlq/replay", json={})
    assert nothing.status_code == 422


async def test_a_tenant_s_month_of_usage(admin: httpx.AsyncClient, store: PostgresStore) -> None:
    writer, tenant = unique("writer"), unique("acme")
    await store.declare_queues([writer])
    token = await issue_key(store, tenant)
    await admin.post("/v1/tasks", json={"queue": writer}, headers=bearer(token))
    report = (await admin.get(f"/v1/admin/tenants/{tenant}/usage")).json()
    assert report["tenant_id"] == tenant and report["tasks_total"] == 1
    mine = (await admin.get("/v1/usage", headers=bearer(token))).json()
    assert mine == report
    assert (await admin.get(f"/v1/admin/tenants/{unique('nobody')}/usage")).status_code == 404
