"""Small helpers shared by the integration tests: enqueue, claim and look at raw rows."""

from __future__ import annotations

from typing import Any

from conveyor.store.params import ClaimRequest, Finish, LeaseRef, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import ClaimedTask
from conveyor.types import TaskState


async def enqueue_many(
    store: PostgresStore, count: int, queue: str = "q", **fields: Any
) -> list[int]:
    """Enqueue ``count`` tasks of ``queue`` in one call; their ids in order."""
    results = await store.enqueue_batch(
        [NewTask(queue=queue, payload={"n": i}, **fields) for i in range(count)]
    )
    assert all(r.created for r in results)
    return [r.task_id for r in results]


async def claim(
    store: PostgresStore,
    *queues: str,
    limit: int = 10,
    worker: str = "w1",
    lease_seconds: float = 30.0,
) -> list[ClaimedTask]:
    """Claim up to ``limit`` tasks of ``queues`` (default ``q``)."""
    return await store.claim(ClaimRequest(queues or ("q",), limit, worker, lease_seconds))


def lease(task: ClaimedTask) -> LeaseRef:
    """The lease a worker holds on ``task``."""
    return LeaseRef(task.id, task.lease_token)


async def fetchval(store: PostgresStore, sql: str, *args: Any) -> Any:
    """One value of a raw SQL query against the store's database."""
    async with store.transaction() as conn:
        return await conn.fetchval(sql, *args)


async def execute(store: PostgresStore, sql: str, *args: Any) -> str:
    """Run a raw SQL statement against the store's database."""
    async with store.transaction() as conn:
        return await conn.execute(sql, *args)


async def active_ids(store: PostgresStore) -> set[int]:
    """Ids of every row in the hot ``tasks`` table."""
    return set(await fetchval(store, "SELECT coalesce(array_agg(id), '{}') FROM tasks"))


async def history_ids(store: PostgresStore) -> set[int]:
    """Ids of every row in ``task_history``."""
    return set(await fetchval(store, "SELECT coalesce(array_agg(id), '{}') FROM task_history"))


async def make_dead(
    store: PostgresStore, count: int, queue: str = "q", tenant_id: str = "default"
) -> list[int]:
    """``count`` tasks of ``queue`` finished as dead with an error; their ids."""
    ids = await enqueue_many(store, count, queue, tenant_id=tenant_id)
    claimed = await claim(store, queue, limit=count)
    assert sorted(c.id for c in claimed) == sorted(ids)
    refused = await store.finish(
        [
            Finish(lease(c), TaskState.DEAD, error={"type": "Boom", "message": f"task {c.id}"})
            for c in claimed
        ]
    )
    assert refused == set()
    return ids
