"""The fault harness's own queries, made to outlive database restarts.

The harness watches a server it restarts on purpose, so a pooled connection would be dead
after every restart. Each call here opens a fresh connection and is retried while the
server is down or still recovering; anything but a lost or refused connection is raised.
Only read-only or idempotent statements belong here: a retried write whose commit was
merely unacknowledged would run twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from conveyor.store.connection import init_connection

RETRY_SECONDS = 60.0
"""How long a call keeps trying: longer than any restart the harness makes."""

# A lost or refused connection: the server shutting down or starting (class 57 errors,
# e.g. 57P01 admin_shutdown, 57P03 cannot_connect_now), a reset socket, or asyncpg's
# protocol on a connection the server dropped. Kept here, not imported from the store, so
# the harness judges the store without sharing its assumptions.
_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def is_connection_error(exc: BaseException) -> bool:
    """True for a lost or refused connection (not a statement timeout)."""
    return isinstance(exc, _LOST) and not isinstance(exc, asyncpg.QueryCanceledError)


async def fetch(dsn: str, query: str, *args: Any, retry_for: float = RETRY_SECONDS) -> list[Any]:
    """Rows of ``query`` (jsonb decoded to Python values)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except Exception as exc:
            if not is_connection_error(exc) or loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        try:
            await init_connection(conn)
            rows = list(await conn.fetch(query, *args))
        except Exception as exc:
            conn.terminate()  # never waits on a server that went away
            if not is_connection_error(exc) or loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        try:
            await conn.close(timeout=2)
        except Exception:  # the answer is in hand; a failed goodbye changes nothing
            conn.terminate()
        return rows


async def fetchval(dsn: str, query: str, *args: Any, retry_for: float = RETRY_SECONDS) -> Any:
    """The first column of the first row of ``query`` (None without rows)."""
    rows = await fetch(dsn, query, *args, retry_for=retry_for)
    return rows[0][0] if rows else None
