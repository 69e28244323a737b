"""The API's submit guards as real processes: backpressure sheds by priority, the per-key
rate limit holds across two API processes, idempotency conflicts are refused, and a
debounced burst runs once. Nothing refused is stored."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.store.params import Finish, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.api_process import ApiProcess
from tests.e2e.conftest import RunCli
from tests.e2e.test_api_tasks import PROBLEM, bearer, key_for
from tests.e2e.test_worker_process import WorkerProcess, wait_until_finished
from tests.integration.helpers import claim, fetchval, lease


@pytest.fixture
def api(database_dsn: str, tmp_path: Path) -> Iterator[ApiProcess]:
    server = ApiProcess(database_dsn, tmp_path / "api.log", CONVEYOR_API_DEPTH_SECONDS="0.2")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def stored(store: PostgresStore) -> int:
    count: int = await fetchval(store, "SELECT count(*) FROM tasks")
    return count


@pytest.mark.timeout(90)
async def test_backpressure_sheds_by_priority(
    database_dsn: str, store: PostgresStore, tmp_path: Path, run_cli: RunCli
) -> None:
    await store.declare_queues(["writer", "seo"])
    token = await key_for(store, "acme")
    done = run_cli("queues", "set", "writer", "--depth-threshold", "5")
    assert done.returncode == 0 and "sheds past depth 5" in done.stdout, done.stderr
    await store.enqueue_batch([NewTask("writer", tenant_id="acme", priority=10)] * 5)
    # Started now, the API's first read of the depth (at start-up) sees 5 waiting tasks.
    server = ApiProcess(database_dsn, tmp_path / "api.log", CONVEYOR_API_DEPTH_SECONDS="0.2")
    try:
        server.wait_ready()
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(token)) as client:

            async def submit(priority: int, queue: str = "writer") -> httpx.Response:
                body = {"queue": queue, "priority": priority}
                return await client.post("/v1/tasks", json=body)

            for priority in (10, 6):  # batch work is refused at the threshold
                refused = await submit(priority)
                assert refused.status_code == 429, refused.text
                assert refused.headers["content-type"] == PROBLEM
                assert refused.json()["type"].endswith(":overloaded")
                assert refused.headers["retry-after"] == "300"  # nothing drains yet
            assert (await submit(10, "seo")).status_code == 201  # other queues are not shed
            # normal work until twice the threshold (this process counts what it accepts)
            assert [(await submit(5)).status_code for _ in range(5)] == [201] * 5
            assert (await submit(2)).status_code == 429
            # urgent work until four times the threshold
            assert [(await submit(1)).status_code for _ in range(10)] == [201] * 10
            last = await submit(1)
            assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1
            assert await stored(store) == 21  # 20 of writer, 1 of seo: nothing refused

            # Workers drain 12 tasks: the wait follows the measured drain rate.
            finished = 0
            while finished < 12:  # whatever caps the tenant's plan sets
                claimed = await claim(store, "writer", limit=12 - finished)
                await store.finish([Finish(lease(t), TaskState.SUCCEEDED) for t in claimed])
                finished += len(claimed)
            wait = "300"
            while wait == "300":  # until a read of the API's refresher sees the drain
                again = await submit(10)
                assert again.status_code == 429
                wait = again.headers["retry-after"]
                await asyncio.sleep(0.1)
            # 8 waiting, the batch mark 5: 4 too many at 12 a minute is 20 s
            assert wait == "20"
            assert (await submit(5)).status_code == 201
    finally:
        server.stop()


@pytest.mark.timeout(90)
async def test_the_rate_limit_of_a_key_is_shared_by_api_processes(
    database_dsn: str, store: PostgresStore, tmp_path: Path
) -> None:
    await store.declare_queues(["writer"])
    token, other = await key_for(store, "acme"), await key_for(store, "globex")
    # 0.05 a second: one request at once, the next 30 s later
    limited = {"CONVEYOR_API_KEY_RPS": "0.05"}
    one = ApiProcess(database_dsn, tmp_path / "one.log", **limited)
    two = ApiProcess(database_dsn, tmp_path / "two.log", **limited)
    try:
        one.wait_ready()
        two.wait_ready()
        async with httpx.AsyncClient(headers=bearer(token)) as client:
            first = await client.post(f"{one.url}/v1/tasks", json={"queue": "writer"})
            assert first.status_code == 201, first.text
            for server in (two, one):
                refused = await client.post(f"{server.url}/v1/tasks", json={"queue": "writer"})
                assert refused.status_code == 429, refused.text
                assert refused.json()["type"].endswith(":rate-limited")
                assert 1 <= int(refused.headers["retry-after"]) <= 31
            # each key has its own bucket
            theirs = await client.get(f"{two.url}/v1/tasks", headers=bearer(other))
            assert theirs.status_code == 200
        assert await stored(store) == 1
    finally:
        one.stop()
        two.stop()


async def test_an_idempotency_key_with_another_body_is_refused(
    api: ApiProcess, store: PostgresStore
) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        body = {"queue": "writer", "payload": {"brief": "spring"}}
        first = await client.post("/v1/tasks", json=body, headers={"Idempotency-Key": "o-1"})
        reordered = {"payload": {"brief": "spring"}, "queue": "writer", "priority": 5}
        same = await client.post("/v1/tasks", json=reordered, headers={"Idempotency-Key": "o-1"})
        assert first.status_code == 201 and same.status_code == 200
        assert same.json()["id"] == first.json()["id"]
        other = {"queue": "writer", "payload": {"brief": "autumn"}}
        clash = await client.post("/v1/tasks", json=other, headers={"Idempotency-Key": "o-1"})
        assert clash.status_code == 422 and clash.headers["content-type"] == PROBLEM
        assert clash.json()["type"].endswith(":idempotency-conflict")
        assert "'o-1'" in clash.json()["detail"]
        batch = [
            {"queue": "writer", "idempotency_key": "o-2"},
            {"queue": "writer", "idempotency_key": "o-1", "payload": {"brief": "winter"}},
        ]
        refused = await client.post("/v1/tasks/batch", json={"tasks": batch})
        assert refused.status_code == 422
        assert refused.json()["type"].endswith(":idempotency-conflict")
    assert await stored(store) == 1


@pytest.mark.timeout(90)
async def test_a_debounced_burst_runs_once_with_the_last_payload(
    api: ApiProcess, store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    await store.declare_queues(["echo"])
    token = await key_for(store, "acme")
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as client:
        answers = []
        for n in range(10):
            body = {"queue": "echo", "payload": {"n": n}, "debounce": {"key": "r", "seconds": 1}}
            answers.append(await client.post("/v1/tasks", json=body))
        in_batch = await client.post(
            "/v1/tasks/batch",
            json={"tasks": [{"queue": "echo", "debounce": {"key": "r", "seconds": 1}}]},
        )
    assert answers[0].status_code == 201 and answers[0].json()["created"] is True
    assert {a.status_code for a in answers[1:]} == {200}
    assert all(a.json()["replaced"] for a in answers[1:])
    task_id = answers[0].json()["id"]
    assert {a.json()["id"] for a in answers} == {task_id}
    assert in_batch.status_code == 422 and "debounce" in in_batch.json()["detail"]
    worker = WorkerProcess(database_dsn, tmp_path / "worker.log")
    try:
        await wait_until_finished(store, [task_id], timeout=45)
    finally:
        worker.stop()
    done = await store.get_task(task_id)
    assert done.state is TaskState.SUCCEEDED and done.result["echo"] == {"n": 9}
    ran = await fetchval(store, "SELECT count(*) FROM task_history WHERE queue = 'echo'")
    assert ran == 1 and await stored(store) == 0
