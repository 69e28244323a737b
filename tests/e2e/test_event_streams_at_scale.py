"""The proof of the event streams, over real processes: 1,000 tasks run by a real worker,
a client per task and tenant-wide clients, spread over two API instances on one database.
Every event arrives, in order per task; a client cut off mid-run resumes with
``Last-Event-ID`` on the other instance and ends with exactly the full log. And with
``REDIS_URL`` set, events written through one instance reach the other over Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from conveyor import AsyncClient
from conveyor.client import submission
from conveyor.client.sse import TaskEventView
from conveyor.core.events import ORIGIN
from conveyor.store.event_records import TaskEvent
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess, issue_key
from tests.e2e.test_worker_process import WorkerProcess
from tests.integration.test_redis_budget import redis_url

__all__ = ["redis_url"]  # the fixture, shared

TASKS = 1000
DEADLINE = 120.0
"""Seconds before a wait is a failure (never a measurement)."""


def client_of(api: ApiProcess, token: str) -> AsyncClient:
    """A client that may hold a stream per task at once (httpx pools 100 by default)."""
    limits = httpx.Limits(max_connections=TASKS + 50, max_keepalive_connections=TASKS + 50)
    return AsyncClient(api.url, token, transport=httpx.AsyncHTTPTransport(limits=limits))


async def full_log(store: PostgresStore, tenant: str) -> list[TaskEvent]:
    """The tenant's whole log, read once the horizon has passed every write."""
    view = store.for_tenant(tenant)
    while True:  # two complete reads that agree: nothing was still behind the horizon
        found: list[TaskEvent] = []
        while batch := await view.events(found[-1].position if found else ORIGIN):
            found += batch
        await asyncio.sleep(0.1)
        again: list[TaskEvent] = []
        while batch := await view.events(again[-1].position if again else ORIGIN):
            again += batch
        if again == found:
            return found


async def gather_until(
    events: AsyncIterator[TaskEventView], into: list[TaskEventView], count: int
) -> None:
    """Append events to ``into`` until it holds ``count``, then close the stream."""
    try:
        async for event in events:
            into.append(event)
            if len(into) >= count:
                return
    finally:
        await events.aclose()  # type: ignore[attr-defined]


@pytest.mark.timeout(300)
async def test_a_thousand_tasks_watched_per_task_and_tenant_wide_on_two_instances(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    tenant = "acme"
    token = await issue_key(store, tenant)
    await store.declare_queues(["reporter"])
    # 1,000 streams open at once on one key: the per-key rate limit (100/s by default,
    # tested on its own) would turn them away, and a busy machine made that a flaky failure
    unlimited = {"REDIS_URL": "", "CONVEYOR_API_KEY_RPS": "0"}
    one = ApiProcess(database_dsn, tmp_path / "one.log", **unlimited)
    other = ApiProcess(database_dsn, tmp_path / "other.log", **unlimited)
    worker: WorkerProcess | None = None
    try:
        one.wait_ready()
        other.wait_ready()
        async with client_of(one, token) as via_one, client_of(other, token) as via_other:
            # tenant-wide, on the instance that receives no submits: one client follows the
            # whole run, one is cut off mid-run and resumes on the first instance
            whole: list[TaskEventView] = []
            whole_reader = asyncio.create_task(
                gather_until(via_other.events(from_start=True), whole, 10**9)
            )
            cut: list[TaskEventView] = []
            cut_reader = asyncio.create_task(
                gather_until(via_other.events(from_start=True), cut, 2 * TASKS + TASKS // 2)
            )
            made = await via_one.submit_batch(
                [submission("reporter", {"n": n, "sleep": 0.05}) for n in range(TASKS)]
            )
            ids = [t.id for t in made.tasks]
            per_task: dict[int, list[TaskEventView]] = {}

            async def watch(task_id: int, client: AsyncClient) -> None:
                per_task[task_id] = [e async for e in client.task_events(task_id)]

            watchers = [
                asyncio.create_task(watch(task_id, via_one if i % 2 else via_other))
                for i, task_id in enumerate(ids)
            ]
            worker = WorkerProcess(database_dsn, tmp_path / "worker.log", "--concurrency", "200")
            await asyncio.wait_for(cut_reader, DEADLINE)  # cut off mid-run...
            assert len(cut) == 2 * TASKS + TASKS // 2
            resumed = asyncio.create_task(  # ... and resumed on the other instance
                gather_until(via_one.events(last_event_id=cut[-1].id), cut, 10**9)
            )
            await asyncio.wait_for(asyncio.gather(*watchers), DEADLINE)

            log = await full_log(store, tenant)
            deadline = asyncio.get_running_loop().time() + DEADLINE
            while len(whole) < len(log) or len(cut) < len(log):
                assert asyncio.get_running_loop().time() < deadline, (len(whole), len(cut))
                await asyncio.sleep(0.05)
            for reader in (whole_reader, resumed):
                reader.cancel()
            await asyncio.gather(whole_reader, resumed, return_exceptions=True)
    finally:
        if worker is not None:
            assert worker.stop() == 0, worker.output
        one.stop()
        other.stop()

    ids_in_log = [str(e.position) for e in log]
    assert len(log) == 5 * TASKS  # created, started, progress x2, succeeded
    assert [e.id for e in whole] == ids_in_log  # every event, once, in log order
    assert [e.id for e in cut] == ids_in_log  # the cut-off client too, with its resume
    by_task: dict[int, list[str]] = {}
    for event in log:
        by_task.setdefault(event.task_id, []).append(str(event.position))
    for task_id in ids:
        assert [e.id for e in per_task[task_id]] == by_task[task_id], task_id
        kinds = [e.kind for e in per_task[task_id]]
        assert kinds == ["created", "started", "progress", "progress", "succeeded"], kinds


@pytest.mark.timeout(120)
async def test_with_redis_events_written_through_one_instance_reach_the_other(
    store: PostgresStore, database_dsn: str, tmp_path: Path, redis_url: str
) -> None:
    """REDIS_URL set, the polls too slow to matter: the wake-up travels PostgreSQL NOTIFY
    -> the elected relay -> Redis -> the other instance's hub."""
    tenant = "acme"
    token = await issue_key(store, tenant)
    await store.declare_queues(["reporter"])
    env = {
        "REDIS_URL": redis_url,
        "CONVEYOR_REDIS_EVENTS_CHANNEL": f"conveyor-test:{tmp_path.name}",
        "CONVEYOR_EVENT_POLL_SECONDS": "60",
    }
    one = ApiProcess(database_dsn, tmp_path / "one.log", **env)
    other = ApiProcess(database_dsn, tmp_path / "other.log", **env)
    try:
        one.wait_ready()
        other.wait_ready()
        async with (
            AsyncClient(one.url, token) as via_one,
            AsyncClient(other.url, token) as via_other,
        ):
            watched: list[TaskEventView] = []
            watcher = asyncio.create_task(
                gather_until(via_other.events(from_start=True), watched, 6)
            )
            made = [await via_one.submit("reporter", {"n": 0})]
            while not watched:  # connected (the first event may come from the backlog)
                assert not watcher.done()
                await asyncio.sleep(0.05)
            made += [await via_one.submit("reporter", {"n": n}) for n in (1, 2)]
            for task in made:
                await via_one.cancel(task.id)
            # well within the 60 s poll: only a wake-up over Redis can have delivered them
            await asyncio.wait_for(watcher, 30)
    finally:
        one.stop()
        other.stop()
    assert [(e.task_id, e.kind) for e in watched] == [
        *((t.id, "created") for t in made),
        *((t.id, "cancelled") for t in made),
    ]
