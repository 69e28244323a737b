"""The engine's base: how every store operation reaches a connection.

``PostgresStore`` is assembled from parts (this base, ``LLMOperations``, its own
operations); each part runs its statements through ``_run``, which lends a pooled
connection (discarded after a connection error) and translates driver errors at this
boundary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from conveyor.store import retention
from conveyor.store.connection import AcquireObserver, Conn, pooled, translated_errors
from conveyor.store.event_wake import CHUNK_CHANNEL, EventWake, PostgresEventWake

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PoolStats:
    """The connection pool now: what the metrics export as the pool's size."""

    size: int
    """Connections open."""
    idle: int
    """Open connections no operation holds."""
    max_size: int
    """Most connections the pool opens."""


class PoolEngine:
    """Holds the pool; ``_run`` and ``_run_in_transaction`` for the operations above it,
    and ``_with_partitions`` for writes into the month-partitioned tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.event_wake: EventWake = PostgresEventWake(pool)
        """Told after every write that logged task events (``event_wake.py``); the
        composition root may replace it (Redis pub/sub)."""
        self.chunk_wake: EventWake = PostgresEventWake(pool, channel=CHUNK_CHANNEL)
        """Told after live LLM output was written (``task_chunks``)."""
        self.acquire_observer: AcquireObserver | None = None
        """Told how long each acquire waited for a pooled connection; the composition root
        sets it (the metrics' pool waits), None costs nothing."""

    def pool_stats(self) -> PoolStats:
        """The pool's size now (plain reads: safe from the metrics server's thread)."""
        pool = self._pool
        return PoolStats(pool.get_size(), pool.get_idle_size(), pool.get_max_size())

    def _events_written(self) -> None:
        self.event_wake.poke()

    async def _run(
        self,
        operation: Callable[[Conn], Awaitable[T]],
        connection: Conn | None = None,
    ) -> T:
        async with translated_errors():
            if connection is not None:
                return await operation(connection)
            async with pooled(self._pool, self.acquire_observer) as conn:
                return await operation(conn)

    async def _run_in_transaction(self, operation: Callable[[Conn], Awaitable[T]]) -> T:
        async with (
            translated_errors(),
            pooled(self._pool, self.acquire_observer) as conn,
            conn.transaction(),
        ):
            return await operation(conn)

    async def ensure_partitions(
        self, *, now: datetime | None = None, months_ahead: int = 3
    ) -> list[str]:
        """Create history partitions for this month and ``months_ahead`` more."""
        moment = now or datetime.now(UTC)
        return await self._run(lambda c: retention.ensure_partitions(c, moment, months_ahead))

    async def _with_partitions(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except Exception as exc:
            if not _is_missing_partition(exc):
                raise
        # The month's history partition is missing (maintenance did not run): create it
        # and try again, rather than leave the tasks running.
        await self.ensure_partitions()
        return await operation()


def _is_missing_partition(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, asyncpg.CheckViolationError) and "no partition" in str(cause)
