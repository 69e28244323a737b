"""One attempt at one provider over HTTP: send, bound every wait, parse, translate errors.

Each wait of an attempt (the response headers, each body chunk, each stream piece) runs
under the deadline ``conveyor.core.llm_timeouts.next_deadline`` gives, so a stalled stream
fails at its gap limit and a slow start at its TTFT limit, each with an ``LLMTimeout``
naming the layer. httpx's own timeouts are set to connect and total, as a backstop. httpx
errors are translated here and nowhere else (``raise ... from exc``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from conveyor.core.llm_errors import parse_retry_after
from conveyor.core.llm_timeouts import LayeredTimeouts, next_deadline
from conveyor.errors import LLMStatusError, LLMTimeout, LLMTransportError
from conveyor.gateway.chat import ChatRequest
from conveyor.gateway.config import ProviderConfig
from conveyor.gateway.pools import HostPool
from conveyor.gateway.providers import (
    AnthropicMessages,
    BadReply,
    OllamaChat,
    OpenAIChat,
    Piece,
    Reply,
    WireFormat,
)
from conveyor.gateway.providers.sse import split_lines

T = TypeVar("T")

# An error body longer than this is cut: it is read for a message, and a proxy's HTML page
# must not be held in memory whole.
MAX_ERROR_BODY = 64 * 1024
MAX_ERROR_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class Completed:
    """A whole reply and its timings (seconds since the attempt took its slot)."""

    reply: Reply
    latency: float
    ttft: float


@dataclass(frozen=True, slots=True)
class Timed:
    """A stream piece and when it arrived (seconds since the attempt took its slot)."""

    piece: Piece
    at: float


class _Waits:
    """The deadlines of one attempt's waits."""

    def __init__(self, provider: str, model: str, timeouts: LayeredTimeouts) -> None:
        self.provider = provider
        self.model = model
        self.timeouts = timeouts
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.token_seen = False

    def elapsed(self) -> float:
        return self.loop.time() - self.started

    async def bounded(self, awaitable: Awaitable[T]) -> T:
        deadline, layer = next_deadline(
            self.timeouts, self.started, self.loop.time(), self.token_seen
        )
        try:
            async with asyncio.timeout_at(deadline):
                return await awaitable
        except TimeoutError:
            seconds = self.timeouts.limit(layer)
            raise LLMTimeout(self.provider, self.model, layer.value, seconds) from None

    async def body(self, response: httpx.Response, limit: int | None = None) -> bytes:
        """The body, each chunk under the gap limit; at most ``limit`` bytes if given."""
        chunks: list[bytes] = []
        size = 0
        reader = response.aiter_bytes()
        while limit is None or size < limit:
            try:
                chunk = await self.bounded(anext(reader))
            except StopAsyncIteration:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)


class Endpoint:
    """One configured provider: its wire format, URL, key, timeouts and host pool."""

    def __init__(
        self,
        name: str,
        wire: WireFormat,
        base_url: str,
        pool: HostPool,
        timeouts: LayeredTimeouts,
        api_key: str | None = None,
    ) -> None:
        self.name = name
        self.wire = wire
        self.url = base_url.rstrip("/") + wire.path
        self.pool = pool
        self.timeouts = timeouts
        # The key lives only inside these headers, which are never logged or repr'd.
        self._headers = {"accept": "application/json", **wire.headers(api_key)}
        self._header_names = frozenset(name.lower() for name in self._headers)
        self._httpx_timeout = httpx.Timeout(timeouts.total, connect=timeouts.connect)

    @classmethod
    def for_provider(
        cls,
        name: str,
        provider: ProviderConfig,
        pool: HostPool,
        timeouts: LayeredTimeouts,
        api_key: str | None = None,
    ) -> Endpoint:
        """The endpoint of a configured provider, speaking the wire format of its kind."""
        return cls(name, _wire(provider), provider.base_url, pool, timeouts, api_key)

    def __repr__(self) -> str:
        return f"Endpoint({self.name!r}, {self.wire.kind}, {self.url!r})"

    async def complete(self, request: ChatRequest) -> Completed:
        """Send ``request`` (not streamed) and read the whole reply."""
        async with self.pool.slot() as client:
            waits = _Waits(self.name, request.model, self.timeouts)
            with self._translated(request.model):
                response = await waits.bounded(
                    client.send(self._build(client, request), stream=True)
                )
                try:
                    ttft = waits.elapsed()
                    waits.token_seen = True  # the first byte is in: the body reads are gaps
                    await self._raise_for_status(response, waits, request.model)
                    body = await waits.body(response)
                finally:
                    await response.aclose()
                reply = self.wire.parse_reply(_json(body))
            return Completed(reply, waits.elapsed(), ttft)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Timed, None]:
        """Send ``request`` streamed and yield its pieces as they arrive.

        The TTFT limit runs until the first piece with text; then each wait for the next
        piece has the gap limit. The slot is held until the generator ends or is closed.
        """
        async with self.pool.slot() as client:
            waits = _Waits(self.name, request.model, self.timeouts)
            with self._translated(request.model):
                response = await waits.bounded(
                    client.send(self._build(client, request), stream=True)
                )
                try:
                    await self._raise_for_status(response, waits, request.model)
                    pieces = self.wire.parse_stream(split_lines(response.aiter_bytes()))
                    try:
                        while True:
                            try:
                                piece = await waits.bounded(anext(pieces))
                            except StopAsyncIteration:
                                break
                            if piece.text:
                                waits.token_seen = True
                            yield Timed(piece, waits.elapsed())
                    finally:
                        await pieces.aclose()
                finally:
                    await response.aclose()

    def _build(self, client: httpx.AsyncClient, request: ChatRequest) -> httpx.Request:
        headers = self._headers
        if request.headers:  # from hooks (a traceparent); ours, the key among them, win
            extra = {k: v for k, v in request.headers if k.lower() not in self._header_names}
            headers = {**extra, **headers}
        return client.build_request(
            "POST",
            self.url,
            json=self.wire.body(request),
            headers=headers,
            timeout=self._httpx_timeout,
        )

    async def _raise_for_status(self, response: httpx.Response, waits: _Waits, model: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        body = await waits.body(response, limit=MAX_ERROR_BODY)
        try:
            message = self.wire.error_message(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError):
            message = None
        if message is None:
            message = body.decode("utf-8", "replace").strip() or response.reason_phrase
        retry_after = parse_retry_after(
            response.headers.get("retry-after"),
            response.headers.get("retry-after-ms"),
            time.time(),
        )
        raise LLMStatusError(self.name, model, status, message[:MAX_ERROR_MESSAGE], retry_after)

    @contextmanager
    def _translated(self, model: str) -> Iterator[None]:
        """httpx's errors and unparseable replies as the gateway's errors."""
        try:
            yield
        except httpx.ConnectTimeout as exc:
            # The aiohttp transport reports every broken connection (a reset, a server
            # that hung up) as a ConnectTimeout; only a timeout underneath is one.
            cause = exc.__cause__
            if cause is None or isinstance(cause, TimeoutError):
                raise LLMTimeout(self.name, model, "connect", self.timeouts.connect) from exc
            raise LLMTransportError(self.name, model, _describe(cause)) from exc
        except httpx.TimeoutException as exc:  # the backstop, set to the total limit
            raise LLMTimeout(self.name, model, "total", self.timeouts.total) from exc
        except httpx.RequestError as exc:
            raise LLMTransportError(self.name, model, _describe(exc.__cause__ or exc)) from exc
        except BadReply as exc:
            raise LLMTransportError(self.name, model, f"malformed reply: {exc}") from exc


def _wire(provider: ProviderConfig) -> WireFormat:
    if provider.kind == "openai":
        return OpenAIChat(provider.max_tokens_field)
    if provider.kind == "anthropic":
        return AnthropicMessages()
    return OllamaChat()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error) or 'no detail'}"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadReply(f"the body is not JSON: {exc}") from None
