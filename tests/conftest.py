"""Fixtures shared by every test layer: a real PostgreSQL and per-test databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from conveyor.store.postgres import PostgresStore
from tests.support.databases import DatabaseFactory, server_dsn


@pytest.fixture(scope="session")
def database_factory() -> Iterator[DatabaseFactory]:
    """One migrated template per test run, on DATABASE_URL or the embedded server."""
    with server_dsn() as dsn:
        factory = DatabaseFactory(dsn)
        factory.prepare_template()
        try:
            yield factory
        finally:
            factory.drop_all()


@pytest.fixture
async def database_dsn(database_factory: DatabaseFactory) -> AsyncIterator[str]:
    """A fresh migrated database of this test's own."""
    dsn = await database_factory.create()
    yield dsn
    await database_factory.drop(dsn)


@pytest.fixture
async def store(database_dsn: str) -> AsyncIterator[PostgresStore]:
    """A store on this test's own database."""
    opened = await PostgresStore.open(database_dsn, min_size=1, max_size=8)
    yield opened
    await opened.close()
