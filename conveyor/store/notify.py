"""LISTEN/NOTIFY: wake idle workers within milliseconds of an enqueue.

Notifications are hints, never the source of truth: a listener that misses one (connection
lost, server restart) is covered by the worker's jittered polling, and a spurious one costs a
single empty claim.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg

from conveyor.store.connection import Conn, connect

TASKS_CHANNEL = "conveyor_tasks"
CANCEL_CHANNEL = "conveyor_cancel"


class NotificationListener:
    """Holds one dedicated connection LISTENing on Conveyor's channels.

    ``on_ready(queue)`` is called for every queue that got work; ``on_cancel(task_id)`` for
    every running task asked to stop. Callbacks run on the event loop and must not block.
    """

    def __init__(
        self,
        dsn: str,
        *,
        on_ready: Callable[[str], None],
        on_cancel: Callable[[int], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._on_ready = on_ready
        self._on_cancel = on_cancel
        self._conn: asyncpg.Connection[Any] | None = None

    @property
    def connected(self) -> bool:
        """True while the LISTEN connection is open."""
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Open the connection and LISTEN; raises DatabaseUnavailable if it cannot."""
        # LISTEN needs a session of its own, so the statement cache is irrelevant here; a
        # cache of 0 keeps this connection valid behind PgBouncer's session pool as well.
        self._conn = await connect(self._dsn, statement_cache_size=0)
        await self._conn.add_listener(TASKS_CHANNEL, self._tasks)
        if self._on_cancel is not None:
            await self._conn.add_listener(CANCEL_CHANNEL, self._cancel)

    async def stop(self) -> None:
        """Close the connection; safe to call twice."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), timeout=5)
            self._conn = None

    def _tasks(self, _conn: Conn, _pid: int, _channel: str, payload: object) -> None:
        self._on_ready(str(payload))

    def _cancel(self, _conn: Conn, _pid: int, _channel: str, payload: object) -> None:
        text = str(payload)
        if self._on_cancel is not None and text.isdigit():
            self._on_cancel(int(text))
