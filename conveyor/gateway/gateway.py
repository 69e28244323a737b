"""The ``Gateway``: one object that takes chat calls and sees them through a provider chain.

::

    async with Gateway(load_gateway_config("llm.toml")) as gateway:
        result = await gateway.chat(model="writer", messages=[{"role": "user", "content": "hi"}])
        async for chunk in gateway.stream(model="writer", messages=...):
            print(chunk.text, end="")

It owns the host pools, the endpoints and the breakers. Built with a store
(``Gateway.from_env(store=...)``, what a worker does), it also enforces the providers' and
tenants' rate budgets, the tenants' monthly spend and the caps of task runs and groups,
applies each tenant's model override, and writes every attempt to ``llm_calls``; built
bare, its ``Budget`` admits everything and its ``CallRecorder`` counts in-process
(``budgets/budget.py``, ``accounting/records.py``).
``hooks`` (``hooks.py``) see every attempt before it is sent and after it settles, and every
streamed chunk: metrics and tracing attach there, so the gateway imports none of them. A
worker process builds one gateway at start-up and hands it to every task's ``ctx.llm``
(``conveyor/cli/worker_root.py``), so the breakers and the per-host concurrency are the
process's.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType

import structlog

from conveyor.core.llm_errors import CallRetryPolicy
from conveyor.errors import ConfigurationError
from conveyor.gateway.accounting.call_log import CallLog
from conveyor.gateway.accounting.records import (
    CallCounters,
    CallOutcome,
    CallRecord,
    CallRecorder,
)
from conveyor.gateway.accounting.response_cache import ResponseCache
from conveyor.gateway.attempt import Attempt, AttemptReport, Call, Services
from conveyor.gateway.breakers import BreakerRegistry
from conveyor.gateway.budgets.bucket_store import bucket_store_from_env
from conveyor.gateway.budgets.budget import (
    AdmitAllBudget,
    Budget,
    CombinedBudget,
    estimate_prompt_tokens,
)
from conveyor.gateway.budgets.caps import CapsBudget
from conveyor.gateway.budgets.coalescing import CoalescingBuckets
from conveyor.gateway.budgets.shared import SharedBudget
from conveyor.gateway.budgets.spend import SpendBudget
from conveyor.gateway.budgets.tenant_policies import TenantPolicies
from conveyor.gateway.chat import ChatResult, Message, Prompt
from conveyor.gateway.config import GatewayConfig, gateway_config_from_env
from conveyor.gateway.endpoint import Endpoint
from conveyor.gateway.failover import CallClock, Failover
from conveyor.gateway.hooks import HookChain, LLMHook
from conveyor.gateway.model_routes import ModelRoutes, Target
from conveyor.gateway.pools import HostPool, HostPools
from conveyor.gateway.scope import NO_SCOPE, CallScope
from conveyor.gateway.stores import GatewayStore
from conveyor.gateway.streaming import ChatStream, stream_chunks, whole_result

log = structlog.get_logger("conveyor.gateway")


class Gateway:
    """Chat calls through aliases, fallback chains, retries, breakers, budgets and records.

    ``budget`` defaults to ``AdmitAllBudget`` (admits all), ``recorder`` to
    ``CallCounters`` (in-process counters), ``breakers`` to a registry with the config's
    breaker settings; ``policies`` (tenants' limits and model overrides) to none.
    ``hooks`` are plugins on every attempt and chunk, called in order (``hooks.py``).
    ``environ`` is where ``api_key_env`` variables are read; a variable that is named and
    unset is a ConfigurationError here, so a gateway that exists has its keys.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        budget: Budget | None = None,
        recorder: CallRecorder | None = None,
        breakers: BreakerRegistry | None = None,
        policies: TenantPolicies | None = None,
        cache: ResponseCache | None = None,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
        hooks: Sequence[LLMHook] = (),
    ) -> None:
        env = os.environ if environ is None else environ
        self.config = config
        self.routes = ModelRoutes(config)
        self.breakers = breakers or BreakerRegistry(config.breaker.settings())
        self.budget: Budget = budget or AdmitAllBudget()
        self.recorder: CallRecorder = recorder or CallCounters()
        self.policies = policies
        self.cache = cache
        self._closers: list[Callable[[], Awaitable[None]]] = []
        keys = config.api_keys(env)
        self._pools = HostPools(config.providers)
        self.endpoints = {
            name: Endpoint.for_provider(
                name,
                provider,
                self._pools.for_provider(provider),
                (provider.timeouts or config.timeouts).layered(),
                keys[name],
            )
            for name, provider in config.providers.items()
        }
        retry: CallRetryPolicy = config.retry.policy()
        self.hooks = HookChain(hooks)
        self._services = Services(self.breakers, self.budget, self.recorder, self.hooks)
        self._failover = Failover(self._services, retry, rng)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        store: GatewayStore | None = None,
        hooks: Sequence[LLMHook] = (),
    ) -> Gateway:
        """A gateway from ``CONVEYOR_LLM_CONFIG``; ConfigurationError when it is unset.

        With ``store`` (a worker's), it is the full gateway: see ``with_store``.
        """
        config = gateway_config_from_env(environ)
        if config is None:
            raise ConfigurationError(
                "no LLM gateway configured; set CONVEYOR_LLM_CONFIG to a .toml or .json file "
                "(see docs/gateway.md)"
            )
        if store is None:
            return cls(config, environ=environ, hooks=hooks)
        return cls.with_store(config, store, environ=environ, hooks=hooks)

    @classmethod
    def with_store(
        cls,
        config: GatewayConfig,
        store: GatewayStore,
        *,
        environ: Mapping[str, str] | None = None,
        hooks: Sequence[LLMHook] = (),
    ) -> Gateway:
        """The gateway a worker runs: budgets, spend limits, the runaway guards (caps per
        task run and group), policies and ``llm_calls``.

        Rate buckets live in Redis when ``REDIS_URL`` is set, else in ``store``; the
        monthly spend, the tenants' policies and the call log are always in ``store``.
        """
        env = os.environ if environ is None else environ
        buckets = bucket_store_from_env(env, store)
        drip = SharedBudget.for_config(CoalescingBuckets(buckets), config)
        # Cheapest refusals first: a capped or broke call takes no slot in the drip.
        budget = CombinedBudget([CapsBudget(store), SpendBudget(store), drip])
        log = CallLog(store)
        gateway = cls(
            config,
            budget=budget,
            recorder=log,
            policies=TenantPolicies(store),
            cache=ResponseCache(store, config.cache_ttl),
            environ=env,
            hooks=hooks,
        )
        gateway._closers.append(log.aclose)
        if buckets is not store:
            closer = getattr(buckets, "aclose", None)
            if closer is not None:
                gateway._closers.append(closer)
        return gateway

    async def record(self, record: CallRecord) -> None:
        """Account an attempt made by another gateway built from this one's config (an
        isolated task's child process): the recorder and the hooks get it as their own."""
        await self._services.record(record)

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
        scope: CallScope = NO_SCOPE,
        model_override: str | None = None,
        cache: bool = False,
    ) -> ChatResult:
        """A whole reply from the first target of ``model``'s chain that gives one.

        ``scope`` says which task (tenant, group, deadline) the call is for. With
        ``cache`` and ``temperature=0``, an identical earlier call's reply is returned from
        the response cache (``result.cached``), and a new reply is stored there. Raises
        ``LLMPermanentError`` (the request is at fault), ``LLMUnavailable`` (every target
        failed, or the deadline came first), ``BudgetRefused`` or ``SpendLimitExceeded``.
        """
        prompt = Prompt(model, messages, max_tokens, temperature)
        return await self.chat_prompt(prompt, scope, model_override=model_override, cache=cache)

    async def chat_prompt(
        self,
        prompt: Prompt,
        scope: CallScope = NO_SCOPE,
        *,
        model_override: str | None = None,
        cache: bool = False,
    ) -> ChatResult:
        """``chat`` of a ``Prompt`` (how ``ctx.llm`` passes its calls on)."""
        call = await self._call(prompt, False, scope, model_override)
        key = None
        if cache and self.cache is not None:
            key = self.cache.key(call.requested, call.messages, call.max_tokens, prompt.temperature)
        if key is None:
            return await self._answer(call)
        assert self.cache is not None
        hit = await self.cache.get(scope.tenant_id, key)
        if hit is not None:
            await self._services.record(
                call.record(Target(hit.provider, hit.model), 1, CallOutcome.CACHED)
            )
            return hit
        result = await self._answer(call)
        self._services.later(self.cache.put(scope.tenant_id, key, result))
        return result

    async def _answer(self, call: Call) -> ChatResult:
        clock = CallClock()
        result = await self._failover.first_success(call, self._complete, clock)
        return dataclasses.replace(result, sent=clock.sent, waited=clock.waited)

    def stream(
        self,
        *,
        model: str,
        messages: Sequence[Message],
        max_tokens: int | None = None,
        temperature: float | None = None,
        scope: CallScope = NO_SCOPE,
        model_override: str | None = None,
        on_chunk: Callable[[], None] | None = None,
    ) -> ChatStream:
        """The reply as it is generated: text chunks, then a last one with the result.

        Retried and failed over like ``chat`` until the first token arrives; a failure
        after that is raised as is. ``on_chunk`` is called for every chunk (``ctx.llm``
        passes the task's heartbeat, so a long stream keeps its lease alive).
        """
        prompt = Prompt(model, messages, max_tokens, temperature)
        return self.stream_prompt(prompt, scope, model_override=model_override, on_chunk=on_chunk)

    def stream_prompt(
        self,
        prompt: Prompt,
        scope: CallScope = NO_SCOPE,
        *,
        model_override: str | None = None,
        on_chunk: Callable[[], None] | None = None,
    ) -> ChatStream:
        """``stream`` of a ``Prompt`` (how ``ctx.llm`` passes its calls on)."""
        prompt.checked_messages()  # a malformed call fails here, not at the first chunk
        self.routes.resolve(prompt.model, model_override)
        opening = functools.partial(self._call, prompt, True, scope, model_override)
        return ChatStream(stream_chunks(opening, self._failover, self.endpoints, on_chunk))

    async def aclose(self) -> None:
        """Settle what is pending, write the call log, close every connection."""
        await self._services.drain()
        budget_close = getattr(self.budget, "aclose", None)
        if budget_close is not None:  # leased slots go back before their buckets close
            try:
                await budget_close()
            except Exception:
                log.exception("llm_budget_close_failed")
        for close in self._closers:
            try:
                await close()
            except Exception:
                log.exception("llm_gateway_close_failed")
        self._closers.clear()
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

    async def _call(
        self, prompt: Prompt, stream: bool, scope: CallScope, model_override: str | None
    ) -> Call:
        checked = prompt.checked_messages()
        policy = None
        if self.policies is not None and scope.tenant_id:
            policy = await self.policies.get(scope.tenant_id, scope.queue)
        if policy is not None and policy.model_override:
            model_override = policy.model_override  # the operator's choice for this tenant
        requested, targets = self.routes.resolve(prompt.model, model_override)
        return Call(
            requested=requested,
            targets=targets,
            messages=checked,
            max_tokens=prompt.max_tokens or self.config.default_max_tokens,
            temperature=prompt.temperature,
            stream=stream,
            scope=scope,
            prompt_estimate=estimate_prompt_tokens(checked),
            policy=policy,
        )

    async def _complete(self, attempt: Attempt) -> ChatResult:
        endpoint = self.endpoints[attempt.target.provider]
        request = attempt.call.request_for(attempt.target, attempt.info.headers)
        done = await endpoint.complete(request)
        result = whole_result(attempt, done.reply, done.latency, done.ttft)
        await attempt.settle(
            CallOutcome.OK,
            AttemptReport(
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                usage_estimated=result.usage_estimated,
                latency=result.latency,
                ttft=result.ttft,
                status=200,
            ),
        )
        return result
