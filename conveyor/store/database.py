"""Opening the database: the configured server or the embedded one, migrated or checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from conveyor.core.backoff import FailureBackoff
from conveyor.settings import Settings
from conveyor.store.availability import retry_while_unavailable
from conveyor.store.connection import connect
from conveyor.store.dsn import redact_dsn
from conveyor.store.embedded import EmbeddedPostgres
from conveyor.store.migrate import migrate, require_current_schema
from conveyor.store.postgres import PostgresStore


@asynccontextmanager
async def resolve_dsn(settings: Settings) -> AsyncIterator[str]:
    """Yield the DSN to use: DATABASE_URL, or a started embedded server (stopped on exit)."""
    if settings.database_url:
        yield settings.database_url
        return
    server = EmbeddedPostgres(settings.embedded_dir)
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()


def direct_dsn(settings: Settings, dsn: str) -> str:
    """The DSN for LISTEN, migrations and session advisory locks, which need a connection of
    their own (not one of PgBouncer's in transaction mode): CONVEYOR_DIRECT_DATABASE_URL,
    else ``dsn`` (DATABASE_URL or the embedded server)."""
    return settings.direct_database_url or dsn


async def connect_when_ready(
    dsn: str, *, wait_seconds: float, statement_cache_size: int = 100
) -> Any:
    """A connection to ``dsn``, waiting up to ``wait_seconds`` for a server that is down,
    starting up or failing over (with backoff, logging each refusal).

    A wrong password or database name is not waited for: it raises at once.
    """
    conn: asyncpg.Connection[Any] = await retry_while_unavailable(
        lambda: connect(dsn, statement_cache_size=statement_cache_size),
        what=f"connect to {redact_dsn(dsn)}",
        seconds=wait_seconds,
        backoff=FailureBackoff(base=0.2, cap=5.0),
    )
    return conn


@asynccontextmanager
async def open_store(
    settings: Settings, *, auto_migrate: bool = False, wait_seconds: float = 0.0
) -> AsyncIterator[PostgresStore]:
    """A ready store. With ``auto_migrate`` pending migrations are applied first; without,
    a database that lacks them raises SchemaNotReady. A server that is not reachable yet
    is waited for up to ``wait_seconds`` (a worker started together with its database).

    The pool connects to DATABASE_URL; migrations, the schema check and ``store.direct_dsn``
    (the worker's LISTEN) use the direct DSN (see :func:`direct_dsn`)."""
    async with resolve_dsn(settings) as dsn:
        direct = direct_dsn(settings, dsn)
        conn = await connect_when_ready(
            direct, wait_seconds=wait_seconds, statement_cache_size=settings.statement_cache_size
        )
        try:
            if auto_migrate:
                await migrate(conn)
            else:
                await require_current_schema(conn)
        finally:
            await conn.close()
        store = await PostgresStore.open(
            dsn,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            statement_cache_size=settings.statement_cache_size,
            fairness=settings.fairness,
        )
        store.direct_dsn = direct
        try:
            yield store
        finally:
            await store.close()
