"""``conveyor.Client`` and ``conveyor.AsyncClient`` against a real ``conveyor api``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor import AsyncClient, Client, TaskNotFound
from conveyor.client import submission
from conveyor.client.calls import Call
from conveyor.client.models import TaskCreated
from conveyor.errors import ApiError, ApiInvalidTask, ApiUndeclaredQueue
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess
from tests.e2e.test_api_tasks import key_for


@pytest.fixture
def api(database_dsn: str, tmp_path: Path) -> Iterator[ApiProcess]:
    server = ApiProcess(database_dsn, tmp_path / "api.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def test_the_sync_client_submits_reads_lists_and_cancels(
    api: ApiProcess, store: PostgresStore
) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")

    def use() -> None:
        with Client(api.url, token) as client:
            made = client.submit("writer", {"brief": "spring"}, priority=3, group_id="launch")
            again = client.submit("writer", idempotency_key="order-1")
            same = client.submit("writer", idempotency_key="order-1")
            assert made.created and again.created and not same.created and same.id == again.id
            batch = client.submit_batch([submission("writer", {"n": n}) for n in range(5)])
            assert len(batch.tasks) == 5 and all(t.created for t in batch.tasks)
            task = client.get(made.id)
            assert task.payload == {"brief": "spring"} and task.group_id == "launch"
            listed = [t.id for t in client.list(queue="writer", page_size=2)]
            ids = [made.id, again.id, *(t.id for t in batch.tasks)]
            assert listed == sorted(ids, reverse=True)
            assert client.cancel(made.id).state.value == "cancelled"
            with pytest.raises(TaskNotFound):
                client.get(10**12)
            with pytest.raises(ApiUndeclaredQueue, match="nobody_serves"):
                client.submit("nobody_serves")

    await asyncio.to_thread(use)


async def test_the_async_client_and_its_errors(api: ApiProcess, store: PostgresStore) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")
    async with AsyncClient(api.url, token) as client:
        made = await client.submit("writer", {"n": 1})
        assert (await client.get(made.id)).state.value == "queued"
        assert [t.id async for t in client.list(state="queued")] == [made.id]
        with pytest.raises(ApiInvalidTask) as caught:
            await client.send(_bad_priority())
        assert caught.value.errors[0]["field"] == "priority"
    async with AsyncClient(api.url, "cvk_000000000000_nope") as stranger:
        with pytest.raises(ApiError) as refused:
            await stranger.get(made.id)
        assert refused.value.status == 401


def _bad_priority() -> Call[TaskCreated]:
    # the client checks its own arguments; a raw call shows the server's answer
    def parse(response: httpx.Response) -> TaskCreated:
        return TaskCreated.model_validate_json(response.content)

    return Call("POST", "/v1/tasks", parse, json={"queue": "writer", "priority": 0})
