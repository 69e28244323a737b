"""One chat request from arrival to last byte, the part the three provider APIs share.

Each API module (openai_api, anthropic_api, ollama_api) is a ``Dialect``: it parses its
request body, shapes its error body, and formats its reply. Everything else happens here in
the same order for all three: count the request, apply the server's rate limit, pick the
fault, inject it (an error status, a reset, a slow start), then let the dialect reply over an
``Exchange`` that paces tokens and stalls a stream when told to.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from conveyor.mock_llm.config import Fault, MockConfig
from conveyor.mock_llm.faults import retry_after_header
from conveyor.mock_llm.state import MockState
from conveyor.mock_llm.tokens import Completion, count_prompt_tokens, generate

FAULT_HEADER = "x-mock-fault"
# Marks requests to the chat endpoints, whose status lines the stats count.
CHAT_REQUEST = web.RequestKey("conveyor_mock_chat_request", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class InvalidRequest(Exception):
    """The body is not a valid request of the API; it is answered with a 400."""


@dataclass(frozen=True)
class ChatRequest:
    """What the mock needs from a chat request, whatever the API it came in."""

    model: str
    message_texts: tuple[str, ...]  # every message's text, the system prompt included
    prompt: str  # the last user message: the reply is derived from it
    max_tokens: int | None
    stream: bool
    include_usage: bool = False  # OpenAI's stream_options.include_usage


class Dialect(Protocol):
    """One provider API's wire format."""

    api: str

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        """The request in ``body``; raises InvalidRequest with a message for the client."""
        ...

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """The JSON error body this API sends with ``status``."""
        ...

    async def reply(self, exchange: Exchange) -> web.StreamResponse:
        """Send the successful reply, streamed or whole."""
        ...


def dumps(payload: Any) -> bytes:
    """Compact JSON, as the providers send it."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


async def wait_forever() -> None:
    """Sleep until cancelled: by the client hanging up, or by the server stopping."""
    await asyncio.Event().wait()


class Exchange:
    """A request being answered: its completion, usage, and paced writes for the dialect."""

    def __init__(
        self,
        request: web.Request,
        state: MockState,
        chat: ChatRequest,
        fault: Fault,
        config: MockConfig,
    ) -> None:
        self.request = request
        self.chat = chat
        self.fault = fault
        self.config = config  # read once, so a live reconfigure does not change a reply midway
        self.sequence = state.next_sequence()
        self.created = int(time.time())
        self.started = time.monotonic()
        self.prompt_tokens = count_prompt_tokens(chat.message_texts)
        self.completion: Completion = generate(
            chat.prompt,
            length=config.reply_tokens,
            fixed_text=config.reply_for(chat.message_texts),
            max_tokens=chat.max_tokens,
        )
        self.headers = {"x-request-id": f"req_mock{self.sequence:08d}"}
        self.headers.update(state.rate_limit_headers())

    @property
    def completion_tokens(self) -> int:
        """Tokens generated (after the max_tokens cap)."""
        return len(self.completion.tokens)

    def _interval(self) -> float:
        tps = self.config.tokens_per_second
        return 0.0 if tps is None else 1.0 / tps

    def whole_latency(self) -> float:
        """How long a non-streaming reply takes: ``latency``, else the streaming time."""
        if self.config.latency is not None:
            return self.config.latency
        return self.config.ttft + self._interval() * self.completion_tokens

    async def _stall(self) -> None:
        seconds = self.config.stall_seconds
        if seconds is None:
            await wait_forever()
        else:
            await asyncio.sleep(seconds)

    async def open_stream(self, content_type: str) -> web.StreamResponse:
        """Send the status line and headers of a streamed reply."""
        response = web.StreamResponse(
            headers={**self.headers, "Content-Type": content_type, "Cache-Control": "no-cache"}
        )
        await response.prepare(self.request)
        return response

    async def tokens(self) -> AsyncIterator[str]:
        """The completion's tokens at the configured pace, stalling first if told to.

        The first token comes ``ttft`` after the stream opened, each next one
        ``1 / tokens_per_second`` later. A stalled stream goes silent after
        ``stall_after_tokens`` tokens (or before its end, if it has fewer).
        """
        stall_at = self.config.stall_after_tokens if self.fault is Fault.STALL else None
        for index, token in enumerate(self.completion.tokens):
            if index == stall_at:
                await self._stall()
            await asyncio.sleep(self.config.ttft if index == 0 else self._interval())
            yield token
        if stall_at is not None and stall_at >= self.completion_tokens:
            await self._stall()

    async def send_whole(self, payload: dict[str, Any]) -> web.StreamResponse:
        """Send a non-streaming JSON reply after the configured latency.

        A stall sends the status line and headers, then nothing for ``stall_seconds``: the
        client waits on a body that does not come, which is what a read timeout is for.
        """
        body = dumps(payload)
        if self.fault is Fault.STALL:
            response = web.StreamResponse(headers={**self.headers})
            response.content_type = "application/json"
            response.content_length = len(body)
            await response.prepare(self.request)
            await self._stall()
            await response.write(body)
            await response.write_eof()
            return response
        await asyncio.sleep(self.whole_latency())
        return web.Response(body=body, content_type="application/json", headers=self.headers)


def error_response(
    dialect: Dialect,
    state: MockState,
    status: int,
    message: str,
    retry_after: float | None = None,
) -> web.Response:
    """An error in the dialect's shape, with Retry-After when the client should wait."""
    headers = state.rate_limit_headers()
    if retry_after is not None:
        headers.update(retry_after_header(retry_after))
    return web.json_response(dialect.error_body(status, message), status=status, headers=headers)


async def reset_connection(request: web.Request) -> web.StreamResponse:
    """Abort the TCP connection without a response; the client sees a connection reset.

    SO_LINGER with a zero timeout makes the kernel send RST instead of a graceful FIN, as a
    crashed proxy or a dropped load-balancer connection does.
    """
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # The lost connection cancels this handler (the server runs with handler_cancellation).
    await wait_forever()
    raise ConnectionResetError("mock fault: connection reset")


async def _body_of(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


async def _answer(dialect: Dialect, state: MockState, request: web.Request) -> web.StreamResponse:
    config = state.config
    try:
        chat = dialect.parse(await _body_of(request))
    except InvalidRequest as exc:
        return error_response(dialect, state, 400, str(exc))
    limiter = state.limiter
    wait = None if limiter is None else limiter.admit()
    if limiter is not None and wait is not None:
        state.stats.limit_429s += 1
        message = (
            f"rate limit reached: {limiter.per_minute} requests per minute; "
            f"try again in {wait:.1f}s"
        )
        return error_response(dialect, state, 429, message, retry_after=wait)
    try:
        fault = state.picker.pick(request.headers.get(FAULT_HEADER))
    except ValueError as exc:
        return error_response(dialect, state, 400, f"{FAULT_HEADER}: {exc}")
    if fault is not Fault.OK:
        state.stats.fault_injected(fault)
    if fault is Fault.RESET:
        return await reset_connection(request)
    if fault.status is not None:
        retry_after = config.retry_after if fault is Fault.RATE_LIMITED else None
        message = f"mock fault: injected {fault.status}"
        return error_response(dialect, state, fault.status, message, retry_after)
    if fault is Fault.SLOW_START:
        await asyncio.sleep(config.slow_start_seconds)
    exchange = Exchange(request, state, chat, fault, config)
    response = await dialect.reply(exchange)
    state.stats.tokens_served(exchange.prompt_tokens, exchange.completion_tokens)
    return response


def chat_handler(dialect: Dialect, state: MockState) -> Handler:
    """The aiohttp handler of ``dialect``'s chat endpoint."""

    async def handle(request: web.Request) -> web.StreamResponse:
        state.stats.request_started(dialect.api)
        request[CHAT_REQUEST] = True
        task = asyncio.current_task()
        assert task is not None, "aiohttp runs each handler in a task"
        state.handlers.add(task)
        try:
            return await _answer(dialect, state, request)
        finally:
            state.handlers.discard(task)
            state.stats.request_ended()

    return handle
