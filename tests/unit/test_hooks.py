"""The hook chains: ``around_task`` nests first-outermost, LLM hooks run before in order and
after in reverse, only overridden methods are called, and a failing LLM hook fails nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.app import App, CallNext, TaskHook
from conveyor.errors import ConfigurationError
from conveyor.gateway.accounting.records import CallOutcome, CallRecord
from conveyor.gateway.chat import ChatChunk, ChatRequest
from conveyor.gateway.config import load_gateway_config
from conveyor.gateway.endpoint import Endpoint
from conveyor.gateway.hooks import AttemptInfo, HookChain, LLMHook
from conveyor.gateway.model_routes import Target
from conveyor.gateway.pools import HostPools
from conveyor.gateway.scope import CallScope
from conveyor.worker.task_hooks import around_hooks, run_around


class Logged(TaskHook):
    def __init__(self, name: int, log: list[Any], *, replace: Any = None) -> None:
        self.name = name
        self.log = log
        self.replace = replace

    async def around_task(self, ctx: Any, call_next: CallNext) -> Any:
        self.log.append(("in", self.name, ctx))
        result = await call_next()
        self.log.append(("out", self.name, result))
        return result if self.replace is None else self.replace


class Silent(TaskHook):
    """Overrides nothing: the worker leaves it out of the chain."""


@given(st.integers(min_value=0, max_value=8))
async def test_around_task_nests_the_first_hook_outermost(count: int) -> None:
    log: list[Any] = []
    hooks = [Logged(i, log) for i in range(count)]

    async def handler() -> str:
        log.append(("handler",))
        return "result"

    assert await run_around(hooks, "ctx", handler) == "result"
    opened = [("in", i, "ctx") for i in range(count)]
    closed = [("out", i, "result") for i in reversed(range(count))]
    assert log == [*opened, ("handler",), *closed]


async def test_a_hook_may_replace_the_result_seen_by_the_hooks_outside_it() -> None:
    log: list[Any] = []
    hooks = [Logged(0, log), Logged(1, log, replace="changed")]

    async def handler() -> str:
        return "original"

    assert await run_around(hooks, None, handler) == "changed"
    assert log[-1] == ("out", 0, "changed")


def test_the_chain_keeps_only_hooks_that_wrap_and_refuses_other_objects() -> None:
    kept = Logged(0, [])
    assert around_hooks([Silent(), kept, Silent()]) == (kept,)
    with pytest.raises(TypeError, match="TaskHook"):
        around_hooks([object()])  # type: ignore[list-item]


# --- LLM hooks -------------------------------------------------------------------------------


def info() -> AttemptInfo:
    return AttemptInfo(CallScope(tenant_id="t", task_id=1), "writer", Target("p", "m"), 1, 1, True)


def record() -> CallRecord:
    return CallRecord("t", 1, None, "writer", "p", "m", 1, CallOutcome.OK, stream=True)


class Recording(LLMHook):
    def __init__(self, name: int, log: list[Any]) -> None:
        self.name = name
        self.log = log

    async def before_attempt(self, attempt: AttemptInfo) -> None:
        self.log.append(("before", self.name))
        attempt.headers[f"x-hook-{self.name}"] = "1"

    async def after_attempt(self, record: CallRecord, attempt: AttemptInfo | None) -> None:
        self.log.append(("after", self.name))

    def on_chunk(self, chunk: ChatChunk, attempt: AttemptInfo) -> None:
        self.log.append(("chunk", self.name))


class AfterOnly(LLMHook):
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    async def after_attempt(self, record: CallRecord, attempt: AttemptInfo | None) -> None:
        self.log.append(("after", "only"))


class Broken(LLMHook):
    async def before_attempt(self, attempt: AttemptInfo) -> None:
        raise RuntimeError("broken before")

    async def after_attempt(self, record: CallRecord, attempt: AttemptInfo | None) -> None:
        raise RuntimeError("broken after")

    def on_chunk(self, chunk: ChatChunk, attempt: AttemptInfo) -> None:
        raise RuntimeError("broken chunk")


@given(st.integers(min_value=0, max_value=6))
async def test_llm_hooks_run_before_in_order_and_after_in_reverse(count: int) -> None:
    log: list[Any] = []
    chain = HookChain([Recording(i, log) for i in range(count)])
    attempt = info()
    await chain.before_attempt(attempt)
    chain.on_chunk(ChatChunk("hi"), attempt)
    await chain.after_attempt(record(), attempt)
    assert log == [
        *[("before", i) for i in range(count)],
        *[("chunk", i) for i in range(count)],
        *[("after", i) for i in reversed(range(count))],
    ]
    assert set(attempt.headers) == {f"x-hook-{i}" for i in range(count)}


async def test_only_overridden_methods_are_called_and_failures_are_contained() -> None:
    log: list[Any] = []
    chain = HookChain([Broken(), AfterOnly(log), Recording(1, log)])
    assert [type(h) for h in chain.before] == [Broken, Recording]
    assert [type(h) for h in chain.after] == [Recording, AfterOnly, Broken]
    attempt = info()
    await chain.before_attempt(attempt)  # Broken raises: logged, the next still runs
    chain.on_chunk(ChatChunk("hi"), attempt)
    await chain.after_attempt(record(), None)
    assert log == [("before", 1), ("chunk", 1), ("after", 1), ("after", "only")]
    assert not HookChain().before and not HookChain().after and not HookChain().chunk
    with pytest.raises(TypeError, match="LLMHook"):
        HookChain([object()])  # type: ignore[list-item]


async def test_hook_headers_go_out_but_never_replace_the_providers_own() -> None:
    config = load_gateway_config(
        {"providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9", "api_key": "k"}}}
    )
    pools = HostPools(config.providers)
    endpoint = Endpoint.for_provider(
        "p",
        config.providers["p"],
        pools.for_provider(config.providers["p"]),
        config.timeouts.layered(),
        "secret",
    )
    request = ChatRequest(
        "m",
        ({"role": "user", "content": "hi"},),
        8,
        headers=(("traceparent", "00-abc-def-01"), ("authorization", "Bearer stolen")),
    )
    async with httpx.AsyncClient() as client:
        built = endpoint._build(client, request)
    await pools.aclose()
    assert built.headers["traceparent"] == "00-abc-def-01"
    assert built.headers.get_list("authorization") == ["Bearer secret"]


# --- registration ----------------------------------------------------------------------------


class Both(TaskHook, LLMHook):
    """One plugin on both chains (a tracer opens a task span and attempt spans)."""


def test_an_app_takes_task_hooks_llm_hooks_and_plugins_that_are_both() -> None:
    task, both, llm = Logged(0, []), Both(), Recording(0, [])
    app = App("hooked", hooks=[task])
    assert app.hook(both) is both and app.hook(llm) is llm
    assert app.hooks == [task, both, llm]
    assert app.task_hooks == (task, both)
    with pytest.raises(ConfigurationError, match=r"TaskHook or a conveyor\.gateway\.LLMHook"):
        app.hook(object())  # type: ignore[type-var]


# --- what crosses to an isolated child --------------------------------------------------------


def test_a_record_survives_the_trip_through_json() -> None:
    original = CallRecord(
        "t", 9, "g", "writer", "p", "m", 2, CallOutcome.RATE_LIMITED, stream=False,
        prompt_tokens=5, latency=0.5, ttft=None, status=429, error="slow down",
        at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )  # fmt: skip
    assert CallRecord.from_json(original.to_json()) == original


def test_a_portable_config_builds_the_same_config_with_its_keys() -> None:
    config = load_gateway_config(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://x", "api_key": "sk-1"}},
            "aliases": {"writer": ["p/m"]},
            "default_max_tokens": 77,
        }
    )
    again = load_gateway_config(config.portable())
    assert again == config
    assert again.api_keys({}) == {"p": "sk-1"}
