"""Waking the event streams after events commit, without slowing the writes down.

Every statement that changes a task's state writes its events in the same transaction
(``queries/*.sql``); the API processes that stream them learn that there is something new
from a wake-up. The wake-up is NOT a ``pg_notify`` inside those statements: a transaction
that notifies takes a cluster-wide lock at commit and holds it through its WAL flush, so
notifying claims and finishes commit one at a time (measured: the 2-process no-op drain fell
to about half). Instead the store pokes an ``EventWake`` after each such write, and the
default one sends at most one ``pg_notify`` per ``interval`` in a transaction of its own,
which writes no WAL and holds the lock for microseconds.

Another wake (Redis pub/sub, ``REDIS_URL``) is set by the composition root; the store never
imports it. A lost wake-up costs latency, not events: the streams also poll the log.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import asyncpg
import structlog

from conveyor.store.connection import pooled
from conveyor.store.notify import CHUNKS_CHANNEL, EVENTS_CHANNEL
from conveyor.store.sql import q

CHANNEL = EVENTS_CHANNEL
"""The PostgreSQL channel of event wake-ups."""

CHUNK_CHANNEL = CHUNKS_CHANNEL
"""The channel of live LLM output wake-ups (``task_chunks``)."""

log = structlog.get_logger("conveyor.events")


class EventWake(Protocol):
    """Told after events were committed; tells the streams. Must not block."""

    def poke(self) -> None:
        """Events were committed just now."""
        ...

    async def close(self) -> None:
        """Send what is pending and stop."""
        ...


class PostgresEventWake:
    """``pg_notify(channel)`` at most once per ``interval`` after a poke, off the caller's path."""

    def __init__(self, pool: asyncpg.Pool, interval: float = 0.005, channel: str = CHANNEL) -> None:
        self._pool = pool
        self._channel = channel
        self._interval = interval
        self._pending = False
        self._sender: asyncio.Task[None] | None = None

    def poke(self) -> None:
        self._pending = True
        if self._sender is None or self._sender.done():
            try:
                self._sender = asyncio.get_running_loop().create_task(self._send())
            except RuntimeError:  # no running loop (a synchronous caller): nobody to wake
                self._pending = False

    async def _send(self) -> None:
        while self._pending:
            await asyncio.sleep(self._interval)  # let a burst of writes share one wake-up
            self._pending = False
            try:
                async with pooled(self._pool) as conn:
                    await conn.execute(q("wake_event_streams"), self._channel)
            except Exception as exc:  # never the writer's problem
                # The streams' poll picks the events up; the next write wakes them again.
                log.debug("event_wake_failed", error=str(exc))
                return

    async def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None and not sender.done():
            try:
                await asyncio.wait_for(sender, timeout=1.0)
            except (TimeoutError, asyncio.CancelledError):
                sender.cancel()
