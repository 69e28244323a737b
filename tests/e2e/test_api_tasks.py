"""The HTTP API as a real process: keys, submitting and reading tasks, tenants kept apart,
and errors as problem documents."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.core.api_keys import new_key
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess
from tests.e2e.conftest import RunCli

PROBLEM = "application/problem+json"


@pytest.fixture
def api(database_dsn: str, tmp_path: Path) -> Iterator[ApiProcess]:
    server = ApiProcess(database_dsn, tmp_path / "api.log", CONVEYOR_ADMIN_KEY="a" * 40)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def key_for(store: PostgresStore, tenant: str | None) -> str:
    import secrets

    if tenant is not None:
        await store.create_tenant(tenant, None, None)
    issued = new_key(secrets.token_bytes)
    await store.create_api_key(issued.key_id, tenant, issued.secret_hash, "test")
    return issued.token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_submit_read_and_cancel_a_task(api: ApiProcess, store: PostgresStore) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
        made = await client.post(
            "/v1/tasks",
            json={"queue": "writer", "payload": {"brief": "spring"}, "priority": 3},
            headers={"Idempotency-Key": "order-1", "traceparent": traceparent},
        )
        assert made.status_code == 201, made.text
        task_id = made.json()["id"]
        again = await client.post(
            "/v1/tasks",
            json={"queue": "writer", "priority": 3, "payload": {"brief": "spring"}},
            headers={"Idempotency-Key": "order-1"},
        )
        assert again.status_code == 200
        assert again.json() == {"id": task_id, "created": False, "replaced": False}
        got = (await client.get(f"/v1/tasks/{task_id}")).json()
        assert got["state"] == "queued" and got["payload"] == {"brief": "spring"}
        assert got["priority"] == 3 and got["idempotency_key"] == "order-1"
        record = await store.get_task(task_id)
        assert record.tenant_id == "acme"
        assert record.trace_context == {"traceparent": traceparent}
        cancelled = await client.post(f"/v1/tasks/{task_id}/cancel")
        assert cancelled.json()["state"] == "cancelled"


async def test_a_batch_is_stored_whole_or_not_at_all(api: ApiProcess, store: PostgresStore) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")
    tasks = [{"queue": "writer", "payload": {"n": n}} for n in range(500)]
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        made = await client.post("/v1/tasks/batch", json={"tasks": tasks})
        assert made.status_code == 201 and len(made.json()["tasks"]) == 500
        tasks[250]["priority"] = 99
        refused = await client.post("/v1/tasks/batch", json={"tasks": tasks})
    assert refused.status_code == 422
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["errors"][0]["field"] == "tasks.250.priority"
    assert sum(s.queued for s in await store.queue_status()) == 500


async def test_a_tenant_sees_only_its_own_tasks(api: ApiProcess, store: PostgresStore) -> None:
    await store.declare_queues(["writer"])
    acme, globex = await key_for(store, "acme"), await key_for(store, "globex")
    async with httpx.AsyncClient(base_url=api.url) as client:
        made = await client.post("/v1/tasks", json={"queue": "writer"}, headers=bearer(acme))
        task_id = made.json()["id"]
        for method, path in (("GET", "/v1/tasks/{}"), ("POST", "/v1/tasks/{}/cancel")):
            other = await client.request(method, path.format(task_id), headers=bearer(globex))
            missing = await client.request(method, path.format(999999), headers=bearer(globex))
            assert other.status_code == missing.status_code == 404
            assert other.json()["detail"] == f"task {task_id} not found"
            assert missing.json()["detail"] == "task 999999 not found"
        assert (await store.get_task(task_id)).state.value == "queued"  # not cancelled


async def test_keys_are_checked_and_revocation_is_honoured(
    database_dsn: str, store: PostgresStore, tmp_path: Path, run_cli: RunCli
) -> None:
    await store.declare_queues(["writer"])
    await store.create_tenant("acme", None, None)
    created = run_cli("keys", "create", "--tenant", "acme", "--name", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    key_id = re.match(r"cvk_([0-9a-f]{12})_", token)
    assert key_id is not None
    server = ApiProcess(database_dsn, tmp_path / "api.log", CONVEYOR_API_KEY_CACHE_SECONDS="0")
    try:
        server.wait_ready()
        async with httpx.AsyncClient(base_url=server.url) as client:
            for headers in (
                {},
                bearer("nonsense"),
                bearer(token[:-1] + "x"),
                {"Authorization": token},
            ):
                refused = await client.post("/v1/tasks", json={"queue": "writer"}, headers=headers)
                assert refused.status_code == 401, refused.text
                assert refused.headers["content-type"] == PROBLEM
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert token not in refused.text
            ok = await client.post("/v1/tasks", json={"queue": "writer"}, headers=bearer(token))
            assert ok.status_code == 201
            assert run_cli("keys", "revoke", key_id[1]).returncode == 0
            gone = await client.post("/v1/tasks", json={"queue": "writer"}, headers=bearer(token))
            assert gone.status_code == 401 and "revoked" in gone.json()["detail"]
            listed = run_cli("keys", "list")
            assert key_id[1] in listed.stdout and token not in listed.stdout
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"queue": "writer", "payload": {"x": 1}, "prority": 3}, "prority"),
        ({"queue": "writer", "priority": "high"}, "priority"),
        ({"queue": "writer", "priority": 0}, "priority"),
        ({"queue": "bad queue!"}, "queue"),
        ({"queue": "writer", "payload": {"t": "a\u0000b"}}, "payload"),
        ({"queue": "writer", "payload": [1, 2]}, "payload"),
        ({"payload": {}}, "queue"),
        ({"queue": "writer", "group_id": "a\u0000b"}, "group_id"),  # found by schemathesis
        ({"queue": "writer", "idempotency_key": "\u0000"}, "idempotency_key"),
    ],
)
async def test_bad_input_is_a_problem_naming_the_field(
    api: ApiProcess, store: PostgresStore, body: dict[str, object], field: str
) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        answer = await client.post("/v1/tasks", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert problem["status"] == 422 and problem["instance"] == "/v1/tasks"
    assert problem["errors"][0]["field"].startswith(field), problem


async def test_malformed_oversized_and_undeclared_are_4xx(
    api: ApiProcess, store: PostgresStore
) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        broken = await client.post(
            "/v1/tasks",
            content=b'{"queue": "writer",',
            headers={"content-type": "application/json"},
        )
        not_utf8 = await client.post(
            "/v1/tasks", content=b"\xff\xfe\x08", headers={"content-type": "application/json"}
        )
        nan = await client.post(
            "/v1/tasks",
            content=b'{"queue": "writer", "payload": {"x": NaN}}',
            headers={"content-type": "application/json"},
        )
        huge = await client.post(
            "/v1/tasks", json={"queue": "writer", "payload": {"x": "y" * 2_000_000}}
        )
        deep: object = 1
        for _ in range(100):
            deep = [deep]
        nested = await client.post("/v1/tasks", json={"queue": "writer", "payload": {"d": deep}})
        undeclared = await client.post("/v1/tasks", json={"queue": "nobody_serves_this"})
        bad_id = await client.get("/v1/tasks/99999999999999999999")
    assert broken.status_code == 422 and broken.headers["content-type"] == PROBLEM
    assert not_utf8.status_code == 422 and not_utf8.json()["errors"][0]["field"] == "body"
    assert nan.status_code == 422
    assert huge.status_code == 413 and huge.headers["content-type"] == PROBLEM
    assert nested.status_code == 422
    assert undeclared.status_code == 422 and "nobody_serves_this" in undeclared.json()["detail"]
    assert bad_id.status_code == 422
    assert sum(s.queued for s in await store.queue_status()) == 0


async def test_health_and_admin_keys_on_tenant_routes(
    api: ApiProcess, store: PostgresStore
) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok", "detail": None}
        assert (await client.get("/readyz")).status_code == 200
        admin = await client.get("/v1/tasks/1", headers=bearer("a" * 40))
        assert admin.status_code == 403
        spec = (await client.get("/openapi.json")).json()
        assert "/v1/tasks" in spec["paths"] and "/v1/tasks/batch" in spec["paths"]


async def test_listing_pages_through_the_tenant_s_own_tasks(
    api: ApiProcess, store: PostgresStore
) -> None:
    await store.declare_queues(["writer", "seo"])
    acme, globex = await key_for(store, "acme"), await key_for(store, "globex")
    async with httpx.AsyncClient(base_url=api.url) as client:
        mine = [{"queue": "writer" if n % 2 else "seo", "payload": {"n": n}} for n in range(25)]
        made = await client.post("/v1/tasks/batch", json={"tasks": mine}, headers=bearer(acme))
        ids = [t["id"] for t in made.json()["tasks"]]
        await client.post("/v1/tasks", json={"queue": "writer"}, headers=bearer(globex))
        seen: list[int] = []
        cursor = None
        while True:
            params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/tasks", params=params, headers=bearer(acme))).json()
            seen += [t["id"] for t in page["tasks"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        writers = await client.get(
            "/v1/tasks", params={"queue": "writer", "state": "queued"}, headers=bearer(acme)
        )
        bad = await client.get("/v1/tasks", params={"state": "sleeping"}, headers=bearer(acme))
        nul = await client.get("/v1/tasks", params={"group_id": "a\x00"}, headers=bearer(acme))
    assert seen == sorted(ids, reverse=True)  # every one of its own, newest first, once
    newest = await store.get_task(max(ids))
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(acme)) as client:
        since = await client.get(
            "/v1/tasks", params={"created_after": newest.created_at.isoformat()}
        )
        before = await client.get("/v1/tasks", params={"created_before": "2000-01-01T00:00:00Z"})
        naive = await client.get("/v1/tasks", params={"created_after": "2026-01-01T00:00:00"})
    assert max(ids) in [t["id"] for t in since.json()["tasks"]]
    assert before.json()["tasks"] == []
    assert naive.status_code == 422  # an instant needs its time zone
    assert {t["payload"]["n"] % 2 for t in writers.json()["tasks"]} == {1}
    assert len(writers.json()["tasks"]) == 12
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].endswith("state")
    assert nul.status_code == 422  # PostgreSQL text cannot hold NUL: refused, not a 500


async def test_plan_refusals_and_monthly_limits_answer_403_and_429_storing_nothing(
    api: ApiProcess, store: PostgresStore
) -> None:
    await store.declare_queues(["copywriter", "analyst", "seo"])
    await store.create_tenant("small", plan="free")  # copywriter and seo; 1,000 tasks a month
    issued = new_key(secrets.token_bytes)
    await store.create_api_key(issued.key_id, "small", issued.secret_hash, "plan")
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(issued.token)) as client:
        outside = await client.post("/v1/tasks", json={"queue": "analyst"})
        seo = [{"queue": "seo"} for _ in range(990)]
        assert (await client.post("/v1/tasks/batch", json={"tasks": seo})).status_code == 201
        over = await client.post(
            "/v1/tasks/batch", json={"tasks": [{"queue": "copywriter"} for _ in range(11)]}
        )
    assert outside.status_code == 403 and outside.headers["content-type"] == PROBLEM
    assert "plan 'free' allows" in outside.json()["detail"]
    assert over.status_code == 429 and "990 of its 1000" in over.json()["detail"]
    assert sum(s.queued for s in await store.queue_status()) == 990  # nothing refused stored


@pytest.mark.parametrize(
    "body",
    [
        {"queue": "writer", "priority": "5"},  # a string is not a priority
        {"queue": "writer", "priority": True},  # nor is a boolean (it was taken as 1)
        {"queue": "writer", "timeout_seconds": 1e-50},
        {"queue": "writer", "run_at": "9999-12-31T23:59:59-01:00"},
        {"queue": "writer", "run_at": "0001-01-01T00:00:00+01:00"},
        {"queue": "writer", "debounce": {"key": "a\u0000b", "seconds": 5}},
    ],
)
async def test_values_the_database_cannot_hold_are_refused_at_the_door(
    api: ApiProcess, store: PostgresStore, body: dict[str, object]
) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        answer = await client.post("/v1/tasks", json=body)
        listed = await client.get("/v1/tasks")
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert listed.status_code == 200 and listed.json()["tasks"] == []


async def test_surrogates_nul_in_paths_and_chunked_bodies_are_4xx(
    api: ApiProcess, store: PostgresStore
) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"queue": "writer", "payload": {"x": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}}'

    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        surrogate = await client.post(
            "/v1/tasks",
            content=b'{"queue": "writer", "payload": {"a": "\\ud800"}}',
            headers={"content-type": "application/json"},
        )
        nul_group = await client.get("/v1/groups/a%00b")
        chunked = await client.post(
            "/v1/tasks", content=chunks(), headers={"content-type": "application/json"}
        )
        typo = await client.post("/v1/tasks", json={"queue": "writr"})
        ready = await client.get("/readyz")
    assert surrogate.status_code == 422, surrogate.text
    assert nul_group.status_code in (404, 422), nul_group.text
    assert chunked.status_code == 413 and chunked.headers["content-type"] == PROBLEM
    assert typo.status_code == 422 and "did you mean" not in typo.json()["detail"]
    assert ready.status_code == 200
    assert sum(s.queued for s in await store.queue_status()) == 0
