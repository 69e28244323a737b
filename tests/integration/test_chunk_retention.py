"""Live output retention on a real PostgreSQL: a task's output is kept while it runs and
for the retention after it ends, counted from its end, not from when the text was written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor.store.event_records import LiveChunk
from conveyor.store.params import Finish
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import claim, enqueue_many, fetchval, lease


async def test_output_is_kept_for_the_retention_after_its_task_ends(
    store: PostgresStore,
) -> None:
    running, ended_now, ended_long_ago = await enqueue_many(store, 3)
    tasks = {t.id: t for t in await claim(store, limit=3)}
    await store.append_chunks(
        [LiveChunk(i, tasks[i].lease_token, 0, "chunk", f"text of {i}", "default") for i in tasks]
    )
    # all three streamed their output an hour ago, early in long runs
    await fetchval(store, "UPDATE task_chunks SET at = now() - interval '1 hour' RETURNING 1")
    await store.finish(
        [
            Finish(lease(tasks[i]), TaskState.SUCCEEDED, result=None)
            for i in (ended_now, ended_long_ago)
        ]
    )
    await fetchval(
        store,
        "UPDATE task_history SET finished_at = now() - interval '30 minutes' WHERE id = $1 "
        "RETURNING 1",
        ended_long_ago,
    )
    cutoff = datetime.now(UTC) - timedelta(minutes=5)
    assert await store.prune_chunks(cutoff) == 1
    kept = await store.chunks_after(
        [("default", i, (0, -1)) for i in (running, ended_now, ended_long_ago)]
    )
    assert sorted(c.task_id for c in kept) == [running, ended_now]
