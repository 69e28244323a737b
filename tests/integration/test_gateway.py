"""The LLM gateway against the mock provider over loopback HTTP: no fakes, real sockets.

Every fault here is the mock's own (scripted 429/503/reset, stalls, slow starts); the
assertions read what the mock saw (its stats), so a retry that was not sent, or a breaker
that did not fail fast, shows up as a wrong request count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.core.breaker import BreakerState
from conveyor.errors import (
    BudgetRefused,
    ConfigurationError,
    LLMPermanentError,
    LLMTimeout,
    LLMUnavailable,
    PermanentError,
)
from conveyor.gateway import (
    BudgetAsk,
    CallCounters,
    CallOutcome,
    CallScope,
    ChatChunk,
    Gateway,
    Reservation,
    load_gateway_config,
)
from conveyor.mock_llm import MockConfig, MockLLM, count_prompt_tokens, derived_reply
from conveyor.store.records import ClaimedTask
from conveyor.worker.context import TaskContext

PROMPT = "write a slogan for shoes"
MESSAGES = [
    {"role": "system", "content": "You are a copywriter."},
    {"role": "user", "content": PROMPT},
]
PROMPT_TOKENS = count_prompt_tokens(["You are a copywriter.", PROMPT])
MODELS = {"openai": "mock-gpt", "anthropic": "mock-claude", "ollama": "mock-llama"}
# Short layers so the timing tests take seconds; nested as the config requires.
TIMEOUTS = {"connect": 1.0, "ttft": 1.0, "gap": 1.0, "total": 20.0}
FAST_RETRY = {"max_attempts": 3, "base": 0.01, "cap": 0.05}


def config(urls: dict[str, str], **changes: Any) -> dict[str, Any]:
    """Providers named after their kind (``backup`` is a second OpenAI), with aliases."""
    kinds = {"openai": "openai", "anthropic": "anthropic", "ollama": "ollama", "backup": "openai"}
    providers = {
        name: {"kind": kinds[name], "base_url": url, "api_key": "test-key", "max_concurrency": 8}
        for name, url in urls.items()
    }
    return {
        "providers": providers,
        "aliases": {"writer": [f"{name}/{MODELS.get(name, 'mock-gpt')}" for name in urls]},
        "timeouts": TIMEOUTS,
        "retry": FAST_RETRY,
        **changes,
    }


@pytest.fixture
async def mock() -> AsyncIterator[MockLLM]:
    async with MockLLM() as server:
        yield server


@pytest.fixture
async def gateway(mock: MockLLM) -> AsyncIterator[Gateway]:
    urls = dict.fromkeys(("openai", "anthropic", "ollama"), mock.url)
    async with Gateway(load_gateway_config(config(urls))) as built:
        yield built


async def collect(stream: AsyncIterator[ChatChunk]) -> list[ChatChunk]:
    return [chunk async for chunk in stream]


# --- the three APIs -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
async def test_a_whole_reply_with_usage(mock: MockLLM, gateway: Gateway, provider: str) -> None:
    result = await gateway.chat(model=f"{provider}/{MODELS[provider]}", messages=MESSAGES)
    assert result.text == derived_reply(PROMPT, 16)
    assert (result.prompt_tokens, result.completion_tokens) == (PROMPT_TOKENS, 16)
    assert (result.finish_reason, result.provider, result.model) == (
        "stop",
        provider,
        MODELS[provider],
    )
    assert not result.usage_estimated and result.attempts == 1
    assert 0 < result.ttft <= result.latency
    cut = await gateway.chat(
        model=f"{provider}/{MODELS[provider]}", messages=MESSAGES, max_tokens=5
    )
    assert (cut.finish_reason, cut.completion_tokens) == ("length", 5)
    assert mock.stats.by_api == {provider: 2}


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
async def test_a_stream_with_usage(mock: MockLLM, gateway: Gateway, provider: str) -> None:
    chunks = await collect(
        gateway.stream(model=f"{provider}/{MODELS[provider]}", messages=MESSAGES)
    )
    *deltas, last = chunks
    assert len(deltas) == 16 and not any(c.done for c in deltas)
    assert last.text == "" and last.result is not None
    assert "".join(c.text for c in deltas) == last.result.text == derived_reply(PROMPT, 16)
    assert (last.result.prompt_tokens, last.result.completion_tokens) == (PROMPT_TOKENS, 16)
    assert last.result.finish_reason == "stop" and not last.result.usage_estimated
    assert mock.stats.by_api == {provider: 1}


async def test_closing_a_stream_early_frees_its_connection(mock: MockLLM, gateway: Gateway) -> None:
    mock.configure(tokens_per_second=50)
    async with gateway.stream(model="openai/mock-gpt", messages=MESSAGES) as stream:
        async for chunk in stream:
            assert chunk.text
            break
    assert gateway.pool_of("openai").in_use == 0
    counters = gateway.recorder
    assert isinstance(counters, CallCounters) and counters.last is not None
    assert counters.last.outcome is CallOutcome.ABANDONED
    assert counters.last.completion_tokens == 1


async def test_a_tenant_override_replaces_the_model(mock: MockLLM, gateway: Gateway) -> None:
    result = await gateway.chat(
        model="writer", messages=MESSAGES, model_override="ollama/mock-llama"
    )
    assert (result.provider, result.model) == ("ollama", "mock-llama")
    assert mock.stats.by_api == {"ollama": 1}


# --- retries --------------------------------------------------------------------------------


async def test_429_is_retried_no_earlier_than_retry_after(mock: MockLLM, gateway: Gateway) -> None:
    mock.configure(script=["429", "ok"], retry_after=1.0)
    started = time.monotonic()
    result = await gateway.chat(model="openai/mock-gpt", messages=MESSAGES)
    elapsed = time.monotonic() - started
    assert result.attempts == 2 and mock.stats.by_status == {"429": 1, "200": 1}
    assert 1.0 <= elapsed < 6.0  # the feature is the wait: at least Retry-After, not forever


async def test_503_backs_off_then_succeeds(mock: MockLLM, gateway: Gateway) -> None:
    mock.configure(script=["503", "503", "ok"])
    result = await gateway.chat(model="anthropic/mock-claude", messages=MESSAGES)
    assert result.attempts == 3 and mock.stats.requests_total == 3
    counters = gateway.recorder
    assert isinstance(counters, CallCounters)
    assert counters.count(CallOutcome.SERVER_ERROR) == 2 and counters.count(CallOutcome.OK) == 1


async def test_a_connection_reset_is_retried(mock: MockLLM, gateway: Gateway) -> None:
    mock.configure(script=["reset", "ok"])
    result = await gateway.chat(model="ollama/mock-llama", messages=MESSAGES)
    assert result.attempts == 2 and mock.stats.injected == {"reset": 1}


@pytest.mark.parametrize("status", ["400", "401"])
async def test_a_permanent_error_is_neither_retried_nor_failed_over(
    mock: MockLLM, gateway: Gateway, status: str
) -> None:
    mock.configure(script=[status])
    with pytest.raises(LLMPermanentError) as caught:
        await gateway.chat(model="writer", messages=MESSAGES)  # chain: openai, anthropic, ollama
    assert caught.value.status == int(status) and caught.value.provider == "openai"
    assert isinstance(caught.value, PermanentError)  # a task that lets it through fails for good
    assert mock.stats.requests_total == 1 and mock.stats.by_api == {"openai": 1}


# --- the breaker and the fallback chain -----------------------------------------------------


async def test_the_breaker_opens_fails_fast_falls_back_and_recovers() -> None:
    async with MockLLM(MockConfig(fault_rates={"503": 1.0})) as primary, MockLLM() as backup:
        settings = config(
            {"openai": primary.url, "backup": backup.url},
            retry={"max_attempts": 1},
            breaker={"window": 4, "min_calls": 4, "failure_rate": 0.5, "cool_down": 0.5},
        )
        async with Gateway(load_gateway_config(settings)) as gateway:
            changes: list[BreakerState] = []
            gateway.breakers.on_change(lambda provider, model, state: changes.append(state))
            for _ in range(4):  # each fails at the primary and is served by the backup
                assert (await gateway.chat(model="writer", messages=MESSAGES)).provider == "backup"
            assert primary.stats.requests_total == 4
            assert gateway.breakers.state("openai", "mock-gpt") is BreakerState.OPEN

            for _ in range(3):  # open: the primary is skipped without a request
                assert (await gateway.chat(model="writer", messages=MESSAGES)).provider == "backup"
            assert primary.stats.requests_total == 4
            assert backup.stats.requests_total == 7
            counters = gateway.recorder
            assert isinstance(counters, CallCounters)
            assert counters.count(CallOutcome.CIRCUIT_OPEN, provider="openai") == 3

            primary.configure(fault_rates={})
            await asyncio.sleep(0.6)  # the cool-down passes: one probe goes to the primary
            probe = await gateway.chat(model="writer", messages=MESSAGES)
            assert probe.provider == "openai" and primary.stats.requests_total == 5
            assert gateway.breakers.state("openai", "mock-gpt") is BreakerState.CLOSED
            assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


async def test_every_target_failing_lists_each(mock: MockLLM) -> None:
    mock.configure(fault_rates={"502": 1.0})
    settings = config(dict.fromkeys(("openai", "ollama"), mock.url), retry={"max_attempts": 2})
    async with Gateway(load_gateway_config(settings)) as gateway:
        with pytest.raises(LLMUnavailable) as caught:
            await gateway.chat(model="writer", messages=MESSAGES)
    failures = caught.value.failures
    assert [(f.provider, f.attempts) for f in failures] == [("openai", 2), ("ollama", 2)]
    assert "HTTP 502" in str(caught.value) and mock.stats.requests_total == 4


# --- layered timeouts -----------------------------------------------------------------------


async def test_a_stalled_stream_fails_at_the_gap_limit(mock: MockLLM, gateway: Gateway) -> None:
    mock.configure(script=["stall"], stall_after_tokens=2)
    received: list[str] = []
    started = time.monotonic()
    with pytest.raises(LLMTimeout) as caught:
        async for chunk in gateway.stream(model="openai/mock-gpt", messages=MESSAGES):
            received.append(chunk.text)
    elapsed = time.monotonic() - started
    assert caught.value.layer == "gap" and len(received) == 2
    assert elapsed < 10.0  # the gap (1 s) fired, not the total deadline (20 s)
    assert mock.stats.requests_total == 1  # text was shown: a stream is not retried after it


async def test_a_slow_start_fails_at_the_ttft_limit(mock: MockLLM) -> None:
    mock.configure(script=["slow_start"], slow_start_seconds=5.0)
    settings = config({"openai": mock.url}, retry={"max_attempts": 1})
    async with Gateway(load_gateway_config(settings)) as gateway:
        started = time.monotonic()
        with pytest.raises(LLMUnavailable) as caught:
            await gateway.chat(model="openai/mock-gpt", messages=MESSAGES)
        elapsed = time.monotonic() - started
    [failure] = caught.value.failures
    assert isinstance(failure.error, LLMTimeout) and failure.error.layer == "ttft"
    assert elapsed < 4.0  # the ttft (1 s) fired, not the 5 s slow start


# --- connection pool ------------------------------------------------------------------------


async def test_concurrency_toward_a_host_never_exceeds_its_pool() -> None:
    limit = 3
    async with MockLLM(MockConfig(latency=0.05)) as mock:
        settings = config({"openai": mock.url})
        settings["providers"]["openai"]["max_concurrency"] = limit
        async with Gateway(load_gateway_config(settings)) as gateway:
            calls = [
                gateway.chat(model="openai/mock-gpt", messages=MESSAGES) for _ in range(5 * limit)
            ]
            results = await asyncio.gather(*calls)
        assert len(results) == 5 * limit and mock.stats.requests_total == 5 * limit
        assert 1 < mock.stats.max_in_flight <= limit


# --- seams: budget, ctx.llm -----------------------------------------------------------------


class RecordingBudget:
    """A budget that admits, or refuses, and remembers what it was asked."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.reserved: list[tuple[str | None, str, int]] = []
        self.settled: list[int] = []

    async def reserve(self, ask: BudgetAsk) -> Reservation:
        if self.refuse:
            raise BudgetRefused(ask.tenant_id, ask.provider, "over the monthly spend limit")
        self.reserved.append((ask.tenant_id, ask.provider, ask.estimated_tokens))
        return Reservation(ask, ("held",))  # something to settle

    async def settle(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        self.settled.append(prompt_tokens + completion_tokens)


async def test_the_budget_is_asked_around_every_attempt(mock: MockLLM) -> None:
    mock.configure(script=["503", "ok"])
    budget = RecordingBudget()
    async with Gateway(load_gateway_config(config({"openai": mock.url})), budget=budget) as gw:
        result = await gw.chat(
            model="openai/mock-gpt", messages=MESSAGES, scope=CallScope(tenant_id="acme")
        )
    [(tenant, provider, estimate), again] = budget.reserved
    assert (tenant, provider) == ("acme", "openai") and again == budget.reserved[0]
    assert estimate > 1024  # the prompt estimate plus the default max_tokens
    assert budget.settled == [0, result.total_tokens]  # the 503 used nothing


async def test_a_budget_refusal_sends_nothing_and_spares_the_breaker(mock: MockLLM) -> None:
    settings = config({"openai": mock.url}, breaker={"window": 1, "min_calls": 1})
    async with Gateway(load_gateway_config(settings), budget=RecordingBudget(refuse=True)) as gw:
        for _ in range(2):
            with pytest.raises(BudgetRefused, match="spend limit"):
                await gw.chat(model="openai/mock-gpt", messages=MESSAGES)
        assert gw.breakers.state("openai", "mock-gpt") is BreakerState.CLOSED
    assert mock.stats.requests_total == 0


def claimed(task_id: int = 7) -> ClaimedTask:
    now = datetime.now(UTC)
    return ClaimedTask(
        id=task_id,
        tenant_id="acme",
        queue="copywriter",
        priority=0,
        attempts=1,
        max_attempts=3,
        timeout_seconds=None,
        lease_token=1,
        lease_expires_at=now,
        parent_id=None,
        group_id=None,
        payload={},
        trace_context=None,
        created_at=now,
    )


async def test_ctx_llm_fills_in_the_task_and_streams_keep_it_alive(
    mock: MockLLM, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = TaskContext(claimed(), llm=gateway)
    beats: list[float] = []
    monkeypatch.setattr(ctx, "heartbeat", lambda: beats.append(time.monotonic()))
    result = await ctx.llm.chat(model="openai/mock-gpt", messages=MESSAGES)
    chunks = await collect(ctx.llm.stream(model="ollama/mock-llama", messages=MESSAGES))
    assert result.completion_tokens == 16 and len(beats) == 1 + len(chunks)
    counters = gateway.recorder
    assert isinstance(counters, CallCounters) and counters.last is not None
    assert (counters.last.tenant_id, counters.last.task_id) == ("acme", 7)


async def test_ctx_llm_without_a_gateway_says_what_to_set() -> None:
    with pytest.raises(ConfigurationError, match="set CONVEYOR_LLM_CONFIG"):
        _ = TaskContext(claimed()).llm
