"""The API's event hub on a real PostgreSQL: one reader fans out to many streams, a stream
catches up from the log and follows without gap or repeat while writers race it, a slow
stream is cut and resumes from the log, and a lost LISTEN connection comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import partial

import asyncpg
import pytest

from conveyor.api.events.hub import EventHub, StreamCut
from conveyor.api.events.running import HubConfig, running_hub
from conveyor.api.events.streams import finished_task_replay, task_stream, tenant_stream
from conveyor.client.sse import ServerSentEvent, SSEDecoder
from conveyor.core.events import ORIGIN, EventPosition
from conveyor.store.event_records import EventFilter, NewEvent, TaskEvent
from conveyor.store.params import Finish, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import claim, enqueue_many, fetchval, lease
from tests.integration.test_event_log import settled

DEADLINE = 30.0
"""Seconds before a wait is a failure (never a measurement)."""


def parse(frames: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    found = []
    for line in b"".join(frames).decode().split("\n"):
        event = decoder.feed(line)
        if event is not None:
            found.append(event)
    return found


class Reader:
    """Drains a stream of frames in the background, as an SSE response would."""

    def __init__(self, frames: AsyncIterator[bytes]) -> None:
        self.frames: list[bytes] = []
        self.ended = False
        self._task = asyncio.create_task(self._drain(frames))

    async def _drain(self, frames: AsyncIterator[bytes]) -> None:
        async for frame in frames:
            self.frames.append(frame)
        self.ended = True

    def events(self) -> list[ServerSentEvent]:
        return [e for e in parse(self.frames) if e.event != "end"]

    async def until(self, done: Callable[[Reader], bool]) -> None:
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while not done(self):
            assert asyncio.get_running_loop().time() < deadline, self.events()[-3:]
            if self._task.done():
                self._task.result()  # its error, if any
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def hub(store: PostgresStore) -> AsyncIterator[EventHub]:
    async with running_hub(store, HubConfig(direct_dsn=store.direct_dsn)) as running:
        yield running


async def log_of(store: PostgresStore, tenant: str, narrow: EventFilter | None = None) -> list[str]:
    """The ids of ``tenant``'s events, once the log has settled."""
    view = store.for_tenant(tenant)
    found: list[TaskEvent] = []
    position = ORIGIN
    while True:
        batch = await settled(store, partial(view.events, position, narrow))
        found += batch
        if len(batch) < 1000:
            break
        position = batch[-1].position
    return [str(e.position) for e in found]


async def test_one_read_fans_out_to_every_stream_by_tenant_and_task(
    store: PostgresStore, hub: EventHub
) -> None:
    await store.create_tenant("acme")
    await store.create_tenant("rival")
    acme, rival = store.for_tenant("acme"), store.for_tenant("rival")
    everything = Reader(tenant_stream(hub, acme, EventFilter(), None))
    group = Reader(tenant_stream(hub, acme, EventFilter(group_id="g"), None))
    theirs = Reader(tenant_stream(hub, rival, EventFilter(), None))
    await asyncio.sleep(0)  # let them subscribe
    [first, second] = await enqueue_many(store, 2, tenant_id="acme", group_id="g")
    [other] = await enqueue_many(store, 1, tenant_id="acme")
    [rival_task] = await enqueue_many(store, 1, tenant_id="rival")
    one = Reader(task_stream(hub, acme, first, ORIGIN))
    await everything.until(lambda r: len(r.events()) == 3)
    await group.until(lambda r: len(r.events()) == 2)
    await theirs.until(lambda r: len(r.events()) == 1)
    await one.until(lambda r: len(r.events()) == 1)
    assert [e.id for e in everything.events()] == await log_of(store, "acme")
    assert {int(e.data.split('"task_id":')[1].split(",")[0]) for e in group.events()} == {
        first,
        second,
    }
    assert all(e.event == "created" for e in everything.events())
    assert str(other) in everything.events()[-1].data
    assert str(rival_task) in theirs.events()[0].data
    assert hub.subscribers == 4
    for reader in (everything, group, theirs, one):
        await reader.close()
    assert hub.subscribers == 0


@pytest.mark.timeout(120)
async def test_streams_started_mid_flight_get_the_log_exactly(
    store: PostgresStore, wide_store: PostgresStore, hub: EventHub
) -> None:
    """8 writers commit out of order while streams open from the start, from a position in
    the middle and from now: each receives its part of the log once, in order."""
    view = store.for_tenant("default")
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            await wide_store.enqueue_batch(
                [NewTask(queue=f"q{n % 2}", payload={"w": n, "i": i}) for _ in range(1 + i % 3)]
            )
            i += 1

    writers = [asyncio.create_task(writer(n)) for n in range(8)]
    await asyncio.sleep(0.2)
    from_start = Reader(tenant_stream(hub, view, EventFilter(), ORIGIN))
    queue_one = Reader(tenant_stream(hub, view, EventFilter(queue="q1"), ORIGIN))
    live = Reader(tenant_stream(hub, view, EventFilter(), None))
    await asyncio.sleep(0.2)
    seen = await view.events(ORIGIN, limit=50)
    while not seen:  # the horizon may lag the writers' commits on a loaded server
        await asyncio.sleep(0.05)
        seen = await view.events(ORIGIN, limit=50)
    middle_point = seen[-1].position
    middle = Reader(tenant_stream(hub, view, EventFilter(), middle_point))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*writers)

    full = await log_of(store, "default")
    ones = await log_of(store, "default", EventFilter(queue="q1"))
    await from_start.until(lambda r: len(r.events()) >= len(full))
    await queue_one.until(lambda r: len(r.events()) >= len(ones))
    await middle.until(lambda r: bool(r.events()) and r.events()[-1].id == full[-1])
    await live.until(lambda r: bool(r.events()) and r.events()[-1].id == full[-1])
    assert [e.id for e in from_start.events()] == full
    assert [e.id for e in queue_one.events()] == ones
    assert [e.id for e in middle.events()] == full[full.index(str(middle_point)) + 1 :]
    tail = [e.id for e in live.events()]
    assert tail == full[len(full) - len(tail) :]  # a suffix of the log, no gap, no repeat
    for reader in (from_start, queue_one, middle, live):
        await reader.close()


async def test_a_slow_stream_is_cut_and_resumes_from_the_log(store: PostgresStore) -> None:
    small = EventHub(store, poll_seconds=0.05, buffer_bytes=2_000)
    await small.start()
    try:
        view = store.for_tenant("default")
        stream = tenant_stream(small, view, EventFilter(), None)
        pending = asyncio.ensure_future(anext(stream))  # subscribes, waits for events
        await asyncio.sleep(0.05)
        await enqueue_many(store, 1)
        first = await asyncio.wait_for(pending, DEADLINE)  # following live; now it stalls
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while small.cutoffs == 0:  # batch after batch, each far more than 2,000 bytes
            assert asyncio.get_running_loop().time() < deadline
            await enqueue_many(store, 20)
            await asyncio.sleep(0.1)
        rest = [frame async for frame in stream]  # the stream ends: a resumable close
        assert small.subscribers == 0
        received = parse([first, *rest])
        after = EventPosition.parse(received[-1].id or "")
        resumed = Reader(tenant_stream(small, view, EventFilter(), after))
        full = await log_of(store, "default")
        await resumed.until(lambda r: len(received) + len(r.events()) >= len(full))
        assert [e.id for e in received] + [e.id for e in resumed.events()] == full
        await resumed.close()
    finally:
        await small.stop()


async def test_keep_alives_come_from_the_hub_to_silent_streams_only(
    store: PostgresStore,
) -> None:
    hub = EventHub(store, keepalive_seconds=0.1)
    await hub.start()
    try:
        quiet = hub.subscribe("t", EventFilter(task_id=2))
        busy = hub.subscribe("t", EventFilter(task_id=1))
        event = TaskEvent(EventPosition(1, 1), _now(), "t", 1, "q", None, "created", None, None)
        ends = asyncio.get_running_loop().time() + 0.35

        async def feed() -> None:  # the busy stream is handed an event every 20 ms
            while asyncio.get_running_loop().time() < ends:
                hub.fan_out([event])
                await asyncio.sleep(0.02)

        feeding = asyncio.create_task(feed())
        async with asyncio.timeout(DEADLINE):
            assert await quiet.take() == []  # silence: the hub's cue for a keep-alive
        async with asyncio.timeout(DEADLINE):
            while taken := await busy.take():
                assert taken[0].event == event
            # [] only once the feeding stopped: a stream handed events gets no cue ...
            assert asyncio.get_running_loop().time() >= ends
        await feeding  # ... and a silent one gets its cue
    finally:
        await hub.stop()


async def test_a_hub_nobody_listens_to_reads_the_head_seldom_and_from_now_means_now(
    store: PostgresStore,
) -> None:
    hub = EventHub(store, poll_seconds=1.0)
    await hub.start()
    try:
        for _ in range(50):  # a busy cluster's wake-ups, with no stream open
            hub.wake()
            await asyncio.sleep(0.004)
        assert hub.head_reads <= 1 and hub.reads == 0
        [before] = await enqueue_many(store, 1)  # behind the hub's cursor, perhaps
        view = store.for_tenant("default")
        reader = Reader(tenant_stream(hub, view, EventFilter(), None))
        await asyncio.sleep(0.1)  # subscribed, the head read
        [after] = await enqueue_many(store, 1)
        hub.wake()
        await reader.until(lambda r: len(r.events()) >= 1)
        await asyncio.sleep(0.2)
        assert [json.loads(e.data)["task_id"] for e in reader.events()] == [after]
        assert before != after
        await reader.close()
    finally:
        await hub.stop()


async def test_a_subscription_that_overflows_is_cut_and_says_so(store: PostgresStore) -> None:
    hub = EventHub(store, buffer_bytes=200)  # not started: fed by hand
    sub = hub.subscribe("t", EventFilter())
    event = TaskEvent(EventPosition(1, 1), _now(), "t", 1, "q", None, "created", None, None)
    hub.fan_out([event])
    assert (await sub.take())[0].event == event
    hub.fan_out([event, event])  # a burst is taken whole, past the limit
    assert not sub.cut and len(await sub.take()) == 2
    hub.fan_out([event, event])
    hub.fan_out([event])  # ... but not while more than the limit is still unsent
    assert sub.cut and hub.cutoffs == 1
    with pytest.raises(StreamCut):
        await sub.take()
    hub.unsubscribe(sub)
    hub.unsubscribe(sub)
    assert hub.subscribers == 0


async def test_a_task_stream_ends_after_the_final_event_and_replays_a_finished_task(
    store: PostgresStore, hub: EventHub
) -> None:
    view = store.for_tenant("default")
    [task_id] = await enqueue_many(store, 1)
    live = Reader(task_stream(hub, view, task_id, ORIGIN))
    await live.until(lambda r: len(r.events()) == 1)
    await store.append_events([NewEvent("default", task_id, "q", None, "progress", 0, {"p": 1})])
    assert await store.cancel(task_id, tenant_id="default") is not None
    await live.until(lambda r: r.ended)
    assert [e.event for e in live.events()] == ["created", "progress", "cancelled"]
    assert parse(live.frames)[-1].event == "end"
    replay = Reader(finished_task_replay(hub, view, task_id, ORIGIN))
    await replay.until(lambda r: r.ended)
    assert [e.id for e in replay.events()] == [e.id for e in live.events()]
    after_created = EventPosition.parse(live.events()[0].id or "")
    tail = Reader(finished_task_replay(hub, view, task_id, after_created))
    await tail.until(lambda r: r.ended)
    assert [e.event for e in tail.events()] == ["progress", "cancelled"]


async def test_the_hub_hears_again_after_its_listen_connection_is_killed(
    store: PostgresStore,
) -> None:
    """A poll too slow to matter: only the LISTEN connection (restored) can deliver."""
    config = HubConfig(direct_dsn=store.direct_dsn, poll_seconds=600)
    async with running_hub(store, config) as hub:
        view = store.for_tenant("default")
        reader = Reader(tenant_stream(hub, view, EventFilter(), None))
        await asyncio.sleep(0)
        await enqueue_many(store, 1)
        await reader.until(lambda r: len(r.events()) == 1)
        killed = await fetchval(
            store,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND datname = current_database()",
        )
        assert killed == 1
        await enqueue_many(store, 2)  # perhaps while the listener is away: re-read after
        await reader.until(lambda r: len(r.events()) == 3)
        assert [e.id for e in reader.events()] == (await log_of(store, "default"))[-3:]
        await reader.close()


def _now() -> datetime:
    return datetime.now(UTC)


async def test_a_task_stream_carries_events_that_committed_before_its_final_one(
    store: PostgresStore, hub: EventHub, database_dsn: str
) -> None:
    """A batched finish takes its transaction id at its first row, then waits for the task's
    row while a signal is delivered: the final event's position is below the signal's,
    which committed first. The task's streams must still carry the signal."""
    view = store.for_tenant("default")
    first, second = await enqueue_many(store, 2)
    leased = {t.id: t for t in await claim(store, limit=2)}
    live = Reader(task_stream(hub, view, second, ORIGIN))
    await live.until(lambda r: len(r.events()) == 2)  # created, started
    blocker = await asyncpg.connect(database_dsn)
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", first)
        finishes = [Finish(lease(leased[i]), TaskState.SUCCEEDED, result=None) for i in leased]
        finishing = asyncio.ensure_future(
            store.finish(sorted(finishes, key=lambda f: f.lease.task_id))
        )
        while not await blocker.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ):
            await asyncio.sleep(0.01)
        await store.deliver_signal(second, "approve", {"ok": True}, tenant_id="default")
        await holding.rollback()
        await finishing
    finally:
        await blocker.close()
    log = [e.kind for e in await settled(store, lambda: view.task_events(second, ORIGIN))]
    assert log == ["created", "started", "succeeded", "signal"]  # the positions' order
    await live.until(lambda r: r.ended)
    assert [e.event for e in live.events()] == log
    replay = Reader(finished_task_replay(hub, view, second, ORIGIN))
    await replay.until(lambda r: r.ended)
    assert [e.event for e in replay.events()] == log


async def test_the_hub_stops_when_a_wake_up_arrives_with_the_stop(store: PostgresStore) -> None:
    """On Python 3.11 asyncio.wait_for swallows a cancel that arrives as its awaited event
    is set: a reader waiting that way never stopped, and the API's shutdown hung."""
    for _ in range(20):
        async with running_hub(store, HubConfig(direct_dsn=store.direct_dsn)) as hub:
            await asyncio.sleep(0)  # the reader waits for a wake-up
            hub.wake()
            await asyncio.wait_for(hub.stop(), timeout=30)  # a hang, not a measurement
