"""Periodic tasks on real PostgreSQL: each cron tick is enqueued exactly once, however many
workers ask at the same time; registration does not fire a past tick; a missed run of
several ticks enqueues only the latest."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.errors import ConfigurationError, InvalidTask, UnknownTenant
from conveyor.store.params import PeriodicTask
from conveyor.store.postgres import PostgresStore
from tests.integration.helpers import claim, fetchval

T0 = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)  # 30 s past a minute tick


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_one_task_per_tick(store: PostgresStore) -> None:
    await store.register_periodic(
        [PeriodicTask("report", "* * * * *", "analyst", payload={"kind": "daily"}, priority=10)],
        now=T0,
    )
    assert await store.enqueue_due_periodic(now=at(0)) == []  # 12:00 was before registration
    assert await store.enqueue_due_periodic(now=at(20)) == []  # 12:00:50: no new tick

    first = await store.enqueue_due_periodic(now=at(31))  # 12:01:01 crosses 12:01
    assert len(first) == 1
    assert await store.enqueue_due_periodic(now=at(45)) == []  # same tick again
    assert await store.enqueue_due_periodic(now=at(31)) == []

    exactly_on_tick = await store.enqueue_due_periodic(now=at(90))  # 12:02:00 sharp
    assert len(exactly_on_tick) == 1
    assert await store.enqueue_due_periodic(now=at(119)) == []

    [one, two] = [await store.get_task(i) for i in (*first, *exactly_on_tick)]
    assert one.queue == "analyst" and one.priority == 10
    assert one.payload == {"kind": "daily", "_tick": "2026-03-10T12:01:00+00:00"}
    assert two.payload["_tick"] == "2026-03-10T12:02:00+00:00"
    assert one.idempotency_key != two.idempotency_key
    assert len(await claim(store, "analyst", limit=10)) == 2


async def test_registration_does_not_fire_the_past_tick(store: PostgresStore) -> None:
    # Registered at 12:00:30 for a daily midnight job: the first run is the next midnight.
    await store.register_periodic([PeriodicTask("nightly", "0 0 * * *", "q")], now=T0)
    assert await store.enqueue_due_periodic(now=at(60)) == []
    assert await store.enqueue_due_periodic(now=at(11 * 3600)) == []  # 23:00:30
    assert len(await store.enqueue_due_periodic(now=at(12 * 3600))) == 1  # 00:00:30 next day


async def test_missed_ticks_enqueue_only_the_latest(store: PostgresStore) -> None:
    await store.register_periodic([PeriodicTask("every5", "*/5 * * * *", "q")], now=T0)
    # Nobody ran for 23 minutes: 12:05, 12:10, 12:15 and 12:20 were missed.
    created = await store.enqueue_due_periodic(now=at(23 * 60))
    assert len(created) == 1
    assert (await store.get_task(created[0])).payload["_tick"] == "2026-03-10T12:20:00+00:00"
    assert await store.enqueue_due_periodic(now=at(24 * 60)) == []
    assert len(await store.enqueue_due_periodic(now=at(25 * 60))) == 1  # 12:25


@pytest.mark.timeout(60)
async def test_ten_concurrent_callers_enqueue_each_tick_once(wide_store: PostgresStore) -> None:
    await wide_store.register_periodic(
        [PeriodicTask("a", "* * * * *", "q"), PeriodicTask("b", "*/2 * * * *", "q")], now=T0
    )
    for minute in range(1, 5):
        now = at(minute * 60)
        results = await asyncio.gather(
            *(wide_store.enqueue_due_periodic(now=now) for _ in range(10))
        )
        created = [i for r in results for i in r]
        expected = 1 + (1 if minute % 2 == 0 else 0)  # "a" every minute, "b" every other
        assert len(created) == expected, f"minute {minute}: {results}"
        assert len(set(created)) == expected
    assert await fetchval(wide_store, "SELECT count(*) FROM tasks") == 4 + 2


async def test_re_registering_keeps_the_last_tick_and_updates_the_task(
    store: PostgresStore,
) -> None:
    await store.register_periodic([PeriodicTask("p", "* * * * *", "old")], now=T0)
    assert len(await store.enqueue_due_periodic(now=at(40))) == 1  # 12:01
    # Re-registered later (a deploy) with a new queue: 12:01 does not fire again.
    await store.register_periodic([PeriodicTask("p", "* * * * *", "new")], now=at(50))
    assert await store.enqueue_due_periodic(now=at(55)) == []
    [task_id] = await store.enqueue_due_periodic(now=at(95))  # 12:02
    assert (await store.get_task(task_id)).queue == "new"


async def test_periodic_tasks_belong_to_their_tenant(store: PostgresStore) -> None:
    await store.create_tenant("acme")
    await store.register_periodic(
        [PeriodicTask("acme-sync", "* * * * *", "q", tenant_id="acme", max_attempts=2)], now=T0
    )
    [task_id] = await store.enqueue_due_periodic(now=at(60))
    record = await store.get_task(task_id, tenant_id="acme")
    assert record.max_attempts == 2


async def test_a_malformed_schedule_is_refused_at_registration(store: PostgresStore) -> None:
    with pytest.raises(ConfigurationError, match="cron"):
        await store.register_periodic([PeriodicTask("bad", "every monday", "q")], now=T0)
    with pytest.raises(InvalidTask, match="queue"):
        await store.register_periodic([PeriodicTask("bad", "* * * * *", "no spaces")], now=T0)
    with pytest.raises(InvalidTask, match="priority"):
        await store.register_periodic([PeriodicTask("bad", "* * * * *", "q", priority=0)], now=T0)
    # Nothing half-registered blocks the schedules that are fine.
    await store.register_periodic([PeriodicTask("good", "* * * * *", "q")], now=T0)
    assert len(await store.enqueue_due_periodic(now=at(60))) == 1


async def test_a_schedule_for_an_unknown_tenant_is_refused(store: PostgresStore) -> None:
    with pytest.raises(UnknownTenant):
        await store.register_periodic(
            [PeriodicTask("a-ghost", "* * * * *", "q", tenant_id="ghost")], now=T0
        )
    await store.register_periodic([PeriodicTask("b-good", "* * * * *", "q")], now=T0)
    assert len(await store.enqueue_due_periodic(now=at(60))) == 1
