"""``conveyor events ID``: a task's log from the command line, followed to its end."""

from __future__ import annotations

import json

from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from tests.e2e.conftest import RunCli


async def test_events_prints_a_task_s_log_and_ends_after_its_final_event(
    run_cli: RunCli, store: PostgresStore
) -> None:
    await store.create_tenant("acme")
    made = await store.for_tenant("acme").enqueue(NewTask(queue="idle", payload={"n": 1}))
    waiting = run_cli("events", str(made.task_id), "--no-follow")
    assert waiting.returncode == 0, waiting.stderr
    assert waiting.stdout.split()[2:4] == ["created", '{"state":']

    await store.cancel(made.task_id, tenant_id="acme")
    followed = run_cli("events", str(made.task_id), "--json")  # ends by itself: final event
    assert followed.returncode == 0, followed.stderr
    lines = [json.loads(line) for line in followed.stdout.splitlines()]
    assert [e["kind"] for e in lines] == ["created", "cancelled"]
    assert all(e["task_id"] == made.task_id and e["queue"] == "idle" for e in lines)

    missing = run_cli("events", "999999")
    assert missing.returncode == 1 and "not found" in missing.stderr + missing.stdout
