"""Connections to PostgreSQL: the pool, JSON codecs, and driver-error translation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from conveyor.errors import DatabaseUnavailable, SchemaNotReady, StoreError

Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
"""A connection of its own or one borrowed from the pool: every operation takes either."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb to Python values and encode Python values to JSON text."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=_dumps, decoder=json.loads, schema="pg_catalog"
        )


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own (listeners dropped, an
    open transaction rolled back).

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: a round trip per operation, two of the four per claimed
    and finished batch (measured in ``benchmarks/queue_throughput.py``). The store's own
    statements leave no session state behind (advisory locks are transaction-scoped,
    ``set_config`` is local, LISTEN has a connection of its own); the one connection that
    user code gets, ``PostgresStore.transaction``, is reset in full before it goes back.
    """


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    statement_cache_size: int = 100,
    application_name: str = "conveyor",
) -> asyncpg.Pool:
    """Open a pool; ``statement_cache_size=0`` for PgBouncer in transaction mode."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            statement_cache_size=statement_cache_size,
            init=init_connection,
            reset=keep_session,
            server_settings={"application_name": application_name},
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {exc}; "
            "check DATABASE_URL (unset it to use the embedded server)"
        ) from exc
    assert pool is not None
    return pool


async def connect(dsn: str, *, statement_cache_size: int = 100) -> asyncpg.Connection:
    """Open one connection (LISTEN, migrations), with the same codecs as the pool."""
    try:
        conn = await asyncpg.connect(dsn, statement_cache_size=statement_cache_size)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {exc}"
        ) from exc
    await init_connection(conn)
    return conn


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced, safe to log."""
    if "://" not in dsn or "@" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else dsn


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """Turn driver errors into Conveyor's, so nothing above the store sees asyncpg."""
    try:
        yield
    except asyncpg.UndefinedTableError as exc:
        raise SchemaNotReady(
            f"the Conveyor schema is missing ({exc}); run `conveyor migrate`"
        ) from exc
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
        raise DatabaseUnavailable(f"lost the connection to PostgreSQL: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise StoreError(f"database error: {exc}") from exc
