"""The worker's spans on a real worker, PostgreSQL and the mock provider, collected by the
SDK's in-memory exporter: every attempt of a task parents on the stored ``traceparent``,
steps and LLM calls nest under the run, the LLM span has the GenAI attributes and its
``traceparent`` reaches the provider; log lines of a run carry the task and the span."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, get_current_span

from conveyor import App, NewTask, RetryPolicy, TaskContext, TaskState
from conveyor.cli.worker_root import build_gateway, task_hooks
from conveyor.gateway.config import load_gateway_config
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.observability.logging import configure_logging
from conveyor.observability.tracing import Tracing
from conveyor.store.postgres import PostgresStore
from tests.integration.test_llm_accounting import config
from tests.integration.worker_harness import running, settle

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SUBMIT_SPAN = "00f067aa0ba902b7"
MESSAGES = [{"role": "user", "content": "write a slogan for shoes"}]


@pytest.fixture
async def mock() -> AsyncIterator[MockLLM]:
    async with MockLLM(MockConfig()) as server:
        yield server


@pytest.fixture
def spans() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    yield tracing, exporter
    tracing.shutdown()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    saved_config = structlog.get_config()
    saved_handlers = logging.getLogger().handlers[:]
    saved_stderr = sys.stderr
    sys.stderr = buffer = io.StringIO()
    try:
        configure_logging("INFO", json_lines=True)
        yield buffer
    finally:
        sys.stderr = saved_stderr
        structlog.configure(**saved_config)
        logging.getLogger().handlers = saved_handlers


def traced_app() -> App:
    app = App("traced")

    @app.agent("writer", timeout=30, retry=RetryPolicy(max_attempts=2, base=0.01, cap=0.02))
    async def write(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        async def draft() -> str:
            reply = await ctx.llm.chat(model="writer", messages=MESSAGES, max_tokens=20)
            return reply.text

        text = await ctx.step("draft", draft)
        structlog.get_logger("agent").info("drafted", words=len(text.split()))
        if ctx.task.attempt == 1:
            raise RuntimeError("the first attempt fails after its step")
        return {"text": text}

    return app


def by_name(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name.startswith(prefix)), key=lambda s: s.start_time or 0)


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


def parent_id(span: ReadableSpan) -> str | None:
    return None if span.parent is None else format(span.parent.span_id, "016x")


async def test_every_attempt_joins_the_stored_trace_down_to_the_llm_call(
    store: PostgresStore,
    mock: MockLLM,
    spans: tuple[Tracing, InMemorySpanExporter],
    json_logs: io.StringIO,
) -> None:
    tracing, exporter = spans
    app = traced_app()
    await store.create_tenant("acme")
    traceparent = f"00-{TRACE_ID}-{SUBMIT_SPAN}-01"
    made = await store.enqueue(
        NewTask(
            "writer", tenant_id="acme", group_id="g1", trace_context={"traceparent": traceparent}
        )
    )
    gateway = build_gateway(
        load_gateway_config(config(mock.url)), store, app, environ={}, tracing=tracing
    )
    async with gateway, running(app, store, llm=gateway, hooks=task_hooks(tracing)):
        done = await settle(store, made.task_id)
    assert done.state is TaskState.SUCCEEDED and done.attempts == 2

    finished = list(exporter.get_finished_spans())
    assert {format(s.context.trace_id, "032x") for s in finished if s.context} == {TRACE_ID}
    claims, runs = by_name(finished, "claim writer"), by_name(finished, "run writer")
    steps, chats = by_name(finished, "step draft"), by_name(finished, "chat ")
    assert len(finished) == len(claims) + len(runs) + len(steps) + len(chats)
    # each attempt: claim under the submitter's span, run under its claim
    assert [parent_id(c) for c in claims] == [SUBMIT_SPAN, SUBMIT_SPAN]
    assert [parent_id(r) for r in runs] == [span_id(c) for c in claims]
    assert [r.attributes["conveyor.task.attempt"] for r in runs if r.attributes] == [1, 2]
    assert all(r.kind is SpanKind.CONSUMER for r in runs)
    assert runs[0].status.status_code is StatusCode.ERROR
    assert runs[1].status.status_code is StatusCode.UNSET
    # the step ran in the first attempt and was replayed in the second
    assert [parent_id(s) for s in steps] == [span_id(r) for r in runs]
    assert [s.attributes["conveyor.step.replayed"] for s in steps if s.attributes] == [
        False,
        True,
    ]
    # one LLM call, inside the first attempt's step, with the GenAI attributes
    [chat] = chats
    assert parent_id(chat) == span_id(steps[0])
    assert chat.kind is SpanKind.CLIENT
    attributes = dict(chat.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "mock-gpt"
    assert attributes["gen_ai.response.model"] == "mock-gpt"
    assert attributes["gen_ai.usage.input_tokens"] == mock.stats.prompt_tokens > 0
    assert attributes["gen_ai.usage.output_tokens"] == mock.stats.completion_tokens > 0
    assert attributes["gen_ai.response.finish_reasons"] in (("stop",), ("length",))
    # the provider was sent the LLM span's own context
    assert mock.stats.traceparents == [f"00-{TRACE_ID}-{span_id(chat)}-01"]

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    drafted = [line for line in lines if line.get("event") == "drafted"]
    assert [line["attempt"] for line in drafted] == [1, 2]
    for line, step in zip(drafted, steps, strict=True):
        assert line["task_id"] == made.task_id and line["tenant_id"] == "acme"
        assert line["queue"] == "writer" and line["group_id"] == "g1"
        assert line["trace_id"] == TRACE_ID
        assert line["span_id"] == parent_id(step)  # logged in the run, after its step


async def test_a_task_without_a_traceparent_starts_a_trace_of_its_own(
    store: PostgresStore, spans: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = spans
    app = App("untraced")

    @app.agent("echo")
    async def echo(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    made = await store.enqueue(NewTask("echo", {"n": 1}))
    async with running(app, store, hooks=task_hooks(tracing)):
        assert (await settle(store, made.task_id)).state is TaskState.SUCCEEDED
    claim, run = by_name(list(exporter.get_finished_spans()), "")
    assert claim.parent is None and parent_id(run) == span_id(claim)


async def test_an_unsampled_task_exports_nothing_but_carries_its_context(
    store: PostgresStore,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    app = App("unsampled")
    seen: list[SpanContext] = []

    @app.agent("echo")
    async def echo(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        await ctx.step("look", lambda: seen.append(get_current_span().get_span_context()))
        return payload

    made = await store.enqueue(NewTask("echo", {"n": 1}))
    async with running(app, store, hooks=task_hooks(tracing)):
        assert (await settle(store, made.task_id)).state is TaskState.SUCCEEDED
    tracing.shutdown()
    assert exporter.get_finished_spans() == ()
    [context] = seen  # the step's own, under the claim's: valid, and not sampled
    assert context.is_valid and not context.trace_flags.sampled
