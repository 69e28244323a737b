"""Deliveries to external runtimes: a signed POST, retried by failure class like LLM calls.

It lives in the gateway because the gateway owns Conveyor's outbound HTTP (httpx, in the
layering table): the same client library, the same failure classes
(``core/llm_errors.py``: 5xx, 429 and transport errors or timeouts back off with full
jitter and try again; other 4xx and redirects fail at once), nothing new to own.

Every delivery is checked against the operator's allow-list
(``CONVEYOR_WEBHOOK_ALLOWED_HOSTS``) before anything is sent, and signed with
``CONVEYOR_WEBHOOK_SECRET`` (``Conveyor-Signature: t=<unix>,v1=<hex>``; see
``core/webhooks.py``). Redirects are not followed: they could lead off the allow-list. The
secret is never logged, and never put in an error.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from conveyor.core.backoff import RetryPolicy
from conveyor.core.llm_errors import (
    CallRetryPolicy,
    FailureKind,
    Verdict,
    classify_status,
    decide,
    parse_retry_after,
)
from conveyor.core.webhooks import SIGNATURE_HEADER, check_url, parse_allowed, sign
from conveyor.errors import WebhookDeliveryFailed, WebhookRefused, WebhookRejected
from conveyor.settings import Settings

_ERROR_BODY_CHARS = 500


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """The operator's settings for deliveries (``CONVEYOR_WEBHOOK_*``)."""

    secret: str | None = field(default=None, repr=False)
    allowed: tuple[str, ...] = ()
    callback_url: str | None = None
    request_seconds: float = 10.0
    attempts: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        """The delivery settings of a loaded ``Settings``."""
        return cls(
            secret=settings.webhook_secret,
            allowed=parse_allowed(settings.webhook_allowed_hosts),
            callback_url=settings.webhook_callback_url,
            request_seconds=settings.webhook_request_seconds,
            attempts=settings.webhook_delivery_attempts,
        )

    def callback_base(self) -> str:
        """The API's base URL for callbacks; WebhookRefused naming the setting when unset."""
        if not self.callback_url:
            raise WebhookRefused(
                "CONVEYOR_WEBHOOK_CALLBACK_URL is unset: set it on the worker to the API's "
                "base URL as external runtimes reach it (e.g. https://conveyor.example.com)"
            )
        return self.callback_url.rstrip("/")

    def check(self, url: str) -> str:
        """``url`` if deliveries may go there; WebhookRefused naming the setting otherwise."""
        if not self.secret:
            raise WebhookRefused(
                "CONVEYOR_WEBHOOK_SECRET is unset: set it on the worker (and give the same "
                "secret to the runtime) to sign webhook deliveries"
            )
        try:
            return check_url(url, self.allowed)
        except ValueError as exc:
            raise WebhookRefused(str(exc)) from None


class WebhookSender:
    """Sends signed deliveries; one per worker process, closed with ``aclose``."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        client: httpx.AsyncClient | None = None,
        uniform: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient(follow_redirects=False)
        self._uniform = uniform
        self._sleep = sleep
        self._clock = clock
        self._policy = CallRetryPolicy(
            backoff=RetryPolicy(max_attempts=config.attempts, base=0.5, cap=8.0)
        )

    async def deliver(self, url: str, body: dict[str, Any]) -> int:
        """POST ``body`` (plus ``"try"``: 1, 2, ...) to ``url``, signed; the status of the
        accepting answer (2xx).

        Raises WebhookRefused (not allowed, secret unset), WebhookRejected (a 4xx: the task
        fails for good) or WebhookDeliveryFailed (still 5xx/429/unreachable after
        ``attempts`` tries: the task is retried by its policy).
        """
        self.config.check(url)
        secret = self.config.secret or ""
        attempt = 0
        while True:
            attempt += 1
            # Each try is a new signed message ("try": n): a runtime's replay guard refuses a
            # message it has seen, and a retry within the same second would otherwise be one.
            raw = json.dumps(
                {**body, "try": attempt}, separators=(",", ":"), allow_nan=False
            ).encode()
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(secret, int(self._clock()), raw),
                "User-Agent": "conveyor-webhook/1",
            }
            retry_after: float | None = None
            try:
                response = await self._client.post(
                    url, content=raw, headers=headers, timeout=self.config.request_seconds
                )
            except httpx.TimeoutException:
                kind = FailureKind.TIMEOUT
                what = f"no answer within {self.config.request_seconds:g}s"
            except httpx.RequestError as exc:
                kind, what = FailureKind.TRANSPORT, f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    return response.status_code
                kind = classify_status(response.status_code)
                what = f"HTTP {response.status_code}: {response.text[:_ERROR_BODY_CHARS]!r}"
                retry_after = parse_retry_after(
                    response.headers.get("retry-after"), None, self._clock()
                )
            decision = decide(kind, attempt, self._policy, self._uniform(), retry_after)
            if decision.verdict is Verdict.FAIL:
                raise WebhookRejected(f"the external runtime at {url} refused the task: {what}")
            if decision.verdict is Verdict.NEXT_TARGET:
                raise WebhookDeliveryFailed(
                    f"delivery to {url} failed after {attempt} tries ({decision.reason}); "
                    f"last: {what}"
                )
            await self._sleep(decision.delay)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
