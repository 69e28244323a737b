"""Waiting tasks from the command line: ``conveyor show`` says what a task waits for,
``conveyor signal`` resumes it, ``conveyor status`` counts it, and mistakes are clear
errors naming the argument."""

from __future__ import annotations

import json

from conveyor.store.params import ClaimRequest, LeaseRef, NewTask, SuspendLease, TaskListParams
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.conftest import RunCli
from tests.e2e.test_cli import assert_clear_errors


async def waiting_task(store: PostgresStore, queue: str = "approver") -> int:
    await store.declare_queues([queue])
    created = await store.enqueue(NewTask(queue, {"doc": "brief"}))
    [claimed] = await store.claim(ClaimRequest((queue,), 1, "w", 30))
    wait = SuspendLease(LeaseRef(claimed.id, claimed.lease_token), "approval", 3600)
    assert await store.suspend([wait]) == set()
    return created.task_id


async def test_show_status_and_signal_a_waiting_task(run_cli: RunCli, store: PostgresStore) -> None:
    task_id = await waiting_task(store)
    shown = json.loads(run_cli("show", str(task_id)).stdout)
    assert shown["state"] == "waiting" and shown["waiting_for"] == "approval"
    assert shown["wait_until"] is not None and shown["worker_id"] is None

    status = json.loads(run_cli("status", "--json").stdout)
    [queue] = [q for q in status["queues"] if q["queue"] == "approver"]
    assert (queue["waiting"], queue["running"], queue["queued"]) == (1, 0, 0)

    sent = run_cli("signal", str(task_id), "approval", "--data", '{"approved": true}')
    assert sent.returncode == 0, sent.stderr
    assert "the task resumes" in sent.stdout
    again = run_cli("signal", str(task_id), "approval", "--data", '{"approved": true}')
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert (await store.get_task(task_id)).state is TaskState.SCHEDULED
    held = await store.get_signal("default", task_id, "approval")
    assert held is not None and held.payload == {"approved": True}

    other = await waiting_task(store)
    early = run_cli("signal", str(other), "comment")  # no --data: null, kept for later
    assert early.returncode == 0 and "kept for when the task waits" in early.stdout


async def test_signal_mistakes_are_clear_errors(run_cli: RunCli, store: PostgresStore) -> None:
    task_id = str(await waiting_task(store))
    assert run_cli("signal", task_id, "approval", "--data", "1").returncode == 0
    assert run_cli("cancel", str(await waiting_task(store, "other"))).returncode == 0
    listed = await store.list_tasks("default", TaskListParams(state=TaskState.CANCELLED))
    cancelled = listed[0].id
    cases = [
        (("signal", task_id, "approval", "--data", "2"), "first one holds"),
        (("signal", task_id, "bad name"), "not a signal name"),
        (("signal", task_id, "conveyor:webhook"), "not a signal name"),
        (("signal", task_id, "approval", "--data", "NaN"), "NaN is not JSON"),
        (("signal", task_id, "approval", "--data", "{"), "not valid JSON"),
        (("signal", "987654321", "approval"), "task 987654321 not found"),
        (("signal", "-1", "approval"), "is not a task id"),
        (("signal", str(cancelled), "approval"), "has finished (cancelled)"),
    ]
    assert_clear_errors(run_cli, cases)
