"""Declarative agents on a real PostgreSQL: versions in the store, a worker's registry taking
new versions, and a run through the gateway to the mock LLM with its chunks on the hooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor import App
from conveyor.cli.agent_model_check import model_check
from conveyor.cli.worker_root import build_gateway
from conveyor.core.agent_definition import AgentDefinition
from conveyor.core.reply_schema import REPAIR_HEADING
from conveyor.errors import ConfigurationError
from conveyor.gateway.chat import ChatChunk
from conveyor.gateway.config import load_gateway_config
from conveyor.gateway.hooks import AttemptInfo, LLMHook
from conveyor.mock_llm import MockConfig, MockLLM, ReplyRule
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from conveyor.worker.declarative_registry import DeclarativeAgents
from tests.integration.test_llm_accounting import config, this_month
from tests.integration.worker_harness import running, settle

SCHEMA = {"type": "object", "required": ["title"], "properties": {"title": {"type": "string"}}}


def document(**changes: Any) -> dict[str, Any]:
    return {"model": "writer", "prompt_template": "Title for {{ topic }}", **changes}


def definition(**changes: Any) -> AgentDefinition:
    return AgentDefinition.from_document("titler", document(**changes))


# -- the store -----------------------------------------------------------------------------


async def test_each_put_is_a_new_version_and_an_unchanged_file_adds_none(
    store: PostgresStore,
) -> None:
    first = await store.put_agent_definition("titler", document())
    second = await store.put_agent_definition("titler", document(temperature=0.5))
    same = await store.put_agent_definition(
        "titler", document(temperature=0.5), source="file", only_if_changed=True
    )
    again = await store.put_agent_definition("titler", document(temperature=0.5))
    assert [first.version, second.version, same.version, again.version] == [1, 2, 2, 3]
    assert [first.created, second.created, same.created, again.created] == [
        True,
        True,
        False,
        True,
    ]
    assert same.source == "api"  # the stored version it found, not a new one
    history = await store.agent_definition_history("titler")
    assert [h.version for h in history] == [3, 2, 1]
    old = await store.agent_definition("titler", 1)
    assert old is not None and old.definition == document()
    latest = await store.agent_definition("titler")
    assert latest is not None and latest.version == 3
    assert await store.agent_definition("titler", 9) is None
    assert await store.latest_agent_versions() == {"titler": 3}
    assert await store.latest_agent_versions(["nobody"]) == {}
    assert await store.agent_definition("nobody") is None
    # defining a role declares it: tenants may submit before a worker served it
    assert [d.name for d in await store.queue_declarations(["titler"])] == ["titler"]


async def test_concurrent_puts_of_one_role_get_one_version_each(
    wide_store: PostgresStore,
) -> None:
    made = await asyncio.gather(
        *(wide_store.put_agent_definition("titler", document(max_tokens=n)) for n in range(1, 13))
    )
    assert sorted(m.version for m in made) == list(range(1, 13))
    latest = await wide_store.latest_agent_definitions()
    assert [(s.role, s.version) for s in latest] == [("titler", 12)]


# -- a worker's registry -----------------------------------------------------------------------


async def test_the_registry_registers_file_and_stored_roles_and_takes_new_versions(
    store: PostgresStore,
) -> None:
    await store.put_agent_definition("summarizer", document(concurrency=2))
    app = App("declarative")

    def only_writer(model: str) -> str | None:
        return None if model == "writer" else f"unknown model {model!r}"

    registry = DeclarativeAgents(app, store, model_check=only_writer)
    await registry.install({"titler": definition(timeout=30, max_attempts=2)}, ["summarizer"])
    assert sorted(app.agents) == ["summarizer", "titler"]
    assert app.agents["titler"].timeout == 30 and app.agents["titler"].retry.max_attempts == 2
    assert app.agents["summarizer"].concurrency == 2
    assert registry.agents["titler"].current.number == 1
    assert app.agents["titler"].is_async

    # the same file at the next start adds no version
    again = DeclarativeAgents(App("again"), store, model_check=only_writer)
    await again.install({"titler": definition(timeout=30, max_attempts=2)})
    assert again.agents["titler"].current.number == 1

    await store.put_agent_definition("titler", document(timeout=5, concurrency=3))
    assert await registry.refresh() == ["titler"]
    assert registry.agents["titler"].current.number == 2
    assert registry.agents["titler"].current.definition.timeout == 5
    spec = app.agents["titler"]
    assert (spec.timeout, spec.concurrency, spec.retry.max_attempts) == (5, 3, 5)
    assert await registry.refresh() == []

    # a version this worker cannot use is skipped; the one it has keeps serving
    await store.put_agent_definition("titler", document(model="elsewhere"))
    assert await registry.refresh() == []
    assert registry.agents["titler"].current.number == 2
    await store.put_agent_definition("titler", document(temperature=0.1))
    assert await registry.refresh() == ["titler"]
    assert registry.agents["titler"].current.number == 4


async def test_a_restart_with_the_same_file_keeps_a_put_made_since_and_an_edit_wins(
    store: PostgresStore,
) -> None:
    file_v1 = {"titler": definition(temperature=0.1)}
    first = DeclarativeAgents(App("one"), store)
    await first.install(file_v1)
    await store.put_agent_definition("titler", document(temperature=0.9))  # v2, over the API

    restarted = DeclarativeAgents(App("two"), store)
    await restarted.install(file_v1)
    assert restarted.agents["titler"].current.number == 2
    assert restarted.agents["titler"].current.definition.temperature == 0.9

    edited = DeclarativeAgents(App("three"), store)
    await edited.install({"titler": definition(temperature=0.5)})
    assert edited.agents["titler"].current.number == 3
    history = await store.agent_definition_history("titler")
    assert [(h.version, h.source) for h in history] == [(3, "file"), (2, "api"), (1, "file")]


async def test_the_registry_refuses_a_role_twice_or_a_stored_role_without_a_definition(
    store: PostgresStore,
) -> None:
    app = App("both")

    @app.agent("titler")
    async def titler(ctx: Any, payload: dict[str, Any]) -> None:
        return None

    with pytest.raises(ConfigurationError, match="titler are defined both by --app"):
        await DeclarativeAgents(app, store).install({"titler": definition()})
    with pytest.raises(ConfigurationError, match="no definition is stored for ghost"):
        await DeclarativeAgents(App("empty"), store).install({}, ["ghost"])


# -- a run through the gateway -------------------------------------------------------------------


class Chunks(LLMHook):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None]] = []

    def on_chunk(self, chunk: ChatChunk, attempt: AttemptInfo) -> None:
        self.seen.append((chunk.text, attempt.scope.task_id))


@pytest.fixture
async def mock() -> AsyncIterator[MockLLM]:
    rules = (
        ReplyRule(when=("Title for fixable", REPAIR_HEADING), reply='{"title": "Fixed"}'),
        ReplyRule(when=("Title for fixable",), reply='{"title": 5}'),
        ReplyRule(when=("Title for ",), reply='{"title": "A Title For Everything"}'),
    )
    async with MockLLM(MockConfig(reply_rules=rules)) as server:
        yield server


async def test_a_run_streams_through_the_hooks_is_repaired_once_and_is_accounted(
    store: PostgresStore, mock: MockLLM
) -> None:
    chunks = Chunks()
    app = App("declarative", hooks=[chunks])
    llm = load_gateway_config(config(mock.url))
    registry = DeclarativeAgents(app, store, model_check=model_check(llm))
    await registry.install({"titler": definition(output_schema=SCHEMA, max_tokens=50)})
    await store.create_tenant("acme")
    tenant = store.for_tenant("acme")
    good = await tenant.enqueue(NewTask("titler", {"topic": "shoes"}))
    fixable = await tenant.enqueue(NewTask("titler", {"topic": "fixable"}))
    unfit = await tenant.enqueue(NewTask("titler", {"subject": "no topic"}))
    gateway = build_gateway(llm, store, app, environ={})
    async with gateway, running(app, store, llm=gateway):
        done = await settle(store, good.task_id)
        repaired = await settle(store, fixable.task_id)
        dead = await settle(store, unfit.task_id)
    assert done.state is TaskState.SUCCEEDED
    assert done.result == {
        "output": {"title": "A Title For Everything"},
        "agent": {"role": "titler", "version": 1, "model": "openai/mock-gpt", "repaired": False},
    }
    # the reply streamed chunk by chunk through the LLM hooks, for this task
    mine = [text for text, task_id in chunks.seen if task_id == good.task_id]
    assert len(mine) > 2 and "".join(mine) == '{"title": "A Title For Everything"}'

    assert repaired.state is TaskState.SUCCEEDED and repaired.result is not None
    assert repaired.result["output"] == {"title": "Fixed"}
    assert repaired.result["agent"]["repaired"] is True

    # a payload the template cannot render (submitted around the API's check) fails for good
    assert dead.state is TaskState.DEAD and dead.last_error is not None
    assert dead.last_error["type"] == "PermanentError"
    assert "v1" in dead.last_error["message"] and "'topic'" in dead.last_error["message"]

    assert mock.stats.requests_total == 3  # one for shoes, two for fixable, none for unfit
    usage = await tenant.llm_usage(this_month(), task_id=fixable.task_id)
    assert [(u.attempts, u.succeeded) for u in usage] == [(2, 2)]
