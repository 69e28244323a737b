"""A streamed reply: opened along the chain, relayed chunk by chunk, assembled into a result.

A stream is retried and failed over only until its first token: after that the caller has
seen text, which a fresh attempt could not take back, so a later failure is raised as it
is (an ``LLMTimeout`` with ``layer == "gap"`` for a stream that went silent).

Close a stream you stop reading early (``async with gateway.stream(...) as stream:`` or
``await stream.aclose()``): until then it holds a connection slot of its host.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

from conveyor.core.llm_errors import FailureKind
from conveyor.errors import LLMAttemptError
from conveyor.gateway.accounting.records import CallOutcome
from conveyor.gateway.attempt import Attempt, AttemptReport, Call
from conveyor.gateway.budgets.budget import CHARS_PER_TOKEN
from conveyor.gateway.chat import ChatChunk, ChatResult
from conveyor.gateway.endpoint import Endpoint, Timed
from conveyor.gateway.failover import Failover, failure_kind
from conveyor.gateway.hooks import AttemptInfo, HookChain
from conveyor.gateway.providers import Reply


class ChatStream:
    """An async iterator of ``ChatChunk``; the last chunk carries the whole ``ChatResult``."""

    def __init__(self, chunks: AsyncGenerator[ChatChunk, None]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> ChatChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop the stream and give its connection back; safe to call more than once."""
        await self._chunks.aclose()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass(frozen=True, slots=True)
class Opened:
    """An attempt whose stream has produced its first token (or ended without any)."""

    attempt: Attempt
    head: tuple[Timed, ...]
    rest: AsyncGenerator[Timed, None]


def estimate_text_tokens(text: str) -> int:
    """A completion's size when the provider does not say: characters / 4."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def whole_result(attempt: Attempt, reply: Reply, latency: float, ttft: float) -> ChatResult:
    """The result of a non-streamed attempt; missing usage is estimated (and says so)."""
    prompt = reply.prompt_tokens
    completion = reply.completion_tokens
    return ChatResult(
        text=reply.text,
        finish_reason=reply.finish_reason,
        prompt_tokens=attempt.call.prompt_estimate if prompt is None else prompt,
        completion_tokens=estimate_text_tokens(reply.text) if completion is None else completion,
        provider=attempt.target.provider,
        model=attempt.target.model,
        latency=latency,
        ttft=ttft,
        attempts=attempt.ordinal,
        usage_estimated=prompt is None or completion is None,
    )


class StreamAssembly:
    """What a stream has delivered so far: text, finish reason, usage, timings."""

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self._parts: list[str] = []
        self._deltas = 0
        self.finish_reason: str | None = None
        self._prompt: int | None = None
        self._completion: int | None = None
        self.ttft: float | None = None
        self.latency = 0.0
        self.model: str | None = None

    def add(self, timed: Timed) -> None:
        """Take in one piece."""
        piece = timed.piece
        self.latency = timed.at
        if piece.text:
            if self.ttft is None:
                self.ttft = timed.at
            self._parts.append(piece.text)
            self._deltas += 1
        if piece.finish_reason is not None:
            self.finish_reason = piece.finish_reason
        if piece.prompt_tokens is not None:
            self._prompt = piece.prompt_tokens
        if piece.completion_tokens is not None:
            self._completion = piece.completion_tokens
        if piece.model is not None:
            self.model = piece.model

    @property
    def usage_estimated(self) -> bool:
        """True when the provider has not (yet) reported both counts."""
        return self._prompt is None or self._completion is None

    @property
    def prompt_tokens(self) -> int:
        """Reported prompt tokens, else the call's estimate."""
        return self.attempt.call.prompt_estimate if self._prompt is None else self._prompt

    @property
    def completion_tokens(self) -> int:
        """Reported completion tokens, else one per text delta received."""
        return self._deltas if self._completion is None else self._completion

    async def settle(
        self, outcome: CallOutcome, *, kind: FailureKind | None = None, error: str | None = None
    ) -> None:
        """Settle the attempt with what the stream delivered up to now."""
        report = AttemptReport(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            usage_estimated=self.usage_estimated,
            latency=self.latency,
            ttft=self.ttft,
            status=200,
            error=error,
            finish_reason=self.finish_reason,
            response_model=self.model,
        )
        await self.attempt.settle(outcome, report, kind=kind)

    def result(self) -> ChatResult:
        """The whole reply, once the stream has ended."""
        return ChatResult(
            text="".join(self._parts),
            finish_reason=self.finish_reason or "stop",
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            provider=self.attempt.target.provider,
            model=self.attempt.target.model,
            latency=self.latency,
            ttft=self.latency if self.ttft is None else self.ttft,
            attempts=self.attempt.ordinal,
            usage_estimated=self.usage_estimated,
        )


async def open_stream(endpoints: Mapping[str, Endpoint], attempt: Attempt) -> Opened:
    """Start a stream and read up to its first token, so failures before it can retry."""
    request = attempt.call.request_for(attempt.target, attempt.info.headers)
    pieces = endpoints[attempt.target.provider].stream(request)
    head: list[Timed] = []
    try:
        async for timed in pieces:
            head.append(timed)
            if timed.piece.text:
                break
    except BaseException:
        await pieces.aclose()
        raise
    return Opened(attempt, tuple(head), pieces)


async def stream_chunks(
    opening: Callable[[], Awaitable[Call]],
    failover: Failover,
    endpoints: Mapping[str, Endpoint],
    on_chunk: Callable[[], None] | None,
) -> AsyncGenerator[ChatChunk, None]:
    """The chunks of a stream call: ``opening`` resolves the call when the caller first
    reads, ``failover`` walks its chain until a stream gives its first token, and every
    chunk after that is relayed as it comes (``on_chunk`` is called for each)."""
    call = await opening()
    opened = await failover.first_success(call, functools.partial(open_stream, endpoints))
    assembly = StreamAssembly(opened.attempt)
    relay = _Relay(on_chunk, failover.services.hooks, opened.attempt.info)
    try:
        for timed in opened.head:
            assembly.add(timed)
            if timed.piece.text:
                yield relay(ChatChunk(timed.piece.text))
        async for timed in opened.rest:
            assembly.add(timed)
            if timed.piece.text:
                yield relay(ChatChunk(timed.piece.text))
    except LLMAttemptError as exc:
        kind = failure_kind(exc)
        await assembly.settle(CallOutcome.of(kind), kind=kind, error=str(exc))
        raise
    except BaseException:  # cancelled, or the caller closed the stream
        await opened.rest.aclose()
        await assembly.settle(CallOutcome.ABANDONED)
        raise
    result = assembly.result()
    await assembly.settle(CallOutcome.OK)
    yield relay(ChatChunk("", result))


class _Relay:
    """Tells the caller's ``on_chunk`` and the hooks' about each chunk on its way out."""

    __slots__ = ("_attempt", "_hooks", "_on_chunk")

    def __init__(
        self, on_chunk: Callable[[], None] | None, hooks: HookChain, attempt: AttemptInfo
    ) -> None:
        self._on_chunk = on_chunk
        self._hooks = hooks if hooks.chunk else None
        self._attempt = attempt

    def __call__(self, chunk: ChatChunk) -> ChatChunk:
        if self._on_chunk is not None:
            self._on_chunk()
        if self._hooks is not None:
            self._hooks.on_chunk(chunk, self._attempt)
        return chunk
