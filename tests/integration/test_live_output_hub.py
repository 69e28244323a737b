"""The live output hub and its route on a real PostgreSQL: shutdown with viewers, viewers
that never started streaming, and resume points the table cannot hold."""

from __future__ import annotations

from conveyor.api.live_output import BEHIND, LiveOutputHub
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
