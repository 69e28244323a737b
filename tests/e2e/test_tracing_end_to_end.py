"""One task, one trace, across real processes: an API and a worker export their spans over
OTLP/HTTP to a collector stand-in served by this test; a task submitted with a
``traceparent`` yields one connected trace from the API request to the LLM call, its retry
included, and the provider receives the LLM span's ``traceparent``."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest

from conveyor import Client
from conveyor.core.api_keys import new_key
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess
from tests.e2e.otlp_receiver import ExportedSpan, OtlpReceiver
from tests.e2e.test_api_end_to_end import llm_config
from tests.e2e.test_worker_process import WorkerProcess

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
# OTLP span kinds
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5


def tracing_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def named(spans: list[ExportedSpan], name: str) -> list[ExportedSpan]:
    return [s for s in spans if s.name == name]


@pytest.mark.timeout(120)
async def test_one_task_is_one_trace_from_the_request_to_the_llm_call(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    await store.create_tenant("acme")
    issued = new_key(secrets.token_bytes)
    await store.create_api_key(issued.key_id, "acme", issued.secret_hash, "e2e")
    receiver = OtlpReceiver()
    api = ApiProcess(database_dsn, tmp_path / "api.log", **tracing_env(receiver))
    try:
        async with MockLLM(MockConfig()) as mock:
            config = llm_config(tmp_path / "llm.json", mock.url)
            env = {"CONVEYOR_LLM_CONFIG": str(config), **tracing_env(receiver)}
            worker = WorkerProcess(database_dsn, tmp_path / "worker.log", env=env)
            try:
                api.wait_ready()
                deadline = time.monotonic() + 30
                while not await store.queue_declarations(["traced"]):
                    assert time.monotonic() < deadline, worker.output
                    await asyncio.sleep(0.1)
                with Client(api.url, issued.token) as client:
                    made = client.submit(
                        "traced",
                        {"fail_once": True},
                        traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                    )
                    deadline = time.monotonic() + 60
                    while (view := client.get(made.id)).state.value != "succeeded":
                        assert view.state.value not in ("dead", "cancelled"), view
                        assert time.monotonic() < deadline, worker.output
                        await asyncio.sleep(0.2)
            finally:
                assert worker.stop() == 0, worker.output  # exports what it still holds
            sent_on = list(mock.stats.traceparents)
    finally:
        api.stop()  # its lifespan's end exports what it still holds
        receiver.close()
    assert view.attempts == 2

    spans = receiver.trace(CLIENT_TRACE)
    by_id = {s.span_id: s for s in spans}
    [request] = [s for s in spans if s.parent_id == CLIENT_SPAN]
    assert (request.service, request.kind, request.name) == (
        "conveyor-api",
        SERVER,
        "POST /v1/tasks",
    )
    assert request.attributes["http.response.status_code"] == 201
    assert request.attributes["conveyor.tenant_id"] == "acme"
    [send] = named(spans, "send traced")
    assert (send.service, send.kind, send.parent_id) == ("conveyor-api", PRODUCER, request.span_id)
    assert send.attributes["messaging.message.id"] == str(made.id)
    claims, runs = named(spans, "claim traced"), named(spans, "run traced")
    steps, [chat] = named(spans, "step draft"), named(spans, "chat mock-gpt")
    assert len(claims) == len(runs) == len(steps) == 2  # both attempts, one trace
    assert {c.parent_id for c in claims} == {send.span_id}
    assert {r.parent_id for r in runs} == {c.span_id for c in claims}
    assert {s.parent_id for s in steps} == {r.span_id for r in runs}
    assert all(s.service == "conveyor-worker" for s in [*claims, *runs, *steps, chat])
    assert sorted(r.attributes["conveyor.task.attempt"] for r in runs) == [1, 2]

    # the chain from the LLM call up to the API request, link by link
    chain = [chat]
    while chain[-1].parent_id in by_id:
        chain.append(by_id[chain[-1].parent_id])
    assert [s.name for s in chain] == [
        "chat mock-gpt",
        "step draft",
        "run traced",
        "claim traced",
        "send traced",
        "POST /v1/tasks",
    ]
    assert chain[2].attributes["conveyor.task.attempt"] == 1
    assert chat.kind == CLIENT
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "mock-gpt"
    assert chat.attributes["gen_ai.response.model"] == "mock-gpt"
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    assert chat.attributes["gen_ai.response.finish_reasons"] in (("stop",), ("length",))
    # and the provider was handed the LLM span's context
    assert sent_on == [f"00-{CLIENT_TRACE}-{chat.span_id}-01"]
