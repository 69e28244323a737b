"""Test databases on a real PostgreSQL: DATABASE_URL when set, the embedded server otherwise.

Each test run migrates one template database; each test gets its own clone of it, so tests
never see each other's rows and runs on one server never collide.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from conveyor.store.connection import connect
from conveyor.store.embedded import EmbeddedPostgres
from conveyor.store.migrate import migrate


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database of the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


@contextmanager
def server_dsn() -> Iterator[str]:
    """A DSN of a live server: DATABASE_URL, or the embedded server for this run."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    server = EmbeddedPostgres()
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class DatabaseFactory:
    """Creates migrated databases for tests by cloning one template."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.prefix = f"conveyor_test_{uuid.uuid4().hex[:10]}"
        self.template = f"{self.prefix}_tpl"
        self._count = 0
        self._created: list[str] = []

    def prepare_template(self) -> None:
        async def build() -> None:
            await _admin(self.dsn, f'CREATE DATABASE "{self.template}"')
            conn = await connect(with_database(self.dsn, self.template))
            try:
                await migrate(conn)
            finally:
                await conn.close()

        asyncio.run(build())

    async def create(self) -> str:
        """A fresh, migrated database; its DSN."""
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        await _admin(self.dsn, f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self._created.append(name)
        return with_database(self.dsn, name)

    async def create_empty(self) -> str:
        """A fresh database with no schema at all; its DSN."""
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        await _admin(self.dsn, f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return with_database(self.dsn, name)

    async def drop(self, dsn: str) -> None:
        """Drop a database made by this factory (connections to it are terminated)."""
        name = urlsplit(dsn).path.lstrip("/")
        await _admin(self.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_all(self) -> None:
        async def drop() -> None:
            for name in [*self._created, self.template]:
                await _admin(self.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        asyncio.run(drop())
