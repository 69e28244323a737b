"""Deliveries against a real HTTP server (aiohttp, in the test): signed so the runtime's
check passes, 5xx/429/unreachable retried by class, 4xx failing at once, URLs off the
allow-list refused before anything is sent."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from conveyor.core.webhooks import SIGNATURE_HEADER, ReplayGuard
from conveyor.errors import WebhookDeliveryFailed, WebhookRefused, WebhookRejected
from conveyor.gateway.webhooks import WebhookConfig, WebhookSender

SECRET = "whsec-test"


class Runtime:
    """A runtime answering the statuses it is told, in order (then 200), checking each
    delivery's signature as a real runtime would."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[dict[str, Any]] = []
        self.guard = ReplayGuard(SECRET)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.guard.accept(request.headers.get(SIGNATURE_HEADER), raw, time.time())
        self.received.append(json.loads(raw))
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": "0"} if status == 429 else None
        return web.Response(status=status, text=f"status {status}", headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Runtime, str]]:
    runtime = Runtime([])
    app = web.Application()
    app.router.add_post("/run", runtime.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield runtime, f"http://127.0.0.1:{port}/run"
    await runner.cleanup()


async def no_wait(_: float) -> None:
    return None


def sender(allowed: tuple[str, ...] = ("127.0.0.1",), attempts: int = 3) -> WebhookSender:
    config = WebhookConfig(SECRET, allowed, "http://127.0.0.1:1", 5.0, attempts)
    return WebhookSender(config, sleep=no_wait)


async def test_a_delivery_is_signed_and_accepted(server: tuple[Runtime, str]) -> None:
    runtime, url = server
    out = sender()
    try:
        assert await out.deliver(url, {"task_id": 1}) == 200
    finally:
        await out.aclose()
    assert runtime.received == [{"task_id": 1, "try": 1}]


@pytest.mark.parametrize("statuses", [[503], [500, 502], [429], [408]])
async def test_server_errors_and_rate_limits_are_retried(
    server: tuple[Runtime, str], statuses: list[int]
) -> None:
    runtime, url = server
    runtime.statuses = list(statuses)
    out = sender()
    try:
        assert await out.deliver(url, {"task_id": 2}) == 200
    finally:
        await out.aclose()
    assert [r["try"] for r in runtime.received] == list(range(1, len(statuses) + 2))


async def test_a_runtime_that_keeps_failing_fails_the_delivery_retryably(
    server: tuple[Runtime, str],
) -> None:
    runtime, url = server
    runtime.statuses = [500] * 10
    out = sender(attempts=3)
    try:
        with pytest.raises(WebhookDeliveryFailed, match="after 3 tries") as failed:
            await out.deliver(url, {"task_id": 3})
    finally:
        await out.aclose()
    assert "HTTP 500" in str(failed.value)
    assert len(runtime.received) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422, 301])
async def test_a_4xx_fails_at_once_with_the_response(
    server: tuple[Runtime, str], status: int
) -> None:
    runtime, url = server
    runtime.statuses = [status]
    out = sender()
    try:
        with pytest.raises(WebhookRejected, match=f"HTTP {status}") as rejected:
            await out.deliver(url, {"task_id": 4})
    finally:
        await out.aclose()
    assert f"status {status}" in str(rejected.value)
    assert len(runtime.received) == 1


async def test_an_unreachable_runtime_is_retried_then_fails_retryably() -> None:
    out = sender(attempts=2)
    try:
        with pytest.raises(WebhookDeliveryFailed, match="after 2 tries"):
            await out.deliver("http://127.0.0.1:9/run", {"task_id": 5})
    finally:
        await out.aclose()


async def test_a_url_off_the_allow_list_is_refused_before_sending(
    server: tuple[Runtime, str],
) -> None:
    runtime, url = server
    out = sender(allowed=("runtime.example.com",))
    try:
        with pytest.raises(WebhookRefused, match="CONVEYOR_WEBHOOK_ALLOWED_HOSTS"):
            await out.deliver(url, {"task_id": 6})
    finally:
        await out.aclose()
    assert runtime.received == []


async def test_no_secret_no_delivery(server: tuple[Runtime, str]) -> None:
    _, url = server
    out = WebhookSender(WebhookConfig(None, ("127.0.0.1",)))
    try:
        with pytest.raises(WebhookRefused, match="CONVEYOR_WEBHOOK_SECRET"):
            await out.deliver(url, {})
    finally:
        await out.aclose()
