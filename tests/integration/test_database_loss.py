"""Losing the database for real: connections reset mid-use by a proxy we cut, refused while
it is cut, and back when it is restored. The store translates it, the listener and the
pool come back, and a worker rides it out without charging attempts or doubling effects."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor import App, RetryPolicy, TaskContext
from conveyor.core.worker_health import WorkerHealth, WorkerReport, judge_worker
from conveyor.errors import DatabaseUnavailable, WorkerCrashed
from conveyor.store.connection import connect
from conveyor.store.database import connect_when_ready
from conveyor.store.notify import NotificationListener
from conveyor.store.params import ClaimRequest, Finish, LeaseRef, NewTask, WorkerInfo
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from conveyor.worker.options import WorkerOptions
from conveyor.worker.recorder import OutcomeRecorder
from conveyor.worker.runtime import Worker
from tests.integration.worker_harness import running
from tests.support.databases import with_database
from tests.support.tcp_proxy import CuttableProxy


@pytest.fixture
async def proxy(database_dsn: str) -> AsyncIterator[tuple[CuttableProxy, str]]:
    """A cuttable proxy in front of this test's database, and its DSN."""
    cuttable, dsn = await CuttableProxy.for_dsn(database_dsn)
    yield cuttable, dsn
    await cuttable.close()


async def until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_a_reset_connection_is_database_unavailable_and_the_pool_recovers(
    proxy: tuple[CuttableProxy, str],
) -> None:
    cuttable, dsn = proxy
    store = await PostgresStore.open(dsn, min_size=2, max_size=2)
    try:
        await store.queue_status()
        cuttable.cut()
        with pytest.raises(DatabaseUnavailable) as lost:
            await store.queue_status()
        assert lost.value.retryable
        cuttable.restore()
        # every pooled connection was broken; each is discarded and replaced on use
        for _ in range(4):
            assert await store.queue_status() == []
    finally:
        await store.close()


async def test_the_listener_listens_again_after_the_connection_is_reset(
    proxy: tuple[CuttableProxy, str], database_dsn: str
) -> None:
    cuttable, dsn = proxy
    heard: list[str] = []
    reconnected = asyncio.Event()
    listener = NotificationListener(dsn, on_reconnect=reconnected.set, probe_seconds=0.2)
    listener.subscribe("conveyor_tasks", heard.append)
    await listener.start()
    sender = await connect(database_dsn)
    try:
        assert listener.connected
        cuttable.cut()
        await until(lambda: not listener.connected)
        await asyncio.sleep(0.3)  # reconnects are refused meanwhile
        cuttable.restore()
        await asyncio.wait_for(reconnected.wait(), 15)
        assert listener.reconnects == 1 and listener.connected
        await sender.execute("NOTIFY conveyor_tasks, 'after'")
        await until(lambda: heard == ["after"])
    finally:
        await sender.close()
        await listener.stop()


async def test_start_up_waits_for_the_database_and_gives_up_on_a_wrong_name(
    proxy: tuple[CuttableProxy, str],
) -> None:
    cuttable, dsn = proxy
    cuttable.cut()
    waiting = asyncio.create_task(connect_when_ready(dsn, wait_seconds=20))
    await asyncio.sleep(0.8)
    assert not waiting.done()
    cuttable.restore()
    conn = await asyncio.wait_for(waiting, 15)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()

    cuttable.cut()
    with pytest.raises(DatabaseUnavailable):
        await connect_when_ready(dsn, wait_seconds=0.5)
    cuttable.restore()

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as wrong:
        await connect_when_ready(with_database(dsn, "no_such_database"), wait_seconds=30)
    assert not wrong.value.retryable and time.monotonic() - started < 5


def effect_app(calls: list[int], **agent: Any) -> App:
    app = App("loss")

    @app.agent("work", retry=RetryPolicy(max_attempts=2, base=0.01, cap=0.05), **agent)
    async def work(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(float(payload.get("sleep", 0)))
        if payload["n"] % 2:  # no store call: its outcome waits in the worker during a cut
            return {"attempt": ctx.task.attempt}
        step = await ctx.step("double", lambda: payload["n"] * 2)

        async def write(conn: Any) -> int:
            calls.append(payload["n"])
            await conn.execute("INSERT INTO loss_effects (n) VALUES ($1)", payload["n"])
            return int(payload["n"])

        await ctx.once_in_transaction(f"effect:{payload['n']}", write)
        return {"step": step, "attempt": ctx.task.attempt}

    return app


async def create_effects_table(store: PostgresStore) -> None:
    async with store.transaction() as conn:
        await conn.execute("CREATE TABLE loss_effects (n int NOT NULL)")


@pytest.mark.timeout(90)
async def test_a_worker_rides_out_a_lost_database_without_charging_attempts(
    store: PostgresStore, proxy: tuple[CuttableProxy, str]
) -> None:
    cuttable, dsn = proxy
    await create_effects_table(store)
    total = 300
    await store.enqueue_batch([NewTask("work", {"n": n, "sleep": 0.2}) for n in range(total)])
    calls: list[int] = []
    proxied = await PostgresStore.open(dsn, min_size=1, max_size=6)
    saw_failing_writes = False
    try:
        async with running(effect_app(calls), proxied, concurrency=50, lease_seconds=8) as worker:
            await until(lambda: worker.stats["succeeded"] >= 50)
            cuttable.cut()
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                saw_failing_writes = saw_failing_writes or worker.writes_failing
                await asyncio.sleep(0.05)
            claimed_while_cut = worker.stats["claimed"]
            cuttable.restore()
            await until(lambda: worker.stats["succeeded"] >= total, timeout=60)
            assert worker.failure is None
        async with store.transaction() as conn:
            rows = await conn.fetch("SELECT state, attempts, result FROM task_history ORDER BY id")
            effects = await conn.fetch("SELECT n, count(*) AS c FROM loss_effects GROUP BY n")
    finally:
        await proxied.close()
    assert saw_failing_writes, "the cut never showed as failing writes"
    assert claimed_while_cut < total
    assert [r["state"] for r in rows] == ["succeeded"] * total
    assert {r["attempts"] for r in rows} == {1}, "a lost database charged an attempt"
    assert len(effects) == total // 2 and {e["c"] for e in effects} == {1}


async def test_an_effect_cut_off_mid_transaction_is_done_again_once(
    store: PostgresStore, proxy: tuple[CuttableProxy, str]
) -> None:
    cuttable, dsn = proxy
    await create_effects_table(store)
    runs = 0
    app = App("cut")

    @app.agent("work")
    async def work(ctx: TaskContext, payload: dict[str, Any]) -> int:
        async def write(conn: Any) -> int:
            nonlocal runs
            runs += 1
            await conn.execute("INSERT INTO loss_effects (n) VALUES (1)")
            if runs == 1:  # the connection dies before the commit: nothing of it stays
                cuttable.cut()
                asyncio.get_running_loop().call_later(0.5, cuttable.restore)
                await conn.execute("SELECT 1")
            return runs

        first = await ctx.once_in_transaction("pay", write)
        again = await ctx.once_in_transaction("pay", write)  # recorded: not run
        return int(first) * 10 + int(again)

    task = await store.enqueue(NewTask("work"))
    proxied = await PostgresStore.open(dsn, min_size=1, max_size=4)
    try:
        async with running(app, proxied) as worker:
            await until(lambda: worker.stats["succeeded"] == 1)
    finally:
        await proxied.close()
    record = await store.get_task(task.task_id)
    assert record.result == 22 and record.attempts == 1 and runs == 2
    async with store.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM loss_effects") == 1


async def test_an_effect_that_raises_leaves_nothing_and_runs_again(store: PostgresStore) -> None:
    await create_effects_table(store)
    app = App("raise")

    @app.agent("work", retry=RetryPolicy(max_attempts=3, base=0.01, cap=0.02))
    async def work(ctx: TaskContext, payload: dict[str, Any]) -> int:
        async def write(conn: Any) -> int:
            await conn.execute("INSERT INTO loss_effects (n) VALUES ($1)", ctx.task.attempt)
            if ctx.task.attempt == 1:
                raise RuntimeError("the effect failed after writing")
            return ctx.task.attempt

        return int(await ctx.once_in_transaction("charge", write))

    task = await store.enqueue(NewTask("work"))
    async with running(app, store) as worker:
        await until(lambda: worker.stats["succeeded"] == 1)
    assert (await store.get_task(task.task_id)).result == 2
    async with store.transaction() as conn:
        assert [r["n"] for r in await conn.fetch("SELECT n FROM loss_effects")] == [2]


async def test_idempotency_keys_are_stable_per_tenant_and_key(store: PostgresStore) -> None:
    keys: list[str] = []
    app = App("keys")

    @app.agent("work", retry=RetryPolicy(max_attempts=2, base=0.01, cap=0.02))
    async def work(ctx: TaskContext, payload: dict[str, Any]) -> None:
        keys.append(ctx.idempotency_key("charge:7"))
        keys.append(ctx.idempotency_key("charge:8"))
        if ctx.task.attempt == 1:
            raise RuntimeError("retry me")

    await store.enqueue(NewTask("work"))
    async with running(app, store) as worker:
        await until(lambda: worker.stats["succeeded"] == 1)
    assert keys[0] == keys[2] and keys[1] == keys[3] and keys[0] != keys[1]


async def test_an_outcome_the_database_refuses_does_not_block_the_others(
    store: PostgresStore,
) -> None:
    await store.enqueue_batch([NewTask("work", {"n": n}) for n in range(3)])
    claimed = await store.claim(ClaimRequest(("work",), 3, "w1", 30, (3,)))
    leases = [LeaseRef(t.id, t.lease_token) for t in claimed]
    recorder = OutcomeRecorder(store, Counter(), asyncio.Lock(), on_written=lambda: None)
    recorder.add(Finish(leases[0], TaskState.SUCCEEDED, result={"ok": 1}))
    recorder.add(Finish(leases[1], TaskState.SUCCEEDED, result={"bad": "nul\x00here"}))
    recorder.add(Finish(leases[2], TaskState.SUCCEEDED, result={"ok": 3}))
    await recorder.flush()
    states = [(await store.get_task(lease.task_id)).state for lease in leases]
    assert states == [TaskState.SUCCEEDED, TaskState.DEAD, TaskState.SUCCEEDED]
    dead = await store.get_task(leases[1].task_id)
    assert dead.last_error is not None and dead.last_error["type"] == "OutcomeNotRecorded"
    assert recorder.unwritten == 0 and recorder.failing_since is None


async def test_status_sees_a_worker_that_holds_work_and_records_nothing(
    store: PostgresStore,
) -> None:
    await store.register_worker(WorkerInfo("w1", "host", 1, ("work",), 1))
    await store.enqueue_batch([NewTask("work") for _ in range(3)])
    held = await store.claim(ClaimRequest(("work",), 3, "w1", 30, (3,)))
    await store.heartbeat(
        "w1",
        [LeaseRef(t.id, t.lease_token) for t in held],
        30,
        unwritten=3,
        seconds_since_outcome=400,
    )
    (worker,) = await store.list_workers()
    assert worker.running == 3 and worker.unwritten == 3
    assert 399 < worker.seconds_since_outcome < 460
    report = WorkerReport(
        worker.state,
        worker.silent_seconds,
        worker.running,
        worker.concurrency,
        worker.seconds_since_outcome,
    )
    judged = judge_worker(report, lease_seconds=30, stuck_seconds=300)
    assert judged is WorkerHealth.OVER_CAPACITY  # 3 held by a worker of concurrency 1


async def test_a_worker_loop_that_dies_stops_the_worker_loudly(store: PostgresStore) -> None:
    class BrokenHeartbeat(PostgresStore):
        async def heartbeat(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug in the heartbeat")

    broken = await BrokenHeartbeat.open(store.dsn, min_size=1, max_size=4)
    app = App("dies")

    @app.agent("work")
    async def work(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    worker = Worker(app, broken, WorkerOptions(heartbeat_seconds=0.1, poll_seconds=0.1))
    try:
        with pytest.raises(WorkerCrashed, match="heartbeat loop died"):
            await asyncio.wait_for(worker.run(asyncio.Event()), 20)  # no stop: it stops itself
    finally:
        await broken.close()


async def test_a_claim_whose_reply_was_lost_is_handed_back_without_an_attempt(
    store: PostgresStore,
) -> None:
    await store.enqueue_batch([NewTask("work", {"n": n}) for n in range(3)])
    # the claim committed, but its reply never reached the worker: it knows only `kept`
    kept, *lost = await store.claim(ClaimRequest(("work",), 3, "w1", 30, (3,)))
    released = await store.release_orphans("w1", [kept.id])
    assert sorted(released) == sorted(t.id for t in lost)
    for task in lost:
        record = await store.get_task(task.id)
        assert record.state is TaskState.QUEUED and record.attempts == 0
    assert (await store.get_task(kept.id)).state is TaskState.RUNNING
    again = await store.claim(ClaimRequest(("work",), 3, "w2", 30, (3,)))
    assert sorted(t.id for t in again) == sorted(t.id for t in lost)
    assert {t.attempts for t in again} == {1}


async def test_user_code_errors_inside_store_transactions_stay_their_own(
    store: PostgresStore,
) -> None:
    with pytest.raises(FileNotFoundError):
        async with store.transaction():
            raise FileNotFoundError("the caller's own file")

    async def times_out(conn: Any) -> None:
        await conn.execute("SELECT 1")
        raise TimeoutError("the effect's own deadline")

    with pytest.raises(TimeoutError):
        await store.run_effect_in_transaction("default", "tx:own-timeout", times_out)
    assert await store.get_effect("default", "tx:own-timeout") is None  # rolled back
    assert await store.queue_status() == []  # and the pool is fine
