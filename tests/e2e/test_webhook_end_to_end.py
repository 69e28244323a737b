"""External runtimes over real processes: a worker and an API process, and a small aiohttp
server started here acting as the runtime. A task is delivered signed, reported through
the callback routes with its token, and completes, fails (for good, or retried), or times
out (retried, then dead by its policy); a forged token and a replayed one are refused, and
so is a replayed signed delivery on the runtime's side; a URL off the allow-list fails the
task. While the runtime works, the waiting tasks hold no worker slot (concurrency 1, two
in flight)."""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from conveyor import Client
from conveyor.core.api_keys import new_key
from conveyor.core.events import EventPosition
from conveyor.core.webhooks import SIGNATURE_HEADER, ReplayGuard, SignatureInvalid, new_token
from conveyor.store.params import TenantAgentUpdate
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.api_process import ApiProcess
from tests.e2e.test_worker_process import WorkerProcess

APP = "tests.e2e.external_agents:app"
SECRET = "whsec-e2e-" + secrets.token_hex(8)


@dataclass
class Delivery:
    """One delivery as the runtime received it."""

    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]

    @property
    def token(self) -> str:
        return str(self.body["callback"]["token"])


class Runtime:
    """The external runtime: checks each delivery's signature (refusing replays with 401),
    accepts it (202) and leaves the work to the test, which answers through the callbacks."""

    def __init__(self) -> None:
        self.guard = ReplayGuard(SECRET)
        self.deliveries: list[Delivery] = []
        self.refused: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            self.guard.accept(request.headers.get(SIGNATURE_HEADER), raw, time.time())
        except SignatureInvalid as exc:
            self.refused.append(str(exc))
            return web.json_response({"error": str(exc)}, status=401)
        self.deliveries.append(Delivery(dict(request.headers), raw, json.loads(raw)))
        return web.json_response({"accepted": True}, status=202)

    def of(self, task_id: int) -> list[Delivery]:
        return [d for d in self.deliveries if d.body["task_id"] == task_id]


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    served = Runtime()
    app = web.Application()
    app.router.add_post("/run", served.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    served.url = f"http://127.0.0.1:{port}"
    yield served
    await runner.cleanup()


async def until(check: Callable[[], Any], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def call(url: str, token: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.timeout(240)
async def test_an_external_runtime_serves_tasks_through_signed_deliveries_and_callbacks(
    store: PostgresStore, database_dsn: str, tmp_path: Path, runtime: Runtime
) -> None:
    await store.create_tenant("acme")
    issued = new_key(secrets.token_bytes)
    await store.create_api_key(issued.key_id, "acme", issued.secret_hash, "e2e")
    override = TenantAgentUpdate("acme", "local", adapter_override=f"webhook:{runtime.url}/run")
    await store.set_tenant_agent(override)
    api = ApiProcess(database_dsn, tmp_path / "api.log")
    env = {
        "E2E_RUNTIME_URL": runtime.url,
        "CONVEYOR_WEBHOOK_SECRET": SECRET,
        "CONVEYOR_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "CONVEYOR_WEBHOOK_CALLBACK_URL": api.url,
    }
    worker = WorkerProcess(
        database_dsn, tmp_path / "worker.log", "--concurrency", "1", env=env, app=APP
    )
    try:
        api.wait_ready()
        queues = ["remote", "remote-slow", "remote-offlist", "local"]

        async def registered() -> bool:
            return len(await store.queue_declarations(queues)) == len(queues)

        await until(registered, "the worker to register its queues")
        with Client(api.url, issued.token) as client:
            # -- two in flight on a worker of concurrency 1: the waits hold no slot ------
            first = client.submit("remote", {"topic": "spring"})
            second = client.submit("remote", {"topic": "autumn"})
            await until(lambda: runtime.of(first.id) and runtime.of(second.id), "two deliveries")
            for made in (first, second):
                await until(lambda m=made: client.get(m.id).state is TaskState.WAITING, "a wait")
            assert client.get(first.id).waiting_for == "conveyor:webhook:1"

            delivery = runtime.of(first.id)[0]
            body = delivery.body
            assert body["payload"] == {"topic": "spring"} and body["queue"] == "remote"
            assert body["tenant_id"] == "acme" and body["attempt"] == 1 and body["try"] == 1
            assert body["deadline"] and delivery.token.startswith("cvt_")
            callback = body["callback"]
            assert callback["result_url"] == f"{api.url}/v1/tasks/{first.id}/result"

            # the runtime's side: the same signed delivery sent again is refused
            async with httpx.AsyncClient() as http:
                replay = await http.post(
                    f"{runtime.url}/run",
                    content=delivery.raw,
                    headers={SIGNATURE_HEADER: delivery.headers[SIGNATURE_HEADER]},
                )
            assert replay.status_code == 401 and "received before" in runtime.refused[-1]

            # progress and a heartbeat, then the result
            progress = await call(callback["progress_url"], delivery.token, {"percent": 50})
            assert progress.status_code == 202, progress.text
            beat = await call(callback["heartbeat_url"], delivery.token, {"extend_seconds": 300})
            assert beat.status_code == 200, beat.text
            moved = datetime.fromisoformat(beat.json()["deadline"].replace("Z", "+00:00"))
            assert moved > datetime.fromisoformat(body["deadline"])

            forged = await call(callback["result_url"], new_token(), {"status": "succeeded"})
            assert forged.status_code == 401
            assert forged.json()["reason"] == "invalid" and "not one Conveyor issued" in forged.text
            nokey = await call(callback["result_url"], issued.token, {"status": "succeeded"})
            assert nokey.status_code == 401  # a tenant's API key is not a callback token
            other = await call(
                f"{api.url}/v1/tasks/{second.id}/result", delivery.token, {"status": "succeeded"}
            )
            assert other.status_code == 401  # a token answers only for its own task

            done = await call(
                callback["result_url"], delivery.token, {"status": "succeeded", "result": {"ok": 1}}
            )
            assert done.status_code == 200, done.text
            assert done.json()["attempt"] == 1
            await until(lambda: client.get(first.id).state is TaskState.SUCCEEDED, "success")
            assert client.get(first.id).result == {"ok": 1}
            replayed = await call(callback["result_url"], delivery.token, {"status": "succeeded"})
            assert replayed.status_code == 409 and replayed.json()["reason"] == "used"

            async def progressed() -> list[tuple[Any, int | None]]:
                logged = await store.task_events("acme", first.id, EventPosition(0, 0))
                return [(e.data, e.attempt) for e in logged if e.kind == "progress"]

            # (the log shows an event once no older transaction is still open: poll)
            await until(progressed, "the progress event")
            assert await progressed() == [({"percent": 50}, 1)]

            # -- a permanent failure: dead at once, the runtime's message kept ------------
            token2 = runtime.of(second.id)[0].token
            url2 = runtime.of(second.id)[0].body["callback"]["result_url"]
            failed = await call(url2, token2, {"status": "failed", "error": "bad brief"})
            assert failed.status_code == 200, failed.text
            await until(lambda: client.get(second.id).state is TaskState.DEAD, "dead")
            dead = client.get(second.id)
            assert dead.attempts == 1 and "bad brief" in dead.last_error["message"]
            assert dead.last_error["type"] == "ExternalTaskRejected"

            # -- a retryable failure: delivered again as attempt 2, which succeeds -------
            third = client.submit("remote", {"topic": "winter"})
            await until(lambda: runtime.of(third.id), "the delivery")
            one = runtime.of(third.id)[0]
            retry = {"status": "failed", "error": "busy", "retryable": True}
            assert (
                await call(one.body["callback"]["result_url"], one.token, retry)
            ).status_code == 200
            await until(lambda: len(runtime.of(third.id)) == 2, "the second delivery")
            two = runtime.of(third.id)[1]
            assert two.body["attempt"] == 2 and two.token != one.token
            ok = {"status": "succeeded", "result": "second time"}
            stale = await call(one.body["callback"]["result_url"], one.token, ok)
            assert stale.status_code == 409  # attempt 1's token was used for its failure
            assert (
                await call(two.body["callback"]["result_url"], two.token, ok)
            ).status_code == 200
            await until(lambda: client.get(third.id).state is TaskState.SUCCEEDED, "success")
            assert client.get(third.id).attempts == 2

            # -- no callback: retried by policy (2 attempts), then dead ------------------
            slow = client.submit("remote-slow", {"topic": "silence"})
            await until(lambda: client.get(slow.id).state is TaskState.DEAD, "dead by timeout")
            timed_out = client.get(slow.id)
            assert [d.body["attempt"] for d in runtime.of(slow.id)] == [1, 2]
            assert timed_out.attempts == 2
            assert timed_out.last_error["type"] == "CallbackTimedOut"
            late = runtime.of(slow.id)[0]
            expired = await call(late.body["callback"]["result_url"], late.token, ok)
            assert expired.status_code == 403 and expired.json()["reason"] == "expired"

            # -- a URL off the allow-list: the task fails, naming the setting -----------
            off = client.submit("remote-offlist", {})
            await until(lambda: client.get(off.id).state is TaskState.DEAD, "refused")
            refused = client.get(off.id)
            assert "CONVEYOR_WEBHOOK_ALLOWED_HOSTS" in refused.last_error["message"]
            assert refused.attempts == 1

            # -- one tenant's use of a Python role goes to the runtime (adapter_override) -
            routed = client.submit("local", {"n": 7})
            await until(lambda: runtime.of(routed.id), "the override's delivery")
            hop = runtime.of(routed.id)[0]
            res = await call(
                hop.body["callback"]["result_url"],
                hop.token,
                {"status": "succeeded", "result": "remote"},
            )
            assert res.status_code == 200
            await until(lambda: client.get(routed.id).state is TaskState.SUCCEEDED, "success")
            assert client.get(routed.id).result == "remote"
        assert SECRET not in worker.output and SECRET not in api.log_path.read_text()
    finally:
        assert worker.stop() == 0, worker.output
        api.stop()
