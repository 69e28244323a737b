"""Opening the database: the configured server or the embedded one, migrated or checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from conveyor.settings import Settings
from conveyor.store.connection import connect
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


@asynccontextmanager
async def open_store(
    settings: Settings, *, auto_migrate: bool = False
) -> AsyncIterator[PostgresStore]:
    """A ready store. With ``auto_migrate`` pending migrations are applied first; without,
    a database that lacks them raises SchemaNotReady."""
    async with resolve_dsn(settings) as dsn:
        conn = await connect(dsn, statement_cache_size=settings.statement_cache_size)
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
        try:
            yield store
        finally:
            await store.close()
