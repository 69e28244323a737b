"""The live output hub and its route on a real PostgreSQL: shutdown with viewers, viewers
that never started streaming, and resume points the table cannot hold."""

from __future__ import annotations

import asyncio
import contextlib

from conveyor.api.live_output import BEHIND, LiveOutputHub
from conveyor.api.routes.task_stream import _frames
from conveyor.core.events import CHUNK_SEQ_MAX, parse_chunk_cursor
from conveyor.store.postgres import PostgresStore
from tests.integration.helpers import enqueue_many


async def test_stopping_the_hub_closes_every_viewer_resumably(store: PostgresStore) -> None:
    [first, second] = await enqueue_many(store, 2)
    hub = LiveOutputHub(store)
    hub.start()
    viewers = [
        hub.watch("default", first, (0, 0)),
        hub.watch("default", first, (0, 0)),
        hub.watch("default", second, (0, 0)),
    ]
    await hub.stop()  # closing a viewer unwatches it: stop must not trip over that
    assert hub.viewers == 0
    for viewer in viewers:
        assert viewer.closed
        assert viewer.queue.get_nowait() is BEHIND


async def test_a_stream_never_started_or_left_leaves_no_viewer(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1)
    hub = LiveOutputHub(store, poll_seconds=0.05)
    hub.start()
    try:
        view = store.for_tenant("default")
        # the client went away before the response body was read: the stream is closed unread
        unread = _frames(hub, view, task_id, (0, 0), 15.0)
        await unread.aclose()
        assert hub.viewers == 0
        # a client that was reading and left: the pending read is cancelled
        reading = _frames(hub, view, task_id, (0, 0), 15.0)
        pending = asyncio.ensure_future(anext(reading))
        while hub.viewers == 0:
            await asyncio.sleep(0.01)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        assert hub.viewers == 0
    finally:
        await hub.stop()


async def test_the_largest_chunk_cursor_a_client_may_send_reads(store: PostgresStore) -> None:
    [task_id] = await enqueue_many(store, 1)
    run, seq = parse_chunk_cursor(f"{2**63 - 1}-{CHUNK_SEQ_MAX}")
    assert await store.chunks_after([("default", task_id, (run, seq))]) == []


async def test_a_hub_stops_when_a_wake_up_arrives_with_the_stop(store: PostgresStore) -> None:
    """On Python 3.11 asyncio.wait_for swallows a cancel that arrives as its awaited event
    is set: a reader waiting that way never stopped, and stop() (the API's shutdown) hung."""
    for _ in range(20):
        hub = LiveOutputHub(store, poll_seconds=60)
        hub.start()
        await asyncio.sleep(0)  # the reader waits for a wake-up
        hub.wake()
        await asyncio.wait_for(hub.stop(), timeout=30)  # a hang, not a measurement
