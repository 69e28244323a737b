"""LISTEN/NOTIFY: one listening connection per process, kept alive across server restarts.

Notifications are hints, never the source of truth: whatever is missed while the connection
is down (a server restart, a failover, a reset socket) is caught up by the caller's
``on_reconnect`` (the worker claims at once) and by its jittered polling. The listener
notices a lost connection from the driver's termination callback and from a periodic
liveness probe (a silent network partition fires no callback), reconnects with backoff and
LISTENs again on every channel it was asked for.

A listener given a ``lock`` is one of many contenders of which one listens: its connection
takes that session advisory lock first, and a contender that finds it taken closes the
connection and tries again every ``standby_seconds``. The server frees the lock with the
session, so a lost listener is replaced by another (the event relay uses this).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from conveyor.core.backoff import FailureBackoff
from conveyor.errors import ConveyorError
from conveyor.store.connection import Conn, connect, is_connection_error
from conveyor.store.dsn import redact_dsn
from conveyor.store.sql import q

TASKS_CHANNEL = "conveyor_tasks"
CANCEL_CHANNEL = "conveyor_cancel"
EVENTS_CHANNEL = "conveyor_events"
CHUNKS_CHANNEL = "conveyor_chunks"
"""Notified (empty payload) by every statement that writes to the task event log."""

log = structlog.get_logger("conveyor.listener")

Callback = Callable[[str], None]


class NotificationListener:
    """Holds one dedicated connection LISTENing on the channels subscribed to.

    ``subscribe(channel, callback)`` calls ``callback(payload)`` on the event loop for every
    notification on ``channel``; callbacks must not block. ``on_reconnect`` runs after the
    connection came back from a loss: notifications sent meanwhile are gone, so the caller
    should look for itself.
    """

    def __init__(
        self,
        dsn: str,
        *,
        on_reconnect: Callable[[], None] | None = None,
        probe_seconds: float = 10.0,
        backoff: FailureBackoff | None = None,
        lock: int | None = None,
        standby_seconds: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._lock = lock
        self._standby_seconds = standby_seconds
        self._on_reconnect = on_reconnect
        self._probe_seconds = probe_seconds
        self._backoff = backoff or FailureBackoff(base=0.1, cap=5.0)
        self._channels: dict[str, Callback] = {}
        self._conn: asyncpg.Connection[Any] | None = None
        self._lost = asyncio.Event()
        self._first = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self.reconnects = 0
        """How many times the connection was re-established after a loss."""

    @property
    def connected(self) -> bool:
        """True while the LISTEN connection is open."""
        return self._conn is not None and not self._conn.is_closed()

    def subscribe(self, channel: str, callback: Callback) -> None:
        """Call ``callback(payload)`` for each notification on ``channel`` (before start)."""
        if self._keeper is not None:
            raise RuntimeError("subscribe before start(): channels are LISTENed on connect")
        self._channels[channel] = callback

    async def start(self, *, wait: float = 5.0) -> None:
        """Start listening; waits up to ``wait`` seconds for the first connection.

        It never fails: a server that is down now is reached later, in the background.
        """
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_listening(), name="conveyor-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), timeout=wait)

    async def stop(self) -> None:
        """Stop listening and close the connection; safe to call twice."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        await self._close()

    async def _keep_listening(self) -> None:
        ever_connected = False
        while True:
            try:
                await self._connect()
            except _Standby:
                self._first.set()  # start() has nothing to wait for: another one listens
                await asyncio.sleep(self._standby_seconds * (0.5 + random.random()))
                continue
            except Exception as exc:  # whatever it was, LISTEN must come back: never give up
                delay = self._backoff.failed(random.random)
                if not isinstance(exc, ConveyorError):
                    log.error("listen_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                log.warning("listen_unavailable", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            self._backoff.succeeded()
            self._first.set()
            if ever_connected:
                self.reconnects += 1
                log.info("listen_restored", channels=sorted(self._channels))
                if self._on_reconnect is not None:
                    self._on_reconnect()
            ever_connected = True
            try:
                await self._watch()
            except Exception as exc:
                log.error("listen_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            log.warning("listen_lost", dsn=redact_dsn(self._dsn))
            await self._close()

    async def _connect(self) -> None:
        # LISTEN needs a session of its own, so the statement cache is irrelevant here; a
        # cache of 0 keeps this connection valid behind PgBouncer's session pool as well.
        conn = await connect(self._dsn, statement_cache_size=0)
        self._lost.clear()
        conn.add_termination_listener(self._terminated)
        try:
            if self._lock is not None and not await conn.fetchval(
                q("try_session_lock"), self._lock
            ):
                raise _Standby
            for channel, callback in self._channels.items():
                await conn.add_listener(channel, _relay(callback))
        except BaseException as exc:
            if isinstance(exc, _Standby):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=2)
            conn.terminate()  # never leak a half-set-up connection, even when cancelled
            if is_connection_error(exc):
                raise ConveyorError(f"LISTEN failed: {exc}") from exc
            raise
        self._conn = conn

    async def _watch(self) -> None:
        """Return once the connection is lost (terminated, or a probe fails)."""
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self._probe_seconds)
                return
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=self._probe_seconds)
            except Exception as exc:
                if not (is_connection_error(exc) or isinstance(exc, asyncpg.PostgresError)):
                    raise
                return

    def _terminated(self, _conn: Conn) -> None:
        self._lost.set()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), timeout=2)
        if not conn.is_closed():
            conn.terminate()


class _Standby(Exception):
    """The listener's lock is held by another session: stand by."""


def _relay(callback: Callback) -> Callable[[Conn, int, str, object], None]:
    def listener(_conn: Conn, _pid: int, _channel: str, payload: object) -> None:
        callback(str(payload))

    return listener
