"""Hooks and the composition root with a real worker, PostgreSQL and the mock provider: an
``around_task`` hook and the attempt hooks see the right task and call, a worker with a
broken LLM configuration refuses to start naming the setting, and an isolated child gets its
gateway from the worker."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor import App, NewTask, PermanentError, TaskContext, TaskState
from conveyor.app import CallNext, TaskHook
from conveyor.cli.worker_root import build_gateway, serve
from conveyor.errors import ConfigurationError
from conveyor.gateway import AttemptInfo, CallOutcome, CallRecord, ChatChunk, LLMHook, Target
from conveyor.gateway.config import load_gateway_config
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.observability.gateway_metrics import GatewayMetrics
from conveyor.settings import Settings
from conveyor.store.postgres import PostgresStore
from conveyor.worker.options import WorkerOptions
from tests.integration import isolated_agents
from tests.integration.test_llm_accounting import config, this_month
from tests.integration.worker_harness import running, settle

MESSAGES = [{"role": "user", "content": "write a slogan for shoes"}]


class Observer(TaskHook, LLMHook):
    """A plugin on every hook, keeping what it was shown."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int, Any]] = []
        self.sent: list[AttemptInfo] = []
        self.settled: list[tuple[CallRecord, AttemptInfo | None]] = []
        self.chunks: list[tuple[str, int | None]] = []

    async def around_task(self, ctx: TaskContext, call_next: CallNext) -> Any:
        self.runs.append(("start", ctx.task.id, ctx.task.queue))
        result = await call_next()
        self.runs.append(("end", ctx.task.id, result))
        return result

    async def before_attempt(self, attempt: AttemptInfo) -> None:
        attempt.headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        self.sent.append(attempt)

    async def after_attempt(self, record: CallRecord, attempt: AttemptInfo | None) -> None:
        self.settled.append((record, attempt))

    def on_chunk(self, chunk: ChatChunk, attempt: AttemptInfo) -> None:
        self.chunks.append((chunk.text, attempt.scope.task_id))


@pytest.fixture
async def mock() -> AsyncIterator[MockLLM]:
    async with MockLLM(MockConfig()) as server:
        yield server


async def test_hooks_see_each_run_and_each_attempt_with_its_task_and_call(
    store: PostgresStore, mock: MockLLM
) -> None:
    observer = Observer()
    app = App("hooked", hooks=[observer])

    @app.agent("copywriter", timeout=30)
    async def write(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await ctx.llm.chat(model="writer", messages=MESSAGES, max_tokens=20)
        streamed = [c.text async for c in ctx.llm.stream(model="writer", messages=MESSAGES)]
        return {"text": reply.text, "streamed": "".join(streamed)}

    await store.create_tenant("acme")
    task = await store.enqueue(NewTask("copywriter", tenant_id="acme"))
    gateway = build_gateway(load_gateway_config(config(mock.url)), store, app, environ={})
    async with gateway:
        # the root puts the metrics plugin first, then the App's LLM hooks
        assert [type(h) for h in gateway.hooks.hooks] == [GatewayMetrics, Observer]
        async with running(app, store, llm=gateway):
            done = await settle(store, task.task_id)

    assert done.state is TaskState.SUCCEEDED
    assert observer.runs == [
        ("start", task.task_id, "copywriter"),
        ("end", task.task_id, done.result),
    ]
    assert [(a.scope.task_id, a.scope.tenant_id, a.requested) for a in observer.sent] == [
        (task.task_id, "acme", "writer")
    ] * 2
    assert [(a.target, a.stream) for a in observer.sent] == [
        (Target("openai", "mock-gpt"), False),
        (Target("openai", "mock-gpt"), True),
    ]
    # after_attempt: the record of each attempt, with the very object before_attempt saw
    assert [r.outcome for r, _ in observer.settled] == [CallOutcome.OK, CallOutcome.OK]
    assert all(r.task_id == task.task_id for r, _ in observer.settled)
    assert [a for _, a in observer.settled] == observer.sent
    assert all(a is b for (_, a), b in zip(observer.settled, observer.sent, strict=True))
    # every chunk of the stream, the last (the result) included, for this task
    assert done.result is not None
    texts = [text for text, _ in observer.chunks]
    assert "".join(texts) == done.result["streamed"] and texts[-1] == ""
    assert {task_id for _, task_id in observer.chunks} == {task.task_id}


class Gatekeeper(TaskHook):
    async def around_task(self, ctx: TaskContext, call_next: CallNext) -> Any:
        if ctx.task.tenant_id == "blocked":
            raise PermanentError("tenant blocked by a hook")
        return await call_next()


async def test_a_hook_that_raises_fails_the_run_as_the_handler_would(store: PostgresStore) -> None:
    app = App("gated")
    handled: list[int] = []

    @app.agent("copywriter")
    async def write(ctx: TaskContext, payload: dict[str, Any]) -> int:
        handled.append(ctx.task.id)
        return ctx.task.id

    await store.create_tenant("blocked")
    await store.create_tenant("fine")
    blocked = await store.enqueue(NewTask("copywriter", tenant_id="blocked"))
    fine = await store.enqueue(NewTask("copywriter", tenant_id="fine"))
    async with running(app, store, hooks=[Gatekeeper()]):
        dead = await settle(store, blocked.task_id)
        done = await settle(store, fine.task_id)
    assert dead.state is TaskState.DEAD and "blocked by a hook" in str(dead.last_error)
    assert done.state is TaskState.SUCCEEDED and handled == [fine.task_id]


def app_with_an_agent() -> App:
    app = App("refused")

    @app.agent("copywriter")
    async def write(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    return app


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"CONVEYOR_LLM_CONFIG": "/nonexistent/llm.toml"}, "/nonexistent/llm.toml"),
        ({"CONVEYOR_LLM_CONFIG": '{"providers": 3}'}, "providers"),
        (
            {
                "CONVEYOR_LLM_CONFIG": '{"providers": {"openai": {"kind": "openai", '
                '"base_url": "https://api.openai.com", "api_key_env": "NO_SUCH_KEY"}}}'
            },
            "NO_SUCH_KEY",
        ),
    ],
)
async def test_a_worker_with_a_broken_llm_configuration_refuses_to_start(
    environ: dict[str, str], named: str
) -> None:
    # A database nobody listens on: the refusal must come before the worker waits for it.
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:9/none")
    with pytest.raises(ConfigurationError) as refused:
        await serve(app_with_an_agent(), settings, WorkerOptions(), migrate=False, environ=environ)
    message = str(refused.value)
    assert "CONVEYOR_LLM_CONFIG" in message and named in message
    assert "does not start" in message


async def test_an_isolated_child_builds_its_gateway_from_what_the_worker_hands_it(
    store: PostgresStore, mock: MockLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    observer = Observer()
    app = App("isolated-llm", hooks=[observer])
    app.agent("iso", isolation="process", timeout=60)(isolated_agents.ask_model)
    await store.create_tenant("acme")
    task = await store.enqueue(NewTask("iso", tenant_id="acme"))
    # The child inherits this; were it to read the setting instead of what it is handed,
    # it would fail on the missing file.
    monkeypatch.setenv("CONVEYOR_LLM_CONFIG", "/not/read/by/the/child.toml")
    gateway = build_gateway(load_gateway_config(config(mock.url)), store, app, environ={})
    async with gateway, running(app, store, llm=gateway):
        done = await settle(store, task.task_id, timeout=60)
    assert done.state is TaskState.SUCCEEDED, done.last_error
    assert done.result is not None and done.result["pid"] != os.getpid()
    assert mock.stats.requests_total == 1
    # the child's attempt came back to the worker's gateway: its hooks and llm_calls
    [(record, attempt)] = observer.settled
    assert (record.task_id, record.outcome, attempt) == (task.task_id, CallOutcome.OK, None)
    [usage] = await store.llm_usage("acme", this_month(), task_id=task.task_id)
    assert usage.attempts == 1 and usage.completion_tokens > 0
