"""The event relay: with ``REDIS_URL``, one API process carries PostgreSQL's event
notifications to Redis, where every API process's hub hears them.

Every API process runs a relay, but only one relays: each relay's LISTEN connection first
takes a session advisory lock (``RELAY_LOCK``), and the others stand by, trying again every
few seconds. The server frees the lock when the session ends (a crash, a lost network), so
another relay takes over. During a takeover wake-ups are late, never lost events: every hub
polls the log as well. The relay publishes coalesced: a burst of notifications becomes one
message while a publish is in flight.
"""

from __future__ import annotations

from conveyor.api.events.redis_wake import DEFAULT_CHANNEL, RedisPublisher
from conveyor.store.notify import CHUNKS_CHANNEL, EVENTS_CHANNEL, NotificationListener

RELAY_LOCK = 0x636F6E7665790002  # "convey" + 2: the advisory lock of the event relay
STANDBY_SECONDS = 5.0
"""How often a standing-by relay tries to take over."""


class EventRelay:
    """LISTEN ``conveyor_events`` and ``conveyor_chunks`` (if elected) and publish each
    burst to Redis."""

    def __init__(
        self,
        dsn: str,
        redis_url: str,
        channel: str = DEFAULT_CHANNEL,
        *,
        standby_seconds: float = STANDBY_SECONDS,
        probe_seconds: float = 10.0,
    ) -> None:
        self.publisher = RedisPublisher(redis_url, channel)
        self.listener = NotificationListener(
            dsn,
            on_reconnect=self.publisher.notify,
            probe_seconds=probe_seconds,
            lock=RELAY_LOCK,
            standby_seconds=standby_seconds,
        )
        self.listener.subscribe(EVENTS_CHANNEL, lambda _payload: self.publisher.notify())
        self.listener.subscribe(CHUNKS_CHANNEL, lambda _payload: self.publisher.notify())

    @property
    def relaying(self) -> bool:
        """True while this process is the elected relay."""
        return self.listener.connected

    async def start(self) -> None:
        """Start publishing, then contend for the relay's lock in the background."""
        await self.publisher.start()
        await self.listener.start(wait=1.0)

    async def stop(self) -> None:
        """Stop relaying (another process takes over) and close both connections."""
        await self.listener.stop()
        await self.publisher.stop()
