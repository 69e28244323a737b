"""Payloads and results validated by the pydantic models a handler is typed with."""

from __future__ import annotations

from conveyor import App
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration import typed_agents
from tests.integration.worker_harness import running, settle


def typed_app() -> App:
    app = App("typed")
    app.agent("copy")(typed_agents.copywriter)
    app.agent("copy-sync")(typed_agents.sync_copywriter)
    return app


def test_the_payload_model_is_read_from_the_annotation() -> None:
    app = typed_app()
    assert app.agents["copy"].payload_model is typed_agents.Brief
    assert app.agents["copy-sync"].payload_model is typed_agents.Brief


async def test_valid_payloads_reach_the_handler_as_models(store: PostgresStore) -> None:
    good = await store.enqueue(NewTask("copy", {"topic": "shoes", "words": 300}))
    sync = await store.enqueue(NewTask("copy-sync", {"topic": "hats", "words": "12"}))
    async with running(typed_app(), store):
        record = await settle(store, good.task_id)
        sync_record = await settle(store, sync.task_id)
    assert record.state is TaskState.SUCCEEDED
    assert record.result == {"title": "On shoes", "words": 300}
    assert sync_record.result == {"title": "HATS", "words": 12}  # "12" coerced by pydantic


async def test_an_invalid_payload_fails_for_good_naming_the_fields(store: PostgresStore) -> None:
    bad = await store.enqueue(NewTask("copy", {"words": 0}, max_attempts=5))
    async with running(typed_app(), store):
        record = await settle(store, bad.task_id)
    assert record.state is TaskState.DEAD and record.attempts == 1
    message = record.last_error["message"]
    assert "Brief" in message and "topic: Field required" in message and "words:" in message
