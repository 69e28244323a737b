"""Signals over HTTP, against a real ``conveyor api``: a waiting task is visible as such,
``POST /v1/tasks/{id}/signals/{name}`` resumes it, and every wrong request is a problem
document (404 for another tenant's task, 409 for a refused signal, 422 for bad input).
The Python clients make the same call."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from conveyor import AsyncClient, Client, SignalRefused
from conveyor.store.params import ClaimRequest, LeaseRef, NewTask, SuspendLease
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.api_process import ApiProcess, bearer, issue_key, module_api_fixture, unique
from tests.e2e.api_process import module_store_fixture as module_store

api = module_api_fixture
store = module_store
PROBLEM = "application/problem+json"


async def waiting(store: PostgresStore, tenant: str, wait: str = "approval") -> int:
    """A task of ``tenant`` waiting for ``wait`` (as a worker's ctx.wait_for leaves it)."""
    queue = unique("approver")
    await store.declare_queues([queue])
    created = await store.for_tenant(tenant).enqueue(NewTask(queue, {"doc": 1}))
    [claimed] = await store.claim(ClaimRequest((queue,), 1, "w", 30))
    suspend = SuspendLease(LeaseRef(claimed.id, claimed.lease_token), wait, 3600)
    assert await store.suspend([suspend]) == set()
    return created.task_id


@pytest.fixture
async def tenant(store: PostgresStore) -> tuple[str, str]:
    name = unique("acme")
    return name, await issue_key(store, name)


async def test_a_waiting_task_is_shown_listed_and_resumed_by_its_signal(
    api: ApiProcess, store: PostgresStore, tenant: tuple[str, str]
) -> None:
    name, token = tenant
    task_id = await waiting(store, name)
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as http:
        shown = (await http.get(f"/v1/tasks/{task_id}")).json()
        assert shown["state"] == "waiting" and shown["waiting_for"] == "approval"
        assert shown["wait_until"] is not None
        listed = (await http.get("/v1/tasks", params={"state": "waiting"})).json()
        assert [t["id"] for t in listed["tasks"]] == [task_id]

        sent = await http.post(f"/v1/tasks/{task_id}/signals/approval", json={"ok": True})
        assert sent.status_code == 201, sent.text
        assert sent.json() == {
            "task_id": task_id,
            "signal": "approval",
            "state": "scheduled",
            "resumed": True,
            "duplicate": False,
        }
        again = await http.post(f"/v1/tasks/{task_id}/signals/approval", json={"ok": True})
        assert again.status_code == 200 and again.json()["duplicate"] is True

        other = await http.post(f"/v1/tasks/{task_id}/signals/approval", json={"ok": False})
        assert other.status_code == 409
        assert other.headers["content-type"] == PROBLEM
        body = other.json()
        assert body["type"] == "urn:conveyor:problem:signal-refused"
        assert body["reason"] == "conflict" and "first one holds" in body["detail"]
        shown = (await http.get(f"/v1/tasks/{task_id}")).json()
        assert shown["state"] in ("scheduled", "queued") and shown["waiting_for"] is None
    held = await store.get_signal(name, task_id, "approval")
    assert held is not None and held.payload == {"ok": True}


async def test_a_signal_before_the_wait_and_an_empty_body(
    api: ApiProcess, store: PostgresStore, tenant: tuple[str, str]
) -> None:
    name, token = tenant
    queue = unique("later")
    await store.declare_queues([queue])
    created = await store.for_tenant(name).enqueue(NewTask(queue))
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as http:
        sent = await http.post(f"/v1/tasks/{created.task_id}/signals/go")
        assert sent.status_code == 201, sent.text
        assert sent.json()["state"] == "queued" and sent.json()["resumed"] is False
    held = await store.get_signal(name, created.task_id, "go")
    assert held is not None and held.payload is None and not held.timed_out


async def test_refused_and_malformed_signals_are_problems(
    api: ApiProcess, store: PostgresStore, tenant: tuple[str, str]
) -> None:
    name, token = tenant
    task_id = await waiting(store, name)
    cancelled = await waiting(store, name)
    await store.for_tenant(name).cancel(cancelled)
    stranger = await issue_key(store, unique("globex"))
    base = f"/v1/tasks/{task_id}/signals"
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as http:
        cases: list[tuple[str, dict[str, Any], int, str]] = [
            (f"{base}/bad%20name", {"json": 1}, 422, "validation"),
            (f"{base}/conveyor:webhook", {"json": 1}, 422, "validation"),
            (f"{base}/{'x' * 129}", {"json": 1}, 422, "validation"),
            (f"{base}/approval", {"content": b"{not json"}, 422, "validation"),
            (f"{base}/approval", {"content": b'{"a": NaN}'}, 422, "validation"),
            (f"{base}/approval", {"json": {"a": "nul\u0000"}}, 422, "validation"),
            ("/v1/tasks/987654321/signals/approval", {"json": 1}, 404, "not-found"),
            (f"/v1/tasks/{cancelled}/signals/approval", {"json": 1}, 409, "signal-refused"),
        ]
        for path, body, status, kind in cases:
            answer = await http.post(path, **body)
            assert answer.status_code == status, (path, answer.text)
            assert answer.headers["content-type"] == PROBLEM
            assert answer.json()["type"] == f"urn:conveyor:problem:{kind}", answer.text
        refused = (await http.post(f"/v1/tasks/{cancelled}/signals/approval", json=1)).json()
        assert refused["reason"] == "finished" and "cancelled" in refused["detail"]
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(stranger)) as http:
        theirs = await http.post(f"{base}/approval", json=1)
        missing = await http.post("/v1/tasks/987654321/signals/approval", json=1)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["detail"] == f"task {task_id} not found"
    assert (await store.get_task(task_id)).state is TaskState.WAITING
    assert await store.get_signal(name, task_id, "approval") is None


async def test_cancelling_a_waiting_task_over_http(
    api: ApiProcess, store: PostgresStore, tenant: tuple[str, str]
) -> None:
    name, token = tenant
    task_id = await waiting(store, name)
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as http:
        answer = await http.post(f"/v1/tasks/{task_id}/cancel")
        assert answer.status_code == 200 and answer.json()["state"] == "cancelled"


async def test_the_clients_signal(
    api: ApiProcess, store: PostgresStore, tenant: tuple[str, str]
) -> None:
    name, token = tenant
    first, second = await waiting(store, name), await waiting(store, name)

    def use_sync() -> None:
        with Client(api.url, token) as client:
            sent = client.signal(first, "approval", {"by": "ana"})
            assert sent.resumed and sent.state == "scheduled"
            assert client.signal(first, "approval", {"by": "ana"}).duplicate
            with pytest.raises(SignalRefused) as refused:
                client.signal(first, "approval", {"by": "bob"})
            assert refused.value.reason == "conflict" and refused.value.task_id == first

    await asyncio.to_thread(use_sync)
    async with AsyncClient(api.url, token) as client:
        sent = await client.signal(second, "approval", [1, 2])
        assert sent.resumed and not sent.duplicate
    held = await store.get_signal(name, second, "approval")
    assert held is not None and held.payload == [1, 2]
