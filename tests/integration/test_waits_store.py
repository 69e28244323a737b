"""Durable waits in the store, on real PostgreSQL: a leased task suspends without a lease,
signals are write-once per (task, name) and wake the task they are awaited by, deadlines
end waits, cancels and tenants behave as for any waiting task."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.errors import InvalidSignal, SignalRefused, TaskNotFound
from conveyor.store import retention
from conveyor.store.params import LeaseRef, NewTask, SuspendLease, TaskListParams
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import claim, enqueue_many, execute, fetchval, lease


async def _waiting(
    store: PostgresStore, wait: str = "approval", timeout: float | None = None
) -> int:
    [task_id] = await enqueue_many(store, 1, max_attempts=3)
    [task] = await claim(store)
    assert await store.suspend([SuspendLease(lease(task), wait, timeout)]) == set()
    return task_id


async def test_a_suspended_task_waits_without_a_lease_or_a_charged_attempt(
    store: PostgresStore,
) -> None:
    [task_id] = await enqueue_many(store, 1, max_attempts=3)
    [task] = await claim(store, worker="w1")
    assert task.attempts == 1
    assert await store.suspend([SuspendLease(lease(task), "approval", 3600)]) == set()

    record = await store.get_task(task_id)
    assert record.state is TaskState.WAITING
    assert record.waiting_for == "approval"
    assert record.wait_until is not None
    assert timedelta(minutes=59) < record.wait_until - datetime.now(UTC) <= timedelta(hours=1)
    assert record.attempts == 0  # given back, as for a snooze
    assert record.worker_id is None and record.lease_expires_at is None
    row = await fetchval(store, "SELECT lease_token FROM tasks WHERE id = $1", task_id)
    assert row is None
    # nothing to claim, nothing to promote, nothing to reap: it holds nothing
    assert await claim(store) == []
    assert await store.promote_due() == 0
    reaped = await store.reap_expired()
    assert reaped is not None and not (reaped.requeued or reaped.dead or reaped.cancelled)
    # the old lease is gone: heartbeating it extends nothing
    beat = await store.heartbeat("w1", [lease(task)], 30)
    assert beat.lost == {task_id}


async def test_a_wait_without_a_timeout_has_no_deadline(store: PostgresStore) -> None:
    task_id = await _waiting(store, timeout=None)
    assert (await store.get_task(task_id)).wait_until is None
    assert await store.expire_waits() == []
    assert (await store.get_task(task_id)).state is TaskState.WAITING


async def test_a_signal_wakes_the_task_waiting_for_it(store: PostgresStore) -> None:
    task_id = await _waiting(store)
    delivery = await store.deliver_signal(task_id, "approval", {"approved": True, "by": "ana"})
    assert delivery.resumed and not delivery.duplicate
    assert delivery.state is TaskState.SCHEDULED

    record = await store.get_task(task_id)
    assert record.state is TaskState.SCHEDULED
    assert record.waiting_for is None and record.wait_until is None
    assert await store.promote_due() == 1
    [again] = await claim(store)
    assert again.id == task_id and again.attempts == 1  # the same attempt, run again
    held = await store.get_signal("default", task_id, "approval")
    assert held is not None and not held.timed_out
    assert held.payload == {"approved": True, "by": "ana"}


async def test_a_signal_of_another_name_leaves_the_wait_alone(store: PostgresStore) -> None:
    task_id = await _waiting(store, "approval")
    delivery = await store.deliver_signal(task_id, "comment", "looks fine")
    assert not delivery.resumed and delivery.state is TaskState.WAITING
    assert (await store.get_task(task_id)).state is TaskState.WAITING
    held = await store.get_signal("default", task_id, "comment")
    assert held is not None and held.payload == "looks fine"


@pytest.mark.parametrize("when", ["queued", "running"])
async def test_a_signal_sent_before_the_wait_is_kept(store: PostgresStore, when: str) -> None:
    [task_id] = await enqueue_many(store, 1)
    if when == "running":
        [task] = await claim(store)
    delivery = await store.deliver_signal(task_id, "approval", [1, 2, 3])
    assert not delivery.resumed and delivery.state == when
    if when == "queued":
        [task] = await claim(store)
    # the run that reads it finds it; a run that had looked before the signal came and
    # suspends anyway does not wait: the suspension sees the signal and ends at once
    held = await store.get_signal("default", task_id, "approval")
    assert held is not None and held.payload == [1, 2, 3]
    assert await store.suspend([SuspendLease(lease(task), "approval", 60)]) == set()
    record = await store.get_task(task_id)
    assert record.state is TaskState.SCHEDULED and record.waiting_for is None


async def test_a_signal_is_write_once_the_same_payload_is_a_duplicate(
    store: PostgresStore,
) -> None:
    task_id = await _waiting(store)
    first = await store.deliver_signal(task_id, "approval", {"ok": True, "n": 1})
    again = await store.deliver_signal(task_id, "approval", {"n": 1, "ok": True})
    assert first.resumed and not first.duplicate
    assert again.duplicate and not again.resumed
    with pytest.raises(SignalRefused) as refused:
        await store.deliver_signal(task_id, "approval", {"ok": False})
    assert refused.value.reason == "conflict" and "first one holds" in str(refused.value)
    held = await store.get_signal("default", task_id, "approval")
    assert held is not None and held.payload == {"ok": True, "n": 1}


async def test_the_deadline_ends_the_wait_and_refuses_a_late_signal(store: PostgresStore) -> None:
    task_id = await _waiting(store, timeout=600)
    other = await _waiting(store, timeout=600)
    await execute(
        store, "UPDATE tasks SET wait_until = now() - interval '1 second' WHERE id = $1", task_id
    )
    assert await store.expire_waits() == [task_id]
    assert await store.expire_waits() == []

    record = await store.get_task(task_id)
    assert record.state is TaskState.SCHEDULED and record.waiting_for is None
    held = await store.get_signal("default", task_id, "approval")
    assert held is not None and held.timed_out and held.payload is None
    with pytest.raises(SignalRefused) as refused:
        await store.deliver_signal(task_id, "approval", {"ok": True})
    assert refused.value.reason == "timed-out"
    assert (await store.get_task(other)).state is TaskState.WAITING


async def test_a_waiting_task_is_cancelled_at_once_and_then_refuses_signals(
    store: PostgresStore,
) -> None:
    task_id = await _waiting(store)
    assert await store.cancel(task_id, reason="not needed") is TaskState.CANCELLED
    record = await store.get_task(task_id)
    assert record.state is TaskState.CANCELLED
    assert record.last_error == {"type": "Cancelled", "message": "not needed"}
    with pytest.raises(SignalRefused) as refused:
        await store.deliver_signal(task_id, "approval", True)
    assert refused.value.reason == "finished" and "cancelled" in str(refused.value)


async def test_signals_and_waits_are_bound_to_the_tenant(store: PostgresStore) -> None:
    for tenant in ("acme", "globex"):
        await store.create_tenant(tenant)
    acme, globex = store.for_tenant("acme"), store.for_tenant("globex")
    created = await acme.enqueue(NewTask("q"))
    [task] = await claim(store)
    await store.suspend([SuspendLease(lease(task), "approval", None)])

    with pytest.raises(TaskNotFound):
        await globex.signal(created.task_id, "approval", {"ok": True})
    with pytest.raises(TaskNotFound):
        await globex.signal(987_654_321, "approval")
    assert await store.get_signal("globex", created.task_id, "approval") is None
    assert (await acme.get_task(created.task_id)).state is TaskState.WAITING

    listed = await acme.list_tasks(TaskListParams(state=TaskState.WAITING))
    assert [r.id for r in listed] == [created.task_id]
    assert await globex.list_tasks(TaskListParams(state=TaskState.WAITING)) == []

    delivery = await acme.signal(created.task_id, "approval", {"ok": True})
    assert delivery.resumed
    # a finished task of another tenant is still a missing one
    await execute(store, "DELETE FROM tasks WHERE id = $1", created.task_id)
    with pytest.raises(TaskNotFound):
        await globex.signal(created.task_id, "x")


async def test_bad_names_and_payloads_are_refused(store: PostgresStore) -> None:
    task_id = await _waiting(store)
    for name in ("", "has space", "-dash-first", "x" * 129, "conveyor:webhook"):
        with pytest.raises(InvalidSignal):
            await store.deliver_signal(task_id, name, None)
    with pytest.raises(InvalidSignal):
        await store.deliver_signal(task_id, "approval", {"bad": float("nan")})
    with pytest.raises(InvalidSignal):
        await store.deliver_signal(task_id, "approval", "nul\x00")
    assert (await store.get_task(task_id)).state is TaskState.WAITING
    # Conveyor's own waits use reserved names, delivered by Conveyor's own code
    [other] = await enqueue_many(store, 1)
    [task] = await claim(store)
    await store.suspend([SuspendLease(lease(task), "conveyor:webhook", 60)])
    delivery = await store.deliver_signal(other, "conveyor:webhook", {"r": 1}, reserved=True)
    assert delivery.resumed


async def test_a_lost_lease_or_a_cancel_request_is_not_suspended(store: PostgresStore) -> None:
    [lost_id, cancelled_id] = await enqueue_many(store, 2, max_attempts=3)
    tasks = {t.id: t for t in await claim(store, lease_seconds=0.2)}
    stale = LeaseRef(lost_id, tasks[lost_id].lease_token + 1000)
    assert await store.cancel(cancelled_id) is TaskState.RUNNING
    refused = await store.suspend(
        [
            SuspendLease(stale, "approval", None),
            SuspendLease(lease(tasks[cancelled_id]), "approval", None),
        ]
    )
    assert refused == {lost_id, cancelled_id}
    assert (await store.get_task(lost_id)).state is TaskState.RUNNING
    # the cancel is honoured by the reaper once the lease runs out
    while (await store.get_task(cancelled_id)).state is TaskState.RUNNING:
        await asyncio.sleep(0.1)
        await store.reap_expired()
    assert (await store.get_task(cancelled_id)).state is TaskState.CANCELLED


async def test_a_signal_racing_a_suspension_is_never_missed(
    store: PostgresStore, wide_store: PostgresStore
) -> None:
    """Deliveries and suspensions of the same tasks at once, on separate connections:
    whichever commits second sees the first, so no task is left waiting for a signal it
    already holds."""
    ids = await enqueue_many(store, 60)
    tasks = await claim(store, limit=60)
    assert len(tasks) == 60

    async def suspend_one(task_lease: LeaseRef) -> None:
        await wide_store.suspend([SuspendLease(task_lease, "approval", None)])

    async def signal_one(task_id: int) -> None:
        await wide_store.deliver_signal(task_id, "approval", {"task": task_id})

    await asyncio.gather(*(suspend_one(lease(t)) for t in tasks), *(signal_one(i) for i in ids))
    states = {(await store.get_task(i)).state for i in ids}
    assert states == {TaskState.SCHEDULED}


async def test_retention_prunes_the_signals_of_finished_tasks_only(store: PostgresStore) -> None:
    finished = await _waiting(store)
    active = await _waiting(store)
    await store.deliver_signal(finished, "approval", 1)
    await store.deliver_signal(active, "note", 2)
    await store.cancel(finished)
    await store.deliver_signal(active, "approval", 3)  # active again: scheduled
    future = datetime.now(UTC) + timedelta(days=1)
    async with store.transaction() as conn:
        await retention.prune_ledgers(conn, future)
    assert await store.get_signal("default", finished, "approval") is None
    assert await store.get_signal("default", active, "note") is not None


async def test_a_debounced_task_that_waits_leaves_its_key_to_the_next_burst(
    store: PostgresStore,
) -> None:
    soon, later = datetime.now(UTC), datetime.now(UTC) + timedelta(hours=1)
    first = await store.enqueue_debounced(NewTask("q", {"v": 1}, run_at=soon, debounce_key="k"))
    assert await store.promote_due() == 1
    [task] = await claim(store)
    await store.suspend([SuspendLease(lease(task), "approval", None)])
    second = await store.enqueue_debounced(NewTask("q", {"v": 2}, run_at=later, debounce_key="k"))
    assert second.created and second.task_id != first.task_id
    # resuming the first does not collide with the second, still waiting for its run_at
    assert (await store.deliver_signal(first.task_id, "approval", True)).resumed
    assert (await store.get_task(first.task_id)).state is TaskState.SCHEDULED
    assert (await store.get_task(second.task_id)).payload == {"v": 2}
