"""The hub of an API process with its wake-up source, started and stopped as one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from conveyor.api.events.hub import EventHub
from conveyor.api.events.wake import EventWake, PostgresWake
from conveyor.store.ports import EventLog


@dataclass(frozen=True, slots=True)
class HubConfig:
    """How the hub reads and feeds; each field documents its default."""

    direct_dsn: str
    """Where to LISTEN (and, with Redis, where the relay takes its lock)."""
    redis_url: str | None = None
    """Wake-ups over Redis pub/sub instead of LISTEN in every process (None: PostgreSQL)."""
    redis_channel: str = "conveyor:events"
    """The Redis channel of wake-ups."""
    poll_seconds: float = 1.0
    """The safety poll: the most a wake-up that never came delays an event."""
    buffer_bytes: int = 1_048_576
    """Frames buffered per stream before a slow client is cut off (1 MiB)."""
    keepalive_seconds: float = 15.0
    """A stream handed nothing for about this long sends a keep-alive comment."""


@asynccontextmanager
async def running_hub(
    log: EventLog, config: HubConfig, *, also_wake: Callable[[], None] | None = None
) -> AsyncIterator[EventHub]:
    """A started hub, woken by PostgreSQL or (with ``redis_url``) Redis; stopped on exit,
    which ends every stream it feeds. ``also_wake`` is called on every wake-up too (the
    live-output hub: one wake-up source per process serves both)."""
    hub = EventHub(
        log,
        poll_seconds=config.poll_seconds,
        buffer_bytes=config.buffer_bytes,
        keepalive_seconds=config.keepalive_seconds,
    )
    wake: EventWake
    relay = None
    if config.redis_url:
        # redis is imported only when used
        from conveyor.api.events.redis_wake import RedisWake
        from conveyor.api.events.relay import EventRelay

        wake = RedisWake(config.redis_url, config.redis_channel)
        relay = EventRelay(config.direct_dsn, config.redis_url, config.redis_channel)
    else:
        wake = PostgresWake(config.direct_dsn)
    await hub.start()
    try:
        await wake.start(hub.wake if also_wake is None else _both(hub.wake, also_wake))
        try:
            if relay is not None:
                await relay.start()
            try:
                yield hub
            finally:
                if relay is not None:
                    await relay.stop()
        finally:
            await wake.stop()
    finally:
        await hub.stop()


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def wake() -> None:
        first()
        second()

    return wake
