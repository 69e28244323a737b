"""The worker runtime in-process against real PostgreSQL: outcomes, timeouts, cancellation,
per-role caps, sync handlers and graceful release."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from conveyor import App, Cancel, PermanentError, Retry, RetryPolicy, Snooze, TaskContext
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.worker_harness import running, settle

FAST = RetryPolicy(max_attempts=3, base=0.01, cap=0.05)


def app_with(handler: Callable[..., Any], **agent: Any) -> App:
    app = App("test")
    app.agent("work", retry=FAST, **agent)(handler)
    return app


async def test_success_records_the_result(store: PostgresStore) -> None:
    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"doubled": payload["n"] * 2, "tenant": ctx.task.tenant_id}

    result = await store.enqueue(NewTask("work", {"n": 21}))
    async with running(app_with(handler), store):
        record = await settle(store, result.task_id)
    assert record.state is TaskState.SUCCEEDED
    assert record.result == {"doubled": 42, "tenant": "default"}


async def test_transient_errors_retry_with_backoff_then_succeed(store: PostgresStore) -> None:
    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> str:
        if ctx.task.attempt < 3:
            raise ConnectionError(f"flaky on attempt {ctx.task.attempt}")
        return "finally"

    result = await store.enqueue(NewTask("work", max_attempts=3))
    async with running(app_with(handler), store) as worker:
        record = await settle(store, result.task_id)
    assert record.state is TaskState.SUCCEEDED and record.attempts == 3
    assert record.last_error["message"] == "flaky on attempt 2"
    assert worker.stats["retried"] == 2


async def test_exhausted_attempts_go_dead_with_traceback(store: PostgresStore) -> None:
    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise ValueError("always broken")

    result = await store.enqueue(NewTask("work", max_attempts=2))
    async with running(app_with(handler), store):
        record = await settle(store, result.task_id)
    assert record.state is TaskState.DEAD and record.attempts == 2
    assert record.last_error["type"] == "ValueError"
    assert "always broken" in record.last_error["traceback"]
    assert "exhausted" in record.last_error["gave_up"]
    [dead] = await store.list_dead()
    assert dead.id == result.task_id


async def test_agent_max_attempts_applies_to_tasks_submitted_without_one(
    store: PostgresStore,
) -> None:
    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise ValueError("still broken")

    app = App("policy")
    app.agent("work", retry=RetryPolicy(max_attempts=2, base=0.01, cap=0.02))(handler)
    result = await store.enqueue(NewTask("work"))
    async with running(app, store):
        record = await settle(store, result.task_id)
    assert record.state is TaskState.DEAD and (record.attempts, record.max_attempts) == (2, 2)


async def test_permanent_error_is_not_retried(store: PostgresStore) -> None:
    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise PermanentError("bad input")

    result = await store.enqueue(NewTask("work", max_attempts=5))
    async with running(app_with(handler), store):
        record = await settle(store, result.task_id)
    assert record.state is TaskState.DEAD and record.attempts == 1


async def test_handler_outcomes_retry_snooze_cancel(store: PostgresStore) -> None:
    snoozes = 0

    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> str:
        nonlocal snoozes
        kind = payload["kind"]
        if kind == "retry" and ctx.task.attempt == 1:
            raise Retry(after=0.05)
        if kind == "snooze" and snoozes == 0:
            snoozes += 1
            raise Snooze(0.05)
        if kind == "cancel":
            raise Cancel("not needed any more")
        return kind

    ids = [
        (await store.enqueue(NewTask("work", {"kind": kind}))).task_id
        for kind in ("retry", "snooze", "cancel")
    ]
    async with running(app_with(handler), store):
        retried, snoozed, cancelled = [await settle(store, i) for i in ids]
    assert retried.state is TaskState.SUCCEEDED and retried.attempts == 2
    # a snooze gives its attempt back: the second run is attempt 1 again
    assert snoozed.state is TaskState.SUCCEEDED and snoozed.attempts == 1
    assert cancelled.state is TaskState.CANCELLED
    assert cancelled.last_error["message"] == "not needed any more"


async def test_result_that_is_not_json_fails_clearly(store: PostgresStore) -> None:
    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> object:
        return object()

    result = await store.enqueue(NewTask("work"))
    async with running(app_with(handler), store):
        record = await settle(store, result.task_id)
    assert record.state is TaskState.DEAD
    assert "not JSON" in record.last_error["message"]


async def test_timeout_cancels_the_run_and_retries_per_policy(store: PostgresStore) -> None:
    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
        await asyncio.sleep(60)

    result = await store.enqueue(NewTask("work", max_attempts=2, timeout_seconds=0.2))
    async with running(app_with(handler), store):
        record = await settle(store, result.task_id)
    assert record.state is TaskState.DEAD and record.attempts == 2
    assert record.last_error["type"] == "TaskTimedOut"


async def test_cancelling_a_running_task_stops_its_handler(store: PostgresStore) -> None:
    started = asyncio.Event()
    was_cancelled = asyncio.Event()

    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            was_cancelled.set()
            raise

    result = await store.enqueue(NewTask("work"))
    async with running(app_with(handler), store):
        await asyncio.wait_for(started.wait(), 10)
        assert await store.cancel(result.task_id) is TaskState.RUNNING
        record = await settle(store, result.task_id)
    assert was_cancelled.is_set()
    assert record.state is TaskState.CANCELLED


async def test_per_role_concurrency_cap_holds(store: PostgresStore) -> None:
    now_running = 0
    peak = 0

    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
        nonlocal now_running, peak
        now_running += 1
        peak = max(peak, now_running)
        await asyncio.sleep(0.02)
        now_running -= 1

    results = await store.enqueue_batch([NewTask("work") for _ in range(40)])
    async with running(app_with(handler, concurrency=3), store):
        for r in results:
            await settle(store, r.task_id)
    assert peak == 3


async def test_sync_handlers_run_in_threads_not_on_the_loop(store: PostgresStore) -> None:
    release = threading.Event()
    order: list[str] = []

    def blocking(ctx: TaskContext, payload: dict[str, Any]) -> str:
        release.wait(10)  # would freeze every coroutine if it ran on the event loop
        order.append("sync")
        return threading.current_thread().name

    async def quick(ctx: TaskContext, payload: dict[str, Any]) -> str:
        order.append("async")
        release.set()
        return "quick"

    app = App("mixed")
    app.agent("slow")(blocking)
    app.agent("fast")(quick)
    slow = await store.enqueue(NewTask("slow"))
    fast = await store.enqueue(NewTask("fast"))
    async with running(app, store):
        slow_record = await settle(store, slow.task_id)
        await settle(store, fast.task_id)
    assert order == ["async", "sync"]
    assert slow_record.result != threading.main_thread().name


@pytest.mark.timeout(30)
async def test_graceful_stop_releases_unfinished_tasks_without_an_attempt(
    store: PostgresStore,
) -> None:
    started = asyncio.Event()

    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(60)

    result = await store.enqueue(NewTask("work"))
    async with running(app_with(handler), store, grace_seconds=0.1) as worker:
        await asyncio.wait_for(started.wait(), 10)
    record = await store.get_task(result.task_id)
    assert record.state is TaskState.QUEUED and record.attempts == 0
    assert worker.stats["released"] == 1


async def test_a_blocked_event_loop_is_reported_with_the_task_to_blame(
    store: PostgresStore,
) -> None:
    async def rude(ctx: TaskContext, payload: dict[str, Any]) -> str:
        time.sleep(0.6)  # blocks the loop: exactly what the monitor is for
        return "done"

    result = await store.enqueue(NewTask("work"))
    with structlog.testing.capture_logs() as logs:
        async with running(app_with(rude), store, loop_lag_warn_seconds=0.2) as worker:
            await settle(store, result.task_id)
    blocked = [e for e in logs if e["event"] == "event_loop_blocked"]
    assert blocked and blocked[0]["task_id"] == result.task_id
    assert blocked[0]["queue"] == "work" and "test_worker_runtime.py" in blocked[0]["where"]
    assert worker.loop_lag.summary()["loop_lag_max_ms"] >= 400


async def test_worker_stops_for_recycling_after_max_tasks(store: PostgresStore) -> None:
    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    await store.enqueue_batch([NewTask("work") for _ in range(30)])
    async with running(app_with(handler), store, max_tasks_per_process=10) as worker:
        deadline = time.monotonic() + 20
        while worker.recycle_reason is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert worker.recycle_reason is not None and "max-tasks-per-process" in worker.recycle_reason
    assert worker.stats["claimed"] == 10 and worker.stats["succeeded"] == 10
    [status] = await store.queue_status()
    assert status.queued == 20 and status.running == 0


async def test_a_run_without_progress_fails_as_stalled_while_a_chatty_one_lives(
    store: PostgresStore,
) -> None:
    async def agent(ctx: TaskContext, payload: dict[str, Any]) -> str:
        for _ in range(8):  # 0.8 s in all, longer than the stall timeout
            await asyncio.sleep(0.1)
            if payload["chatty"]:
                ctx.heartbeat()  # what each streamed chunk does
        return "finished"

    app = App("stalls")
    app.agent("work", retry=RetryPolicy(max_attempts=2, base=0.01, cap=0.02), stall_timeout=0.35)(
        agent
    )
    chatty = await store.enqueue(NewTask("work", {"chatty": True}))
    silent = await store.enqueue(NewTask("work", {"chatty": False}))
    async with running(app, store, heartbeat_seconds=0.1):
        alive = await settle(store, chatty.task_id)
        stuck = await settle(store, silent.task_id)
    assert alive.state is TaskState.SUCCEEDED and alive.attempts == 1
    assert stuck.state is TaskState.DEAD and stuck.attempts == 2
    assert stuck.last_error["type"] == "TaskStalled"


async def test_sync_handlers_get_their_own_thread_pool(store: PostgresStore) -> None:
    lock = threading.Lock()
    now_running = 0
    peak = 0

    def blocking(ctx: TaskContext, payload: dict[str, Any]) -> None:
        nonlocal now_running, peak
        with lock:
            now_running += 1
            peak = max(peak, now_running)
        time.sleep(0.3)
        with lock:
            now_running -= 1

    results = await store.enqueue_batch([NewTask("work") for _ in range(12)])
    async with running(app_with(blocking), store, sync_threads=12):
        for r in results:
            await settle(store, r.task_id)
    # asyncio's default pool would cap this at min(32, cpu + 4) = 6 on two cores
    assert peak > 6


async def test_failures_are_logged_with_what_happens_next(store: PostgresStore) -> None:
    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise ValueError("provider said no")

    result = await store.enqueue(NewTask("work", max_attempts=2))
    with structlog.testing.capture_logs() as logs:
        async with running(app_with(handler), store):
            await settle(store, result.task_id)
    failed = [e for e in logs if e["event"] == "task_failed"]
    assert [e["attempt"] for e in failed] == [1, 2]
    assert failed[0]["next"].startswith("retry in") and failed[1]["next"] == "dead"
    assert failed[0]["error"] == "provider said no" and failed[0]["error_type"] == "ValueError"
