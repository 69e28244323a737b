"""Fixtures of the integration tests: stores with wider pools for the concurrency tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor.store.postgres import PostgresStore


@pytest.fixture
async def wide_store(database_dsn: str) -> AsyncIterator[PostgresStore]:
    """A second store on the test's database with 20 connections, for racing callers."""
    opened = await PostgresStore.open(database_dsn, min_size=20, max_size=20)
    yield opened
    await opened.close()
