"""``isolation="process"`` on real PostgreSQL: caps kill only the child, errors and results
cross the process boundary, and a timeout or cancel leaves no child behind."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from conveyor import App, RetryPolicy, TaskContext
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration import isolated_agents
from tests.integration.worker_harness import running, settle

FAST = RetryPolicy(max_attempts=3, base=0.01, cap=0.05)


def isolated_app(handler: Any, **agent: Any) -> App:
    app = App("isolated")
    app.agent("iso", retry=FAST, isolation="process", **agent)(handler)
    return app


async def wait_for_pid(pid_file: Path, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_file.exists() and pid_file.read_text():
            return int(pid_file.read_text())
        await asyncio.sleep(0.05)
    raise AssertionError(f"the isolated handler never wrote {pid_file}")


async def test_isolated_task_returns_its_result_from_another_process(
    store: PostgresStore,
) -> None:
    result = await store.enqueue(NewTask("iso", {"n": 21}))
    async with running(isolated_app(isolated_agents.describe), store):
        record = await settle(store, result.task_id)
    assert record.state is TaskState.SUCCEEDED
    assert record.result["doubled"] == 42 and record.result["task_id"] == result.task_id
    assert record.result["pid"] != os.getpid()


async def test_a_typed_isolated_handler_gets_its_model_and_bad_payloads_fail_early(
    store: PostgresStore,
) -> None:
    good = await store.enqueue(NewTask("iso", {"topic": "shoes", "words": 50}))
    bad = await store.enqueue(NewTask("iso", {"topic": "shoes", "words": "many"}, max_attempts=3))
    async with running(isolated_app(isolated_agents.write_typed), store):
        done = await settle(store, good.task_id)
        refused = await settle(store, bad.task_id)
    assert done.state is TaskState.SUCCEEDED
    assert done.result["text"] == "50 words on shoes" and done.result["pid"] != os.getpid()
    assert refused.state is TaskState.DEAD and refused.attempts == 1
    assert "payload does not match Brief: words" in refused.last_error["message"]


async def test_memory_hog_is_killed_and_the_worker_keeps_serving(store: PostgresStore) -> None:
    async def normal(ctx: TaskContext, payload: dict[str, Any]) -> str:
        return "fine"

    app = App("mixed")
    app.agent("hog", isolation="process", memory_limit_mb=128, retry=FAST)(
        isolated_agents.hog_memory
    )
    app.agent("iso", isolation="process")(isolated_agents.describe)
    app.agent("work")(normal)
    hog = await store.enqueue(NewTask("hog", max_attempts=3))
    work = await store.enqueue(NewTask("work"))
    async with running(app, store):
        hog_record = await settle(store, hog.task_id)
        work_record = await settle(store, work.task_id)
        after = await store.enqueue(NewTask("iso", {"n": 1}))
        after_record = await settle(store, after.task_id)
    assert hog_record.state is TaskState.DEAD and hog_record.attempts == 1  # not retried
    assert hog_record.last_error["type"] == "IsolationLimitExceeded"
    assert "exceeded its memory limit of 128 MB" in hog_record.last_error["message"]
    assert work_record.state is TaskState.SUCCEEDED and work_record.result == "fine"
    assert after_record.state is TaskState.SUCCEEDED


async def test_cpu_burner_is_killed_at_its_cpu_limit(store: PostgresStore) -> None:
    result = await store.enqueue(NewTask("iso", max_attempts=3))
    app = isolated_app(isolated_agents.burn_cpu, cpu_limit_seconds=1, timeout=60)
    started = time.monotonic()
    async with running(app, store):
        record = await settle(store, result.task_id)
    assert time.monotonic() - started < 10
    assert record.state is TaskState.DEAD and record.attempts == 1
    assert record.last_error["type"] == "IsolationLimitExceeded"
    assert "exceeded its CPU limit of 1s (killed by SIGXCPU)" in record.last_error["message"]


async def test_handler_errors_are_retried_per_policy_with_the_child_traceback(
    store: PostgresStore,
) -> None:
    recovers = await store.enqueue(NewTask("iso", {"succeed_on": 2}, max_attempts=3))
    never = await store.enqueue(NewTask("iso", {"succeed_on": 99}, max_attempts=2))
    async with running(isolated_app(isolated_agents.flaky), store):
        recovered = await settle(store, recovers.task_id)
        exhausted = await settle(store, never.task_id)
    assert recovered.state is TaskState.SUCCEEDED and recovered.attempts == 2
    assert recovered.result == "fixed on attempt 2"
    assert recovered.last_error["type"] == "IsolatedTaskError"
    assert recovered.last_error["message"] == "ValueError: broken on attempt 1"
    assert exhausted.state is TaskState.DEAD and exhausted.attempts == 2
    assert "exhausted" in exhausted.last_error["gave_up"]
    # the child's own traceback, pointing into the handler, is kept
    assert "isolated_agents.py" in exhausted.last_error["traceback"]
    assert "ValueError: broken on attempt 2" in exhausted.last_error["traceback"]


async def test_permanent_error_in_the_child_is_not_retried(store: PostgresStore) -> None:
    result = await store.enqueue(NewTask("iso", max_attempts=5))
    async with running(isolated_app(isolated_agents.refuse), store):
        record = await settle(store, result.task_id)
    assert record.state is TaskState.DEAD and record.attempts == 1
    assert record.last_error["type"] == "PermanentError"
    assert record.last_error["message"] == "bad input"


async def test_timeout_kills_the_child_process(store: PostgresStore, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    result = await store.enqueue(
        NewTask("iso", {"pid_file": str(pid_file)}, max_attempts=1, timeout_seconds=2)
    )
    async with running(isolated_app(isolated_agents.sleep_forever), store):
        pid = await wait_for_pid(pid_file)
        assert Path(f"/proc/{pid}").exists()
        record = await settle(store, result.task_id)
        assert not Path(f"/proc/{pid}").exists()  # killed and reaped, no orphan
    assert record.state is TaskState.DEAD
    assert record.last_error["type"] == "TaskTimedOut"


async def test_cancel_kills_the_child_process(store: PostgresStore, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    result = await store.enqueue(NewTask("iso", {"pid_file": str(pid_file)}))
    async with running(isolated_app(isolated_agents.sleep_forever), store):
        pid = await wait_for_pid(pid_file)
        assert await store.cancel(result.task_id) is TaskState.RUNNING
        record = await settle(store, result.task_id)
        assert not Path(f"/proc/{pid}").exists()
    assert record.state is TaskState.CANCELLED


async def test_shutdown_releases_the_task_and_kills_the_child(
    store: PostgresStore, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    result = await store.enqueue(NewTask("iso", {"pid_file": str(pid_file)}))
    app = isolated_app(isolated_agents.sleep_forever)
    async with running(app, store, grace_seconds=0.1) as worker:
        pid = await wait_for_pid(pid_file)
    assert not Path(f"/proc/{pid}").exists()
    record = await store.get_task(result.task_id)
    assert record.state is TaskState.QUEUED and record.attempts == 0
    assert worker.stats["released"] == 1
