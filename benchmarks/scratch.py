"""Shared by the benchmarks: the server to measure on, and a scratch database on it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from conveyor.store.connection import connect
from conveyor.store.embedded import EmbeddedPostgres
from conveyor.store.migrate import migrate


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database of the same server (query string kept)."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


@asynccontextmanager
async def server_dsn(dsn: str | None) -> AsyncIterator[str]:
    """The given DSN, DATABASE_URL, or a started embedded server (stopped on exit)."""
    configured = dsn or os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    server = EmbeddedPostgres()
    started = await asyncio.to_thread(server.start)
    try:
        yield started
    finally:
        await asyncio.to_thread(server.stop)


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_database(dsn: str, extra_schema: str | None = None) -> AsyncIterator[str]:
    """A new, migrated database on the server of ``dsn`` (plus ``extra_schema``); dropped on
    exit."""
    name = f"conveyor_bench_{uuid.uuid4().hex[:10]}"
    await _admin(dsn, f'CREATE DATABASE "{name}"')
    scratch = with_database(dsn, name)
    try:
        conn = await connect(scratch)
        try:
            await migrate(conn)
            if extra_schema:
                await conn.execute(extra_schema)
        finally:
            await conn.close()
        yield scratch
    finally:
        await _admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def server_facts(conn: asyncpg.Connection) -> dict[str, str]:
    facts = {}
    for setting in (
        "server_version",
        "synchronous_commit",
        "fsync",
        "shared_buffers",
        "autovacuum",
    ):
        facts[setting] = str(await conn.fetchval(f"SHOW {setting}"))
    return facts
