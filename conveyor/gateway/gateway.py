"""The ``Gateway``: one object that takes chat calls and sees them through a provider chain.

::

    async with Gateway(load_gateway_config("llm.toml")) as gateway:
        result = await gateway.chat(model="writer", messages=[{"role": "user", "content": "hi"}])
        async for chunk in gateway.stream(model="writer", messages=...):
            print(chunk.text, end="")

It owns the host pools, the endpoints and the breakers; the ``Budget`` and ``CallRecorder``
are seams whose defaults admit everything and count in-process (``budget.py``,
``recording.py``). A worker shares one gateway among all its tasks (``current.py``), so the
breakers and the per-host concurrency are the process's.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from types import TracebackType

from conveyor.core.llm_errors import CallRetryPolicy
from conveyor.errors import ConfigurationError, LLMAttemptError, LLMPermanentError
from conveyor.gateway.attempt import Attempt, Call, Services
from conveyor.gateway.breakers import BreakerRegistry
from conveyor.gateway.budget import AdmitAllBudget, Budget, estimate_prompt_tokens
from conveyor.gateway.chat import ChatChunk, ChatResult, Message, checked_messages
from conveyor.gateway.config import GatewayConfig, ProviderConfig, gateway_config_from_env
from conveyor.gateway.endpoint import Endpoint, Timed
from conveyor.gateway.pools import HostPool, HostPools
from conveyor.gateway.providers import AnthropicMessages, OllamaChat, OpenAIChat, WireFormat
from conveyor.gateway.recording import CallCounters, CallOutcome, CallRecorder
from conveyor.gateway.router import Router, failure_kind
from conveyor.gateway.routing import ModelRoutes
from conveyor.gateway.shared_budget import BucketStore, SharedBudget
from conveyor.gateway.streaming import ChatStream, Opened, StreamAssembly, whole_result


def _wire(provider: ProviderConfig) -> WireFormat:
    if provider.kind == "openai":
        return OpenAIChat(provider.max_tokens_field)
    if provider.kind == "anthropic":
        return AnthropicMessages()
    return OllamaChat()


class Gateway:
    """Chat calls through aliases, fallback chains, retries, breakers, budgets and records.

    ``budget`` defaults to ``AdmitAllBudget`` (admits all), ``recorder`` to
    ``CallCounters`` (in-process counters), ``breakers`` to a registry with the config's
    breaker settings. ``environ`` is where ``api_key_env`` variables are read.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        budget: Budget | None = None,
        recorder: CallRecorder | None = None,
        breakers: BreakerRegistry | None = None,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.config = config
        self.routes = ModelRoutes(config)
        self.breakers = breakers or BreakerRegistry(config.breaker.settings())
        self.budget: Budget = budget or AdmitAllBudget()
        self.recorder: CallRecorder = recorder or CallCounters()
        keys = {name: p.resolve_api_key(name, env) for name, p in config.providers.items()}
        self._pools = HostPools(config.providers)
        self.endpoints = {
            name: Endpoint(
                name,
                _wire(provider),
                provider.base_url,
                self._pools.for_provider(provider),
                (provider.timeouts or config.timeouts).layered(),
                keys[name],
            )
            for name, provider in config.providers.items()
        }
        retry: CallRetryPolicy = config.retry.policy()
        self._router = Router(Services(self.breakers, self.budget, self.recorder), retry, rng)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, store: BucketStore | None = None
    ) -> Gateway:
        """A gateway from ``CONVEYOR_LLM_CONFIG``; ConfigurationError when it is unset.

        With ``store``, providers that set ``requests_per_minute`` or ``tokens_per_minute``
        get budgets shared through it by every worker (``SharedBudget``).
        """
        config = gateway_config_from_env(environ)
        if config is None:
            raise ConfigurationError(
                "no LLM gateway configured; set CONVEYOR_LLM_CONFIG to a .toml or .json file "
                "(see docs/gateway.md)"
            )
        budget = SharedBudget.for_config(store, config) if store is not None else None
        return cls(config, budget=budget, environ=environ)

    def pool_of(self, provider: str) -> HostPool:
        """The host pool a provider's requests go through."""
        return self.endpoints[provider].pool

    async def chat(
        self,
        *,
        model: str,
        messages: Sequence[Message],
        max_tokens: int | None = None,
        temperature: float | None = None,
        tenant_id: str | None = None,
        task_id: int | None = None,
        model_override: str | None = None,
    ) -> ChatResult:
        """A whole reply from the first target of ``model``'s chain that gives one.

        Raises ``LLMPermanentError`` (the request is at fault), ``LLMUnavailable`` (every
        target failed; ``failures`` says how) or ``BudgetRefused``.
        """
        call = self._call(
            model, messages, max_tokens, temperature, False, tenant_id, task_id, model_override
        )
        return await self._router.first_success(call, self._complete)

    def stream(
        self,
        *,
        model: str,
        messages: Sequence[Message],
        max_tokens: int | None = None,
        temperature: float | None = None,
        tenant_id: str | None = None,
        task_id: int | None = None,
        model_override: str | None = None,
        on_chunk: Callable[[], None] | None = None,
    ) -> ChatStream:
        """The reply as it is generated: text chunks, then a last one with the result.

        Retried and failed over like ``chat`` until the first token arrives; a failure
        after that is raised as is. ``on_chunk`` is called for every chunk (``ctx.llm``
        passes the task's heartbeat, so a long stream keeps its lease alive).
        """
        call = self._call(
            model, messages, max_tokens, temperature, True, tenant_id, task_id, model_override
        )
        return ChatStream(self._chunks(call, on_chunk))

    async def aclose(self) -> None:
        """Close every connection; the gateway cannot be used afterwards."""
        await self._pools.aclose()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _call(
        self,
        model: str,
        messages: Sequence[Message],
        max_tokens: int | None,
        temperature: float | None,
        stream: bool,
        tenant_id: str | None,
        task_id: int | None,
        model_override: str | None,
    ) -> Call:
        checked = checked_messages(messages)
        if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens < 1):
            raise LLMPermanentError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        requested, targets = self.routes.resolve(model, model_override)
        return Call(
            requested=requested,
            targets=targets,
            messages=checked,
            max_tokens=max_tokens or self.config.default_max_tokens,
            temperature=temperature,
            stream=stream,
            tenant_id=tenant_id,
            task_id=task_id,
            prompt_estimate=estimate_prompt_tokens(checked),
        )

    async def _complete(self, attempt: Attempt) -> ChatResult:
        endpoint = self.endpoints[attempt.target.provider]
        done = await endpoint.complete(attempt.call.request_for(attempt.target))
        result = whole_result(attempt, done.reply, done.latency, done.ttft)
        await attempt.settle(
            CallOutcome.OK,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            usage_estimated=result.usage_estimated,
            latency=result.latency,
            ttft=result.ttft,
            status=200,
        )
        return result

    async def _open(self, attempt: Attempt) -> Opened:
        """Start a stream and read up to its first token, so failures before it can retry."""
        pieces = self.endpoints[attempt.target.provider].stream(
            attempt.call.request_for(attempt.target)
        )
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

    async def _chunks(
        self, call: Call, on_chunk: Callable[[], None] | None
    ) -> AsyncGenerator[ChatChunk, None]:
        opened = await self._router.first_success(call, self._open)
        assembly = StreamAssembly(opened.attempt)
        try:
            for timed in opened.head:
                assembly.add(timed)
                if timed.piece.text:
                    yield self._chunk(ChatChunk(timed.piece.text), on_chunk)
            async for timed in opened.rest:
                assembly.add(timed)
                if timed.piece.text:
                    yield self._chunk(ChatChunk(timed.piece.text), on_chunk)
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
        yield self._chunk(ChatChunk("", result), on_chunk)

    @staticmethod
    def _chunk(chunk: ChatChunk, on_chunk: Callable[[], None] | None) -> ChatChunk:
        if on_chunk is not None:
            on_chunk()
        return chunk
