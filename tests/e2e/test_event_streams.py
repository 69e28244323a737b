"""The event streams over a real ``conveyor api``: SSE framing and headers, resume with
``Last-Event-ID`` (header or query), 422 for a malformed id, 404 for another tenant's task,
keep-alive comments, a finished task replayed then ended, the OpenAPI document, and frames
reaching ``curl -N`` while the task still runs."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor import AsyncClient, Client, TaskNotFound
from conveyor.client.sse import ServerSentEvent, SSEDecoder
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.api_process import ApiProcess, bearer, issue_key, unique
from tests.e2e.test_event_streams_at_scale import full_log
from tests.e2e.test_worker_process import WorkerProcess
from tests.support.databases import DatabaseFactory

KEEPALIVE = "0.3"


@pytest.fixture(scope="module")
def api(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """One server for the module, with quick keep-alives."""
    dsn = asyncio.run(database_factory.create())
    log = tmp_path_factory.mktemp("api") / "api.log"
    server = ApiProcess(
        dsn,
        log,
        CONVEYOR_API_KEY_CACHE_SECONDS="0",
        CONVEYOR_SSE_KEEPALIVE_SECONDS=KEEPALIVE,
        REDIS_URL="",
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        asyncio.run(database_factory.drop(dsn))


@pytest.fixture
async def store(api: ApiProcess) -> AsyncIterator[PostgresStore]:
    opened = await PostgresStore.open(api.dsn, min_size=1, max_size=4)
    yield opened
    await opened.close()


def events_of(text: str) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    found = [decoder.feed(line) for line in text.split("\n")]
    return [e for e in found if e is not None]


async def finished_task(store: PostgresStore, tenant: str) -> int:
    """A task of ``tenant`` with a whole life in the log: created, then cancelled."""
    made = await store.for_tenant(tenant).enqueue(NewTask(queue="idle", payload={}))
    await store.cancel(made.task_id, tenant_id=tenant)
    return made.task_id


async def test_a_finished_task_s_stream_replays_its_log_and_ends(
    api: ApiProcess, store: PostgresStore
) -> None:
    tenant = unique("acme")
    token = await issue_key(store, tenant)
    task_id = await finished_task(store, tenant)
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token), timeout=30) as http:
        whole = await http.get(f"/v1/tasks/{task_id}/events")
        assert whole.status_code == 200
        assert whole.headers["content-type"].startswith("text/event-stream")
        assert whole.headers["cache-control"] == "no-cache"
        assert whole.headers["x-accel-buffering"] == "no"
        events = events_of(whole.text)
        assert [e.event for e in events] == ["created", "cancelled", "end"]
        first = events[0]
        assert first.id is not None and f'"id":"{first.id}"' in first.data
        assert f'"task_id":{task_id}' in first.data and "id: " in whole.text
        # resume after the first: by header, and by query for clients without headers
        by_header = await http.get(
            f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": first.id}
        )
        by_query = await http.get(f"/v1/tasks/{task_id}/events?last_event_id={first.id}")
        for resumed in (by_header, by_query):
            assert [e.event for e in events_of(resumed.text)] == ["cancelled", "end"]


async def test_bad_ids_are_422_and_another_tenant_s_task_is_404(
    api: ApiProcess, store: PostgresStore
) -> None:
    mine, theirs = unique("acme"), unique("rival")
    token = await issue_key(store, mine)
    await issue_key(store, theirs)
    their_task = await finished_task(store, theirs)
    my_task = await finished_task(store, mine)
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token), timeout=30) as http:
        for path in ("/v1/events", f"/v1/tasks/{my_task}/events"):
            bad = await http.get(path, headers={"Last-Event-ID": "yesterday"})
            assert bad.status_code == 422, bad.text
            assert bad.headers["content-type"] == "application/problem+json"
            assert bad.json()["errors"][0]["field"] == "Last-Event-ID"
            bad = await http.get(path, params={"last_event_id": "1-2-3"})
            assert bad.status_code == 422 and "last_event_id" in bad.json()["detail"]
        hidden = await http.get(f"/v1/tasks/{their_task}/events")
        assert hidden.status_code == 404 and hidden.json()["type"].endswith("not-found")
        wrong = await http.get("/v1/events", params={"from": "yesterday"})
        assert wrong.status_code == 422
    with pytest.raises(TaskNotFound), Client(api.url, token) as client:  # the client's error
        next(iter(client.task_events(their_task)))


async def test_the_tenant_stream_keeps_alive_and_resumes_from_the_log(
    api: ApiProcess, store: PostgresStore
) -> None:
    tenant = unique("acme")
    token = await issue_key(store, tenant)
    done = [await finished_task(store, tenant) for _ in range(2)]
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token), timeout=30) as http:
        async with http.stream("GET", "/v1/events", params={"from": "start"}) as response:
            lines: list[str] = []
            async for line in response.aiter_lines():
                lines.append(line)
                if line == ": keep-alive" and sum(ln.startswith("id:") for ln in lines) == 4:
                    break  # all four events, then silence filled by a keep-alive comment
        events = events_of("\n".join(lines))
        assert [e.event for e in events] == ["created", "cancelled"] * 2
        assert str(done[0]) in events[0].data and str(done[1]) in events[3].data
    async with AsyncClient(api.url, token) as client:
        resumed = client.events(last_event_id=events[1].id)
        third = await anext(resumed)
        assert third.id == events[2].id and third.kind == "created" and third.task_id == done[1]
        assert (await anext(resumed)).kind == "cancelled"
        await resumed.aclose()


def test_the_routes_are_in_the_openapi_document(api: ApiProcess) -> None:
    spec = httpx.get(f"{api.url}/openapi.json").json()
    for path in ("/v1/events", "/v1/tasks/{task_id}/events"):
        responses = spec["paths"][path]["get"]["responses"]
        assert "text/event-stream" in responses["200"]["content"]
        assert "application/problem+json" in responses["422"]["content"]
        assert "404" in responses


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl on this machine")
@pytest.mark.timeout(120)
async def test_curl_sees_frames_while_the_task_still_runs(
    api: ApiProcess, store: PostgresStore, tmp_path: Path
) -> None:
    """The task waits until it is cancelled, and it is cancelled only after curl has
    printed its ``started`` frame: the frame cannot have waited for the task's end."""
    tenant = unique("acme")
    token = await issue_key(store, tenant)
    worker = WorkerProcess(api.dsn, tmp_path / "worker.log")
    try:
        made = await store.for_tenant(tenant).enqueue(
            NewTask(queue="reporter", payload={"sleep": 600})
        )
        curl = subprocess.Popen(  # noqa: ASYNC220 (its output is read in a thread or to a line)
            [
                "curl",
                "-sN",
                "-H",
                f"Authorization: Bearer {token}",
                f"{api.url}/v1/tasks/{made.task_id}/events",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert curl.stdout is not None
        seen: list[str] = []
        for line in curl.stdout:  # blocks until curl prints: no timing involved
            seen.append(line.rstrip("\n"))
            if seen[-1] == "event: progress":
                break
        task = await store.get_task(made.task_id)
        assert task.state is TaskState.RUNNING
        await store.cancel(made.task_id, tenant_id=tenant)
        rest = await asyncio.to_thread(curl.stdout.read)  # to its end: curl exits
        assert curl.wait(timeout=30) == 0
        curl.stdout.close()
        kinds = [e.event for e in events_of("\n".join([*seen, *rest.split("\n")]))]
        assert kinds == ["created", "started", "progress", "cancelled", "end"]
    finally:
        assert worker.stop() == 0, worker.output


async def test_a_stopping_api_ends_its_streams_instead_of_waiting_for_them(
    api: ApiProcess, store: PostgresStore, tmp_path: Path
) -> None:
    """SIGTERM ends open event and live-output streams cleanly (clients resume elsewhere),
    so the process stops without waiting out the server's 30 s graceful timeout for them."""
    tenant = unique("acme")
    token = await issue_key(store, tenant)
    await store.declare_queues(["writer"])
    waiting = await store.for_tenant(tenant).enqueue(NewTask("writer", {}))
    stopping = ApiProcess(api.dsn, tmp_path / "stopping.log", REDIS_URL="")
    stopping.wait_ready()
    paths = ["/v1/events", f"/v1/tasks/{waiting.task_id}/stream"]
    curls = [
        subprocess.Popen(  # noqa: ASYNC220 (read to its first line)
            ["curl", "-sN", "-H", f"Authorization: Bearer {token}", f"{stopping.url}{path}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for path in paths
    ]
    try:
        for curl in curls:
            assert curl.stdout is not None
            assert curl.stdout.readline() == "retry: 1000\n"  # the stream is open
        stopping.process.terminate()
        assert stopping.process.wait(timeout=20) == -signal.SIGTERM, stopping.log_path.read_text()
        for curl in curls:
            assert curl.wait(timeout=20) == 0  # a clean end of the response, not a reset
    finally:
        if stopping.process.poll() is None:
            stopping.process.kill()
            stopping.process.wait()
        for curl in curls:
            curl.kill()
            curl.wait()
            if curl.stdout is not None:
                curl.stdout.close()


def dechunk(raw: bytes) -> bytes:
    """The body of an HTTP/1.1 response with ``Transfer-Encoding: chunked``."""
    _head, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    return body


@pytest.mark.timeout(180)
async def test_a_client_that_stops_reading_is_cut_off_and_resumes_from_the_log(
    api: ApiProcess, store: PostgresStore, tmp_path: Path
) -> None:
    """A client stops reading while 40,000 events (13 MB) are written: its stream is cut
    (the server's memory stays bounded), the response ends cleanly, and the client resumes
    after the last event it got with exactly the rest of the log."""
    tenant = unique("acme")
    token = await issue_key(store, tenant)
    small = ApiProcess(
        api.dsn, tmp_path / "small.log", REDIS_URL="", CONVEYOR_SSE_BUFFER_BYTES="65536"
    )
    try:
        await _cut_and_resume(small, store, tenant, token)
    finally:
        small.stop()


async def _cut_and_resume(small: ApiProcess, store: PostgresStore, tenant: str, token: str) -> None:
    small.wait_ready()
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and no autotuning
    try:
        slow.connect(("127.0.0.1", small.port))
        slow.sendall(
            f"GET /v1/events HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        raw = b""
        while b"retry: 1000" not in raw:  # subscribed; from now on it reads nothing
            raw += slow.recv(4096)
        view = store.for_tenant(tenant)
        for _ in range(8):  # 13 MB of frames: more than the sockets hold
            await view.enqueue_batch([NewTask(queue="idle", payload={}) for _ in range(5000)])
        deadline = asyncio.get_running_loop().time() + 120
        while "event_stream_cut" not in small.log_path.read_text():
            assert asyncio.get_running_loop().time() < deadline, small.log_path.read_text()
            await asyncio.sleep(0.2)
        slow.settimeout(60)
        while chunk := slow.recv(1 << 16):  # the rest it was sent, then the end
            raw += chunk
    finally:
        slow.close()
    received = events_of(dechunk(raw).decode())
    log = [str(e.position) for e in await full_log(store, tenant)]
    assert 0 < len(received) < len(log) == 40_000
    assert [e.id for e in received] == log[: len(received)]  # a prefix: in order, no gap
    async with AsyncClient(small.url, token) as client:
        rest: list[str] = []
        stream = client.events(last_event_id=received[-1].id)
        async for event in stream:
            rest.append(event.id)
            if len(received) + len(rest) == len(log):
                break
        await stream.aclose()  # type: ignore[attr-defined]
    assert [e.id for e in received] + rest == log
