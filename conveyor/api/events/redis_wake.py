"""The hub's wake-ups over Redis pub/sub (``REDIS_URL``): a subscriber and a publisher.

The only module of the event streams that speaks Redis. A message on the channel carries
nothing: it says "events were written, read the log". Pub/sub delivers at most once, so a
lost message costs a poll period of latency, never an event (the log is the truth).
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import structlog
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from conveyor.api.events.wake import OnWake
from conveyor.core.backoff import FailureBackoff
from conveyor.errors import ConfigurationError
from conveyor.store.dsn import redact_dsn

log = structlog.get_logger("conveyor.api.events")

DEFAULT_CHANNEL = "conveyor:events"
HEALTH_CHECK_SECONDS = 10.0
"""A silent subscription PINGs this often, so a dead connection is noticed and replaced."""
_ERRORS = (redis_errors.RedisError, OSError)


def redis_client(url: str, name: str) -> Redis:
    """A client of the Redis at ``url``, named ``name`` in ``CLIENT LIST``;
    ConfigurationError naming REDIS_URL if the URL is malformed."""
    try:
        return Redis.from_url(
            url,
            health_check_interval=HEALTH_CHECK_SECONDS,
            socket_connect_timeout=5.0,
            client_name=name,
        )
    except ValueError as exc:
        raise ConfigurationError(
            f"REDIS_URL {redact_dsn(url)!r} is not a Redis URL: {exc} "
            "(e.g. redis://localhost:6379/0)"
        ) from exc


class RedisWake:
    """Wake-ups from a Redis channel: ``on_wake`` per message and after each
    (re)subscription, since messages published while unsubscribed are gone."""

    def __init__(
        self, url: str, channel: str = DEFAULT_CHANNEL, *, name: str = "conveyor-events"
    ) -> None:
        self._client = redis_client(url, name)
        self._where = redact_dsn(url)
        self._channel = channel
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.resubscribes = 0
        """How many times the subscription was made again after a loss."""

    @property
    def subscribed(self) -> bool:
        """True while the channel is subscribed."""
        return self._subscribed.is_set()

    async def start(self, on_wake: OnWake, *, wait: float = 5.0) -> None:
        """Subscribe in the background; waits up to ``wait`` seconds for the first time."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(on_wake), name="conveyor-redis-wake")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=wait)

    async def stop(self) -> None:
        """Unsubscribe and close the client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.aclose()

    async def _listen(self, on_wake: OnWake) -> None:
        backoff = FailureBackoff(base=0.1, cap=5.0)
        ever = False
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                backoff.succeeded()
                self._subscribed.set()
                if ever:
                    self.resubscribes += 1
                    log.info("event_wake_resubscribed", redis=self._where)
                ever = True
                on_wake()  # anything published while away is lost: look for yourself
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        on_wake()
            except _ERRORS as exc:
                self._subscribed.clear()
                delay = backoff.failed(random.random)
                log.warning(
                    "event_wake_lost", redis=self._where, error=str(exc), retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(*_ERRORS):
                    await pubsub.aclose()


class RedisPublisher:
    """Publishes wake-ups on a Redis channel, coalesced: ``notify()`` never waits; at most
    one publish is in flight and one more is owed, however often it is called."""

    def __init__(
        self, url: str, channel: str = DEFAULT_CHANNEL, *, name: str = "conveyor-relay"
    ) -> None:
        self._client = redis_client(url, name)
        self._where = redact_dsn(url)
        self._channel = channel
        self._owed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        """Messages published since start."""

    def notify(self) -> None:
        """Events were written: publish a wake-up soon."""
        self._owed.set()

    async def start(self) -> None:
        """Start publishing in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._publish(), name="conveyor-redis-publish")

    async def stop(self) -> None:
        """Stop and close the client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.aclose()

    async def _publish(self) -> None:
        backoff = FailureBackoff(base=0.1, cap=5.0)
        while True:
            await self._owed.wait()
            self._owed.clear()
            try:
                await self._client.publish(self._channel, b"")
                self.published += 1
                backoff.succeeded()
            except _ERRORS as exc:
                self._owed.set()  # the hubs still poll; try again after a pause
                delay = backoff.failed(random.random)
                log.warning(
                    "event_relay_publish_failed",
                    redis=self._where,
                    error=str(exc),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
