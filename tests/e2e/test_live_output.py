"""Live LLM output over real processes: a worker streams a reply from the mock provider, the
token relay writes it, and an API process relays it to SSE clients (httpx and curl) chunk by
chunk while the task still runs; a client that drops resumes with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess, bearer, issue_key
from tests.e2e.test_worker_process import WorkerProcess


def llm_config(path: Path, url: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "providers": {"mock": {"kind": "openai", "base_url": url, "api_key": "k"}},
                "aliases": {"writer": ["mock/mock-gpt"]},
                "default_max_tokens": 40,
            }
        )
    )
    return path


async def frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The SSE frames of ``response`` as dicts (id, event, data parsed as JSON)."""
    frame: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "event" in frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            frame[field] = json.loads(value) if field == "data" else value


async def state_of(store: PostgresStore, task_id: int) -> str:
    return str((await store.get_task(task_id)).state)


@pytest.mark.timeout(180)
async def test_streamed_reply_reaches_sse_clients_while_the_task_runs(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    token = await issue_key(store, "acme")
    api = ApiProcess(database_dsn, tmp_path / "api.log")
    # 40 tokens at 10/s: a four-second stream the clients can watch arrive.
    async with MockLLM(MockConfig(ttft=0.3, tokens_per_second=10, reply_tokens=40)) as mock:
        worker = WorkerProcess(
            database_dsn,
            tmp_path / "worker.log",
            env={"CONVEYOR_LLM_CONFIG": str(llm_config(tmp_path / "llm.json", mock.url))},
        )
        try:
            api.wait_ready()
            deadline = time.monotonic() + 30
            while not await store.queue_declarations(["storyteller"]):
                assert time.monotonic() < deadline, worker.output
                await asyncio.sleep(0.1)
            async with httpx.AsyncClient(
                base_url=api.url, headers=bearer(token), timeout=60
            ) as http:
                ids = []
                for prompt in ("first", "second", "third"):
                    body = {"queue": "storyteller", "payload": {"prompt": prompt}}
                    made = await http.post("/v1/tasks", json=body)
                    assert made.status_code == 201, made.text
                    ids.append(made.json()["id"])
                whole, resumed, curled = await asyncio.gather(
                    watch(http, store, ids[0]),
                    watch_with_a_drop(http, ids[1]),
                    asyncio.to_thread(curl_watch, api.url, token, ids[2]),
                )
                results = [(await http.get(f"/v1/tasks/{i}")).json() for i in ids]
                other = await issue_key(store, "rival")
                foreign = await http.get(f"/v1/tasks/{ids[0]}/stream", headers=bearer(other))
                bad = await http.get(
                    f"/v1/tasks/{ids[0]}/stream", headers={"Last-Event-ID": "nonsense"}
                )
                too_far = await http.get(
                    f"/v1/tasks/{ids[0]}/stream", headers={"Last-Event-ID": f"1-{2**31}"}
                )
        finally:
            assert worker.stop() == 0, worker.output
            api.stop()

    texts = [r["result"]["text"] for r in results]
    assert all(r["state"] == "succeeded" for r in results), results
    # httpx: the output arrived in several pieces, the first while the task was running.
    chunks, first_state, end = whole
    assert len(chunks) >= 3 and first_state == "running"
    assert "".join(c["data"]["text"] for c in chunks if c["event"] == "chunk") == texts[0]
    assert end["data"]["state"] == "succeeded"
    # A client cut after three chunks resumes with Last-Event-ID: nothing lost, nothing twice.
    before, after = resumed
    assert len(before) == 3 and after
    assert [c["id"] for c in before + after] == sorted(
        {c["id"] for c in before + after}, key=lambda i: tuple(map(int, i.split("-")))
    )
    assert "".join(c["data"].get("text", "") for c in before + after) == texts[1]
    # curl -N: the first chunk was printed while the task was still running.
    lines, state_at_first_chunk = curled
    assert state_at_first_chunk == "running" and lines[-2] == "event: end"
    body = "".join(
        json.loads(line[6:]).get("text", "")
        for line, previous in zip(lines[1:], lines, strict=False)
        if line.startswith("data: ") and previous.startswith("event: chunk")
    )
    assert body == texts[2]
    assert foreign.status_code == 404 and foreign.json()["status"] == 404
    assert bad.status_code == 422 and "Last-Event-ID" not in bad.json()["detail"]
    assert too_far.status_code == 422 and "out of range" in too_far.json()["detail"]


async def watch(
    http: httpx.AsyncClient, store: PostgresStore, task_id: int
) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """Every frame of one task's stream; the task's state when the first chunk came."""
    chunks: list[dict[str, Any]] = []
    first_state = ""
    async with http.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        async for frame in frames(response):
            if frame["event"] == "end":
                return chunks, first_state, frame
            if not chunks:
                first_state = await state_of(store, task_id)
            chunks.append(frame)
    raise AssertionError("the stream closed without an end event")


async def watch_with_a_drop(
    http: httpx.AsyncClient, task_id: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    before: list[dict[str, Any]] = []
    async with http.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
        async for frame in frames(response):
            if frame["event"] == "chunk":
                before.append(frame)
            if len(before) == 3:
                break  # the client drops the connection
    after: list[dict[str, Any]] = []
    headers = {"Last-Event-ID": before[-1]["id"]}
    async with http.stream("GET", f"/v1/tasks/{task_id}/stream", headers=headers) as response:
        async for frame in frames(response):
            if frame["event"] == "end":
                return before, after
            after.append(frame)
    raise AssertionError("the resumed stream closed without an end event")


def curl_watch(url: str, token: str, task_id: int) -> tuple[list[str], str]:
    """``curl -N`` on the stream: its lines as they came, and the task's state (read over
    HTTP) at the moment curl printed the first chunk."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    auth = f"Authorization: Bearer {token}"
    with subprocess.Popen(
        [curl, "-N", "-s", "--max-time", "60", "-H", auth, f"{url}/v1/tasks/{task_id}/stream"],
        stdout=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        assert process.stdout is not None
        lines: list[str] = []
        state = ""
        for raw in process.stdout:
            line = raw.rstrip("\n")
            if line:
                lines.append(line)
            if line.startswith("event: chunk") and not state:
                got = httpx.get(f"{url}/v1/tasks/{task_id}", headers={"Authorization": auth[15:]})
                state = got.json()["state"]
        assert process.wait(timeout=60) == 0
    return lines, state
