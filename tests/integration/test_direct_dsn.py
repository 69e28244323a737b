"""CONVEYOR_DIRECT_DATABASE_URL: the pool goes through DATABASE_URL (here a cuttable proxy,
standing in for PgBouncer in transaction mode), while migrations and the worker's LISTEN
connection go to the server directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from typer.testing import CliRunner

from conveyor import App, TaskContext
from conveyor.cli import cli
from conveyor.settings import load_settings
from conveyor.store.database import open_store
from conveyor.store.migrate import available_migrations
from conveyor.store.params import NewTask
from tests.integration.worker_harness import running
from tests.support.databases import DatabaseFactory
from tests.support.tcp_proxy import CuttableProxy

OTHER_BACKENDS = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def empty_dsn(database_factory: DatabaseFactory) -> AsyncIterator[str]:
    dsn = await database_factory.create_empty()
    yield dsn
    await database_factory.drop(dsn)


async def test_open_store_migrates_directly_and_pools_through_database_url(
    empty_dsn: str,
) -> None:
    proxy, pooled = await CuttableProxy.for_dsn(empty_dsn)
    settings = load_settings(
        database_url=pooled, direct_database_url=empty_dsn, pool_min_size=1, pool_max_size=2
    )
    try:
        async with open_store(settings, auto_migrate=True) as store:
            # the pool's one connection; the migrations were applied on the direct one
            assert proxy.accepted == 1
            assert (store.dsn, store.direct_dsn) == (pooled, empty_dsn)
            assert (await store.enqueue(NewTask("q"))).created
    finally:
        await proxy.close()


def test_conveyor_migrate_uses_the_direct_url(database_factory: DatabaseFactory) -> None:
    empty = asyncio.run(database_factory.create_empty())
    try:
        # nothing listens on port 1: a migration through DATABASE_URL would fail
        result = CliRunner().invoke(
            cli,
            ["migrate"],
            env={
                "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
                "CONVEYOR_DIRECT_DATABASE_URL": empty,
            },
        )
        assert result.exit_code == 0, result.output
        assert "applied migrations: 0001_" in result.output

        async def applied() -> int:
            conn = await asyncpg.connect(empty)
            try:
                count: int = await conn.fetchval("SELECT count(*) FROM schema_migrations")
                return count
            finally:
                await conn.close()

        assert asyncio.run(applied()) == len(available_migrations())
    finally:
        asyncio.run(database_factory.drop(empty))


async def test_the_worker_keeps_listening_when_the_pooled_path_is_cut(database_dsn: str) -> None:
    app = App()

    @app.agent("work")
    async def work(ctx: TaskContext, payload: dict[str, object]) -> None:
        return None

    proxy, pooled = await CuttableProxy.for_dsn(database_dsn)
    settings = load_settings(database_url=pooled, direct_database_url=database_dsn)
    control = await asyncpg.connect(database_dsn)

    async def other_backends(expected: int) -> bool:
        return bool(await control.fetchval(OTHER_BACKENDS) == expected)

    try:
        async with open_store(settings) as store, running(app, store) as worker:
            while not worker.listening:
                await asyncio.sleep(0.02)
            assert await control.fetchval(OTHER_BACKENDS) >= 2  # the pool and the listener
            proxy.cut()
            # Every connection through DATABASE_URL is gone; the LISTEN connection is not.
            await until(lambda: other_backends(1))
            await asyncio.sleep(0.2)
            assert worker.listening
            assert await other_backends(1)
            proxy.restore()
    finally:
        await control.close()
        await proxy.close()
