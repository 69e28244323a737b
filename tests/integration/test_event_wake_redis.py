"""Event wake-ups over a real Redis (``REDIS_URL``): two hubs (two API processes) hear of
new events through Redis, one elected relay carries PostgreSQL's notifications there, a
standing-by relay takes over when the elected one goes, and a hub whose subscription is
killed subscribes again. The hubs' polls are too slow to matter: only wake-ups deliver.

Redis comes from REDIS_URL, the local server, or one started for the module (see
``test_redis_budget.py``); the tests skip, saying why, only when none can be had.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from conveyor.api.events.hub import EventHub
from conveyor.api.events.redis_wake import RedisWake
from conveyor.api.events.relay import EventRelay
from conveyor.api.events.streams import tenant_stream
from conveyor.store.event_records import EventFilter
from conveyor.store.postgres import PostgresStore
from tests.integration.helpers import enqueue_many, fetchval
from tests.integration.test_event_hub import DEADLINE, Reader
from tests.integration.test_redis_budget import redis_url

__all__ = ["redis_url"]  # the fixture, shared


@dataclass
class ApiSide:
    """What one API process runs with REDIS_URL set: a hub, its Redis wake, a relay."""

    hub: EventHub
    wake: RedisWake
    relay: EventRelay
    reader: Reader

    async def stop(self) -> None:
        await self.reader.close()
        await self.relay.stop()
        await self.wake.stop()
        await self.hub.stop()


async def until(check: object) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


@pytest.fixture
async def sides(store: PostgresStore, redis_url: str) -> AsyncIterator[list[ApiSide]]:
    channel = f"conveyor-test:events:{uuid.uuid4().hex}"
    made = []
    for n in range(2):
        hub = EventHub(store, poll_seconds=600)
        await hub.start()
        wake = RedisWake(redis_url, channel, name=f"{channel}:{n}")
        await wake.start(hub.wake)
        relay = EventRelay(store.direct_dsn, redis_url, channel, standby_seconds=0.1)
        await relay.start()
        reader = Reader(tenant_stream(hub, store.for_tenant("default"), EventFilter(), None))
        made.append(ApiSide(hub, wake, relay, reader))
    await asyncio.sleep(0)  # the readers subscribe
    yield made
    for side in made:
        await side.stop()


async def test_two_hubs_hear_of_events_through_one_elected_relay(
    store: PostgresStore, sides: list[ApiSide]
) -> None:
    await until(lambda: sum(s.relay.relaying for s in sides) == 1)
    listening = await fetchval(
        store,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' "
        "AND datname = current_database()",
    )
    assert listening == 1  # one LISTEN session for the whole cluster, not one per process
    await enqueue_many(store, 3)
    for side in sides:
        await side.reader.until(lambda r: len(r.events()) == 3)

    elected = next(s for s in sides if s.relay.relaying)
    standby = next(s for s in sides if s is not elected)
    await elected.relay.stop()  # the elected process goes away: the other takes over
    await until(lambda: standby.relay.relaying)
    await enqueue_many(store, 2)
    for side in sides:
        await side.reader.until(lambda r: len(r.events()) == 5)
    assert [e.id for e in sides[0].reader.events()] == [e.id for e in sides[1].reader.events()]


async def test_a_hub_subscribes_again_after_its_redis_connection_is_killed(
    store: PostgresStore, sides: list[ApiSide], redis_url: str
) -> None:
    await until(lambda: sum(s.relay.relaying for s in sides) == 1)
    victim = sides[0]
    admin = Redis.from_url(redis_url, decode_responses=True)
    try:
        name = victim.wake._client.connection_pool.connection_kwargs["client_name"]
        clients = await admin.client_list(_type="pubsub")
        [mine] = [c for c in clients if c.get("name") == name]
        await admin.client_kill_filter(_id=mine["id"])
    finally:
        await admin.aclose()
    await until(lambda: victim.wake.resubscribes >= 1)
    await enqueue_many(store, 2)
    await victim.reader.until(lambda r: len(r.events()) == 2)
