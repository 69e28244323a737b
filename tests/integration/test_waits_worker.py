"""``ctx.wait_for`` through a real worker: a run that waits ends and frees its slot, a
signal resumes the task where it stopped (steps and effects not run again), a signal sent
first is returned at once, and a deadline raises WaitTimedOut in the handler."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from conveyor import App, RetryPolicy, TaskContext
from conveyor.errors import PermanentError, WaitTimedOut
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import TaskRecord
from conveyor.types import TaskState
from conveyor.worker.runtime import Worker
from tests.integration.worker_harness import running, settle

FAST = RetryPolicy(max_attempts=3, base=0.01, cap=0.05)


async def until_state(
    store: PostgresStore, task_id: int, state: TaskState, timeout: float = 15
) -> TaskRecord:
    """Wait until the task is in ``state``; its record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = await store.get_task(task_id)
        if record.state is state:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} still {record.state}, not {state}, after {timeout}s")


async def idle(worker: Worker, timeout: float = 15) -> None:
    """Wait until the worker runs nothing and has written every outcome."""
    deadline = time.monotonic() + timeout
    while worker.in_flight or worker.unwritten:
        assert time.monotonic() < deadline, "the worker did not go idle"
        await asyncio.sleep(0.02)


def approval_app(calls: Counter[str]) -> App:
    """An agent that drafts (a step), notifies (an effect), then waits for approval."""

    async def draft(brief: str) -> str:
        calls["draft"] += 1
        return f"draft of {brief}"

    def notify(text: str) -> dict[str, str]:
        calls["notify"] += 1
        return {"sent": text}

    app = App("approvals")

    @app.agent("publish", retry=FAST)
    async def publish(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        calls["runs"] += 1
        text = await ctx.step("draft", draft, payload["brief"])
        await ctx.once(f"notify:{ctx.task.id}", notify, text)
        decision = await ctx.wait_for("approval", timeout=payload.get("timeout", 3600))
        return {"text": text, "decision": decision, "attempt": ctx.task.attempt}

    return app


async def test_a_waiting_task_frees_its_slot_and_resumes_on_its_signal(
    store: PostgresStore,
) -> None:
    calls: Counter[str] = Counter()
    created = await store.enqueue(NewTask("publish", {"brief": "spring"}))
    async with running(approval_app(calls), store, concurrency=1) as worker:
        waiting = await until_state(store, created.task_id, TaskState.WAITING)
        await idle(worker)
        assert waiting.waiting_for == "approval" and waiting.wait_until is not None
        assert waiting.attempts == 0 and waiting.worker_id is None
        assert worker.stats["waiting"] == 1

        # the only slot is free: another task runs while this one waits
        other = await store.enqueue(NewTask("publish", {"brief": "summer"}))
        await until_state(store, other.task_id, TaskState.WAITING)

        delivery = await store.deliver_signal(created.task_id, "approval", {"ok": True})
        assert delivery.resumed
        record = await settle(store, created.task_id)
    assert record.state is TaskState.SUCCEEDED
    assert record.result == {"text": "draft of spring", "decision": {"ok": True}, "attempt": 1}
    assert record.attempts == 1  # the wait was not charged
    # two tasks: each drafted and notified once; the resumed one ran twice in all
    assert calls == {"runs": 3, "draft": 2, "notify": 2}


async def test_a_signal_sent_before_the_wait_is_returned_at_once(store: PostgresStore) -> None:
    calls: Counter[str] = Counter()
    created = await store.enqueue(NewTask("publish", {"brief": "autumn"}))
    await store.deliver_signal(created.task_id, "approval", "yes")
    async with running(approval_app(calls), store) as worker:
        record = await settle(store, created.task_id)
        assert worker.stats["waiting"] == 0
    assert record.state is TaskState.SUCCEEDED and record.result["decision"] == "yes"
    assert calls == {"runs": 1, "draft": 1, "notify": 1}


async def test_a_timeout_the_handler_catches(store: PostgresStore) -> None:
    app = App("reminders")

    @app.agent("review", retry=FAST)
    async def review(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"first": await ctx.wait_for("approval", timeout=0.001)}
        except WaitTimedOut as exc:
            late = await ctx.wait_for("approval-reminded", timeout=3600)
            return {"timed_out": exc.name, "message": str(exc), "second": late}

    created = await store.enqueue(NewTask("review"))
    async with running(app, store) as worker:
        await until_state(store, created.task_id, TaskState.WAITING)
        while not await store.expire_waits():  # the maintenance loop's job
            await asyncio.sleep(0.01)
        record = await until_state(store, created.task_id, TaskState.WAITING)
        assert record.waiting_for == "approval-reminded"
        await idle(worker)
        await store.deliver_signal(created.task_id, "approval-reminded", {"ok": True})
        record = await settle(store, created.task_id)
    assert record.state is TaskState.SUCCEEDED
    assert record.result == {
        "timed_out": "approval",
        "message": "the wait for signal 'approval' timed out after 0.001s with no signal",
        "second": {"ok": True},
    }


async def test_an_uncaught_timeout_fails_the_task_for_good(store: PostgresStore) -> None:
    calls: Counter[str] = Counter()
    created = await store.enqueue(NewTask("publish", {"brief": "winter", "timeout": 0.001}))
    async with running(approval_app(calls), store):
        await until_state(store, created.task_id, TaskState.WAITING)
        while not await store.expire_waits():
            await asyncio.sleep(0.01)
        record = await settle(store, created.task_id)
    assert record.state is TaskState.DEAD and record.attempts == 1
    assert record.last_error is not None
    assert record.last_error["type"] == "WaitTimedOut"
    assert record.last_error["gave_up"] == "permanent error"
    assert calls == {"runs": 2, "draft": 1, "notify": 1}


async def test_a_wait_inside_a_task_group_suspends_the_task(store: PostgresStore) -> None:
    app = App("groups")

    @app.agent("fan")
    async def fan(ctx: TaskContext, payload: dict[str, Any]) -> list[Any]:
        async with asyncio.TaskGroup() as group:
            a = group.create_task(ctx.wait_for("a"))
            b = group.create_task(ctx.wait_for("b"))
        return [a.result(), b.result()]

    created = await store.enqueue(NewTask("fan"))
    async with running(app, store):
        await until_state(store, created.task_id, TaskState.WAITING)
        waiting_for = (await store.get_task(created.task_id)).waiting_for
        other = "b" if waiting_for == "a" else "a"
        await store.deliver_signal(created.task_id, other, 2)  # not awaited: stays waiting
        await store.deliver_signal(created.task_id, waiting_for or "a", 1)
        record = await settle(store, created.task_id)
    assert record.state is TaskState.SUCCEEDED
    assert sorted(record.result) == [1, 2]


@pytest.mark.parametrize(
    ("name", "timeout"), [("bad name", None), ("ok", 0), ("ok", -1), ("ok", float("inf"))]
)
async def test_a_malformed_wait_fails_the_task_at_once(
    store: PostgresStore, name: str, timeout: float | None
) -> None:
    app = App("bad-waits")

    @app.agent("w", retry=FAST)
    async def w(ctx: TaskContext, payload: dict[str, Any]) -> Any:
        return await ctx.wait_for(name, timeout=timeout)

    created = await store.enqueue(NewTask("w"))
    async with running(app, store):
        record = await settle(store, created.task_id)
    assert record.state is TaskState.DEAD and record.last_error is not None
    assert record.last_error["type"] == PermanentError.__name__
    assert record.last_error["message"].startswith("ctx.wait_for:")


async def test_a_handler_catching_exception_does_not_swallow_the_suspension(
    store: PostgresStore,
) -> None:
    app = App("broad-except")

    @app.agent("w")
    async def w(ctx: TaskContext, payload: dict[str, Any]) -> Any:
        try:
            return await ctx.wait_for("go")
        except Exception:  # a habit of many handlers: it must not catch the wait
            return "swallowed"

    created = await store.enqueue(NewTask("w"))
    async with running(app, store):
        await until_state(store, created.task_id, TaskState.WAITING)
        await store.deliver_signal(created.task_id, "go", "went")
        record = await settle(store, created.task_id)
    assert record.result == "went"
