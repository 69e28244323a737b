"""The task event log on a real PostgreSQL: lifecycle events written with the state change,
in order, readable after a position without gaps or repeats, per tenant and per task."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from conveyor.core.events import ORIGIN, EventPosition
from conveyor.store.event_records import EventFilter, NewEvent, TaskEvent
from conveyor.store.params import (
    Finish,
    LeaseRef,
    NewTask,
    QueueLimits,
    ReplayFilter,
    RetryLease,
    SuspendLease,
)
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import claim, enqueue_many, execute, fetchval, lease


async def settled(
    store: PostgresStore, read: Callable[[], Awaitable[list[TaskEvent]]]
) -> list[TaskEvent]:
    """What ``read`` returns once the log's horizon has passed every transaction that had
    begun when this was called (so every write the test made is readable).

    The horizon is the oldest transaction still running anywhere on the server (other
    tests' databases included): a read can lag a commit, never skip it.
    """
    began = await fetchval(store, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
    deadline = asyncio.get_running_loop().time() + 60
    while not await fetchval(store, "SELECT conveyor_event_horizon() >= $1", began):
        assert asyncio.get_running_loop().time() < deadline, "the horizon did not move"
        await asyncio.sleep(0.02)
    return await read()


async def task_log(store: PostgresStore, task_id: int, tenant: str = "default") -> list[TaskEvent]:
    return await settled(store, lambda: store.for_tenant(tenant).task_events(task_id, ORIGIN))


async def kinds(store: PostgresStore, task_id: int, tenant: str = "default") -> list[str]:
    return [e.kind for e in await task_log(store, task_id, tenant)]


async def test_a_task_s_life_is_logged_in_order(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1)
    [task] = await claim(store)
    await store.retry([RetryLease(lease(task), 0.0, {"type": "Boom", "message": "x"})])
    [again] = await claim(store)
    await store.record_step("default", f"step:{task_id}:plan", {"ok": 1}, task_id=task_id)
    await store.append_events(
        [NewEvent("default", task_id, "q", None, "progress", again.attempts, {"pct": 50})]
    )
    await store.finish([Finish(lease(again), TaskState.SUCCEEDED, {"done": True})])

    events = await task_log(store, task_id)
    assert [e.kind for e in events] == [
        "created",
        "started",
        "retried",
        "started",
        "step",
        "progress",
        "succeeded",
    ]
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    started = events[1]
    assert started.attempt == 1 and started.data == {"worker": "w1"}
    assert events[2].data["error"] == {"type": "Boom", "message": "x"}
    assert events[3].attempt == 2
    assert events[4].data == {"step": "plan"}
    assert events[5].data == {"pct": 50}
    assert all(e.task_id == task_id and e.queue == "q" for e in events)


async def test_dead_cancelled_released_and_snoozed_are_logged(store: PostgresStore) -> None:
    dead, snoozed, released, waiting = await enqueue_many(store, 4)
    claimed = {t.id: t for t in await claim(store, limit=3)}
    await store.finish(
        [Finish(lease(claimed[dead]), TaskState.DEAD, error={"type": "Bad", "message": "no"})]
    )
    await store.retry([RetryLease(lease(claimed[snoozed]), 5.0, count_attempt=False)])
    await store.release([lease(claimed[released])])
    assert await store.cancel(waiting, tenant_id="default") is TaskState.CANCELLED

    assert await kinds(store, dead) == ["created", "started", "dead"]
    assert await kinds(store, snoozed) == ["created", "started", "snoozed"]
    assert await kinds(store, released) == ["created", "started", "released"]
    assert await kinds(store, waiting) == ["created", "cancelled"]
    [*_, last] = await task_log(store, dead)
    assert last.data == {"error": {"type": "Bad", "message": "no"}}


async def test_an_expired_lease_is_logged_as_a_retry_then_dead(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1, max_attempts=1)
    await claim(store, lease_seconds=0.01)
    await asyncio.sleep(0.05)
    reaped = await store.reap_expired()
    assert reaped is not None and reaped.dead == (task_id,)
    events = await task_log(store, task_id)
    assert [e.kind for e in events] == ["created", "started", "dead"]
    assert events[-1].data["error"]["type"] == "LeaseExpired"


async def test_a_refused_finish_writes_no_event(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1)
    [task] = await claim(store)
    stale = LeaseRef(task.id, task.lease_token + 1000)
    assert await store.finish([Finish(stale, TaskState.SUCCEEDED)]) == {task_id}
    assert await kinds(store, task_id) == ["created", "started"]


async def test_a_queue_can_turn_its_lifecycle_events_off(store: PostgresStore) -> None:
    await store.set_queue_limits(QueueLimits("quiet", events=False))
    [task_id] = await enqueue_many(store, 1, queue="quiet")
    [task] = await claim(store, "quiet")
    await store.append_events(
        [NewEvent("default", task_id, "quiet", None, "note", 1, {"said": "still here"})]
    )
    await store.finish([Finish(lease(task), TaskState.SUCCEEDED)])
    assert await kinds(store, task_id) == ["note"]
    await store.set_queue_limits(QueueLimits("quiet", events=True))
    [task_id] = await enqueue_many(store, 1, queue="quiet")
    assert await kinds(store, task_id) == ["created"]


async def test_tenants_see_only_their_own_events(store: PostgresStore) -> None:
    await store.create_tenant("acme")
    await store.create_tenant("rival")
    [mine] = await enqueue_many(store, 1, tenant_id="acme", group_id="g1")
    [theirs] = await enqueue_many(store, 1, tenant_id="rival", group_id="g1")
    acme = store.for_tenant("acme")
    assert [e.task_id for e in await settled(store, lambda: acme.events(ORIGIN))] == [mine]
    assert await acme.task_events(theirs, ORIGIN) == []
    assert [e.task_id for e in await acme.events(ORIGIN, EventFilter(group_id="g1"))] == [mine]
    assert await acme.events(ORIGIN, EventFilter(group_id="other")) == []
    assert await acme.events(ORIGIN, EventFilter(queue="elsewhere")) == []
    assert await acme.events(ORIGIN, EventFilter(task_id=theirs)) == []


async def test_reading_after_a_position_neither_misses_nor_repeats(store: PostgresStore) -> None:
    await enqueue_many(store, 5)
    await settled(store, lambda: store.event_tail(ORIGIN))
    first = await store.event_tail(ORIGIN, limit=2)
    rest = await store.event_tail(first[-1].position)
    assert len(first) == 2 and len(rest) == 3
    assert await store.event_head() == rest[-1].position
    assert await store.event_tail(rest[-1].position) == []


async def test_an_event_of_an_open_transaction_holds_back_later_ones(
    store: PostgresStore, database_dsn: str
) -> None:
    """The horizon: an event committed later with an earlier transaction is not skipped."""
    slow = await asyncpg.connect(database_dsn)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute(
            "INSERT INTO task_events (tenant_id, task_id, queue, kind) "
            "VALUES ('default', 1, 'q', 'early')"
        )
        await enqueue_many(store, 1)  # a later transaction commits first
        seen = await store.event_tail(ORIGIN)
        assert seen == []  # held back behind the open transaction
        await transaction.commit()
        seen = await settled(store, lambda: store.event_tail(ORIGIN))
        assert [e.kind for e in seen] == ["early", "created"]
    finally:
        await slow.close()


@pytest.mark.timeout(90)
async def test_concurrent_writers_give_a_gapless_order_to_a_tailing_reader(
    wide_store: PostgresStore,
) -> None:
    """Readers tailing while 8 writers commit out of order see every event once."""
    seen: list[TaskEvent] = []
    stop = asyncio.Event()

    async def tail() -> None:
        position = ORIGIN
        while True:
            done = stop.is_set()
            batch = await wide_store.event_tail(position, limit=50)
            seen.extend(batch)
            if batch:
                position = batch[-1].position
            elif done and len(seen) == await fetchval(
                wide_store, "SELECT count(*) FROM task_events"
            ):
                return
            else:
                await asyncio.sleep(0.005)

    async def writer(n: int) -> None:
        for i in range(25):
            await wide_store.enqueue_batch(
                [NewTask(queue="q", payload={"w": n, "i": i}) for _ in range(1 + i % 3)]
            )

    reader = asyncio.create_task(tail())
    await asyncio.gather(*(writer(n) for n in range(8)))
    stop.set()
    await reader
    total = await fetchval(wide_store, "SELECT count(*) FROM task_events")
    assert len(seen) == total == 8 * sum(1 + i % 3 for i in range(25))
    positions = [e.position for e in seen]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


async def test_event_positions_parse_back(store: PostgresStore) -> None:
    await enqueue_many(store, 1)
    [event] = await settled(store, lambda: store.event_tail(ORIGIN))
    assert EventPosition.parse(str(event.position)) == event.position


async def test_writes_that_log_events_wake_the_streams_once_per_burst(
    store: PostgresStore, database_dsn: str
) -> None:
    """The store pokes its EventWake after each logging write; the default sends one
    pg_notify('conveyor_events') per burst, in a transaction of its own."""
    listener = await asyncpg.connect(database_dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("conveyor_events", lambda *args: heard.put_nowait(args[2]))
    try:
        await enqueue_many(store, 3)
        await asyncio.wait_for(heard.get(), timeout=10)
        tasks = await claim(store, limit=3)
        await store.finish([Finish(lease(t), TaskState.SUCCEEDED) for t in tasks])
        await asyncio.wait_for(heard.get(), timeout=10)
        await asyncio.sleep(0.2)
        assert heard.qsize() <= 1  # claim and finish, 3 tasks each: one or two wake-ups
    finally:
        await listener.close()


async def test_a_replayed_dead_task_s_log_goes_on(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1, max_attempts=1)
    [task] = await claim(store)
    await store.finish([Finish(lease(task), TaskState.DEAD, error={"type": "X", "message": ""})])
    assert await store.replay_dead(ReplayFilter(task_ids=(task_id,))) == [task_id]
    [again] = await claim(store)
    await store.finish([Finish(lease(again), TaskState.SUCCEEDED)])
    assert await kinds(store, task_id) == [
        "created",
        "started",
        "dead",
        "replayed",
        "started",
        "succeeded",
    ]


async def test_a_durable_wait_is_logged(store: PostgresStore) -> None:
    approved, timed_out = await enqueue_many(store, 2)
    claimed = {t.id: t for t in await claim(store, limit=2)}
    await store.suspend(
        [
            SuspendLease(lease(claimed[approved]), "approval", 3600),
            SuspendLease(lease(claimed[timed_out]), "reply", 0.01),
        ]
    )
    await store.deliver_signal(approved, "approval", {"ok": True})
    await asyncio.sleep(0.05)
    assert await store.expire_waits() == [timed_out]
    assert await kinds(store, approved) == ["created", "started", "waiting", "signal"]
    assert await kinds(store, timed_out) == ["created", "started", "waiting", "wait_timed_out"]
    log = await task_log(store, approved)
    assert log[2].data["signal"] == "approval" and log[3].data == {"name": "approval"}


async def test_a_write_transaction_in_another_database_does_not_hold_the_log_back(
    store: PostgresStore, database_dsn: str
) -> None:
    """Only this database's transactions can write its events: a long transaction next door
    (another database on the same server) leaves the horizon alone."""
    elsewhere = await asyncpg.connect(database_dsn, database="postgres")
    try:
        transaction = elsewhere.transaction()
        await transaction.start()
        await elsewhere.execute("SELECT pg_current_xact_id()")  # takes an xid, holds it
        await enqueue_many(store, 1)
        deadline = asyncio.get_running_loop().time() + 30
        while not await store.event_tail(ORIGIN):
            assert asyncio.get_running_loop().time() < deadline, "held back by another database"
            await asyncio.sleep(0.02)
        await transaction.rollback()
    finally:
        await elsewhere.close()


async def test_reads_never_go_below_a_horizon_already_seen(store: PostgresStore) -> None:
    """conveyor_event_horizon() can move back: a transaction of another database counts
    again once pg_stat_activity no longer shows it there (it ended between the snapshot and
    that read, or it was prepared for two-phase commit). An event stream relies on a later
    read returning all an earlier one did, so the store reads at least the horizon it has
    already seen. The move back is made here by redefining the function in this test's
    own database to stop below every event."""
    ids = await enqueue_many(store, 3)
    seen = await settled(store, lambda: store.event_tail(ORIGIN))
    assert [e.task_id for e in seen] == ids
    await execute(
        store,
        "CREATE OR REPLACE FUNCTION conveyor_event_horizon() RETURNS bigint "
        "LANGUAGE sql STABLE AS $$ SELECT 1::bigint $$",
    )
    assert await store.event_tail(ORIGIN) == seen
    assert await store.for_tenant("default").events(ORIGIN) == seen
    assert await store.for_tenant("default").task_events(ids[-1], ORIGIN) == seen[-1:]
    assert await store.event_head() == seen[-1].position
    assert not await store.event_pending(seen[-1].position)
    assert (await store.event_horizon()).horizon > seen[-1].position.xid
