"""The webhook adapter's callback tokens on real PostgreSQL: only a hash is stored, the
result is reported once, a wrong or expired token is refused, heartbeats move the deadline
(and the task's wait) within the bound, progress becomes an event, and a result that comes
before the task suspends is kept."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.core.events import EventPosition
from conveyor.core.webhooks import new_token, token_hash
from conveyor.errors import CallbackRefused, SignalRefused
from conveyor.store import retention
from conveyor.store.params import SuspendLease, TenantAgentUpdate
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import ClaimedTask
from conveyor.store.webhook_records import CallbackGrant
from conveyor.types import TaskState
from conveyor.worker.external import callback_signal
from tests.integration.helpers import claim, enqueue_many, execute, fetchval, lease

SUCCESS = {"status": "succeeded", "result": {"answer": 42}}


def grant(task: ClaimedTask, timeout: float = 60, max_wait: float = 600) -> CallbackGrant:
    return CallbackGrant(
        task.tenant_id, task.id, task.attempts, task.queue, task.group_id,
        callback_signal(task.attempts), timeout, max_wait,
    )  # fmt: skip


async def delivered(
    store: PostgresStore, timeout: float = 60, max_wait: float = 600, suspend: bool = True
) -> tuple[ClaimedTask, str]:
    """A claimed task with a token issued, suspended on its callback signal."""
    await enqueue_many(store, 1, max_attempts=3)
    [task] = await claim(store)
    token = new_token()
    assert await store.issue_callback_token(token, grant(task, timeout, max_wait)) is not None
    if suspend:
        wait = SuspendLease(lease(task), callback_signal(task.attempts), timeout)
        assert await store.suspend([wait]) == set()
    return task, token


async def test_only_the_hash_of_a_token_is_stored(store: PostgresStore) -> None:
    _, token = await delivered(store)
    stored = await fetchval(store, "SELECT array_agg(token_hash) FROM callback_tokens")
    assert stored == [token_hash(token)]
    assert token not in stored[0]


async def test_a_result_wakes_the_task_and_the_token_is_then_used(store: PostgresStore) -> None:
    task, token = await delivered(store)
    found, delivery = await store.report_callback(token, task.id, SUCCESS)
    assert found.attempt == 1 and delivery.resumed
    assert (await store.get_task(task.id)).state is TaskState.SCHEDULED
    held = await store.get_signal(task.tenant_id, task.id, callback_signal(1))
    assert held is not None and held.payload == SUCCESS

    with pytest.raises(CallbackRefused) as replayed:
        await store.report_callback(token, task.id, SUCCESS)
    assert replayed.value.reason == "used"
    with pytest.raises(CallbackRefused) as beat:  # a used token is done for good
        await store.callback_heartbeat(token, task.id, None)
    assert beat.value.reason == "used"


async def test_a_wrong_token_or_another_tasks_id_is_refused(store: PostgresStore) -> None:
    task, token = await delivered(store)
    for wrong_token, task_id in ((new_token(), task.id), (token, task.id + 1)):
        with pytest.raises(CallbackRefused) as refused:
            await store.report_callback(wrong_token, task_id, SUCCESS)
        assert refused.value.reason == "invalid"
    assert (await store.get_task(task.id)).state is TaskState.WAITING


async def test_an_expired_token_is_refused_and_stays_unused(store: PostgresStore) -> None:
    task, token = await delivered(store)
    await execute(store, "UPDATE callback_tokens SET expires_at = now() - interval '1 second'")
    with pytest.raises(CallbackRefused) as refused:
        await store.report_callback(token, task.id, SUCCESS)
    assert refused.value.reason == "expired"
    assert "deadline" in str(refused.value)
    assert await fetchval(store, "SELECT used_at FROM callback_tokens") is None


async def test_a_heartbeat_moves_the_deadline_and_the_wait_within_the_bound(
    store: PostgresStore,
) -> None:
    task, token = await delivered(store, timeout=60, max_wait=600)
    before = (await store.get_task(task.id)).wait_until
    assert before is not None
    moved = await store.callback_heartbeat(token, task.id, 300)
    assert moved > before + timedelta(seconds=200)
    assert (await store.get_task(task.id)).wait_until == moved
    # asking for more than the bound stops at the bound, never beyond
    capped = await store.callback_heartbeat(token, task.id, 10_000)
    bound = await fetchval(store, "SELECT max_until FROM callback_tokens")
    assert capped == bound
    assert capped - datetime.now(UTC) <= timedelta(seconds=600)
    # a shorter extension never moves the deadline back
    assert await store.callback_heartbeat(token, task.id, 1) == capped


async def test_progress_becomes_an_event_of_the_task(store: PostgresStore) -> None:
    task, token = await delivered(store)
    found = await store.callback_progress(token, task.id, {"percent": 40})
    assert found.attempt == 1

    async def progress() -> list[tuple[Any, int | None]]:
        events = await store.task_events(task.tenant_id, task.id, EventPosition(0, 0))
        return [(e.data, e.attempt) for e in events if e.kind == "progress"]

    # the log shows an event once no older transaction (any test's) is still open: poll
    for _ in range(600):
        if await progress():
            break
        await asyncio.sleep(0.05)
    assert await progress() == [({"percent": 40}, 1)]


async def test_a_result_before_the_task_suspends_is_kept_and_wakes_it_at_once(
    store: PostgresStore,
) -> None:
    task, token = await delivered(store, suspend=False)
    _, delivery = await store.report_callback(token, task.id, SUCCESS)
    assert not delivery.resumed and delivery.state is TaskState.RUNNING
    wait = SuspendLease(lease(task), callback_signal(task.attempts), 60)
    assert await store.suspend([wait]) == set()
    assert (await store.get_task(task.id)).state is TaskState.SCHEDULED


async def test_a_result_for_a_finished_task_is_refused_and_leaves_the_token_unused(
    store: PostgresStore,
) -> None:
    task, token = await delivered(store)
    await store.cancel(task.id)
    with pytest.raises(SignalRefused):
        await store.report_callback(token, task.id, SUCCESS)
    assert await fetchval(store, "SELECT used_at FROM callback_tokens") is None


async def test_a_redelivery_of_an_attempt_replaces_its_token_until_it_is_used(
    store: PostgresStore,
) -> None:
    task, first = await delivered(store)
    second = new_token()
    assert await store.issue_callback_token(second, grant(task)) is not None
    with pytest.raises(CallbackRefused):
        await store.report_callback(first, task.id, SUCCESS)
    await store.report_callback(second, task.id, SUCCESS)
    # reported: a third delivery of the same attempt issues nothing
    assert await store.issue_callback_token(new_token(), grant(task)) is None


async def test_the_webhook_overrides_of_tenants(store: PostgresStore) -> None:
    await store.create_tenant("acme")
    url = "https://runtime.example.com/run"
    await store.set_tenant_agent(TenantAgentUpdate("acme", "q", adapter_override=f"webhook:{url}"))
    assert await store.webhook_overrides(["q", "other"]) == {("acme", "q"): url}
    await store.set_tenant_agent(TenantAgentUpdate("acme", "q", adapter_override="python"))
    assert await store.webhook_overrides(["q"]) == {}


async def test_retention_prunes_tokens_past_their_last_deadline(store: PostgresStore) -> None:
    await delivered(store)
    async with store.transaction() as conn:
        assert await retention.prune_ledgers(conn, datetime.now(UTC)) == 0
        await conn.execute("UPDATE callback_tokens SET max_until = now() - interval '1 day'")
        assert await retention.prune_ledgers(conn, datetime.now(UTC)) >= 1
        assert await conn.fetchval("SELECT count(*) FROM callback_tokens") == 0
