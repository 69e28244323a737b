"""What wakes the hub: a hint that events were written, from PostgreSQL or from Redis.

After every write that logged events the store sends ``pg_notify('conveyor_events')`` (in a
transaction of its own, once per burst: ``store/event_wake.py``), so the notification
arrives after the events have committed; live LLM output does the same on
``conveyor_chunks``. One wake-up source serves both: it wakes the event hub and the
live-output hub (``api/live_output.py``). By default
each API process LISTENs for it on one connection of its own (``PostgresWake``). With
``REDIS_URL`` set, the API processes subscribe to a Redis channel instead (``RedisWake`` in
``redis_wake.py``), and one of them, elected by an advisory lock, relays the notifications
there (``relay.py``): the database then holds one LISTEN session for the whole cluster
rather than one per API process.

A wake is only a hint: the hub also polls, and reads again after a listener reconnects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from conveyor.store.notify import CHUNKS_CHANNEL, EVENTS_CHANNEL, NotificationListener

OnWake = Callable[[], None]


class EventWake(Protocol):
    """A source of wake-ups: calls ``on_wake`` when events were written, and after it
    reconnected (whatever was said meanwhile was lost)."""

    async def start(self, on_wake: OnWake) -> None: ...
    async def stop(self) -> None: ...


class PostgresWake:
    """Wake-ups from LISTEN ``conveyor_events`` and ``conveyor_chunks`` on one dedicated
    connection (``dsn``: the direct DSN; a transaction-pooling PgBouncer cannot LISTEN)."""

    def __init__(self, dsn: str, *, probe_seconds: float = 10.0) -> None:
        self._dsn = dsn
        self._probe_seconds = probe_seconds
        self._listener: NotificationListener | None = None

    @property
    def listener(self) -> NotificationListener | None:
        """The listening connection (for tests and health: ``connected``, ``reconnects``)."""
        return self._listener

    async def start(self, on_wake: OnWake) -> None:
        """LISTEN and call ``on_wake`` per notification and after each reconnect."""
        listener = NotificationListener(
            self._dsn, on_reconnect=on_wake, probe_seconds=self._probe_seconds
        )
        listener.subscribe(EVENTS_CHANNEL, lambda _payload: on_wake())
        listener.subscribe(CHUNKS_CHANNEL, lambda _payload: on_wake())
        self._listener = listener
        await listener.start()

    async def stop(self) -> None:
        """Close the listening connection."""
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
