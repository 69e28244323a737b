"""Migrations on real PostgreSQL: idempotent, safe under concurrent starts, strict about
edited files, and replaying them yields exactly the canonical ``schema.sql``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import asyncpg
import pytest

from conveyor.errors import MigrationError, SchemaNotReady
from conveyor.store import migrate as migrate_module
from conveyor.store.connection import connect
from conveyor.store.migrate import (
    Migration,
    available_migrations,
    migrate,
    pending_migrations,
    require_current_schema,
)
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from tests.support.databases import DatabaseFactory


@pytest.fixture
async def empty_dsn(database_factory: DatabaseFactory) -> AsyncIterator[str]:
    """A database with no schema at all."""
    dsn = await database_factory.create_empty()
    yield dsn
    await database_factory.drop(dsn)


@pytest.fixture
async def empty_conn(empty_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(empty_dsn)
    yield conn
    await conn.close()


async def test_migrate_twice_applies_nothing_the_second_time(
    empty_conn: asyncpg.Connection,
) -> None:
    shipped = available_migrations()
    assert shipped and [m.version for m in shipped] == sorted(m.version for m in shipped)

    first = await migrate(empty_conn)
    assert [m.version for m in first] == [m.version for m in shipped]
    recorded = await empty_conn.fetch("SELECT version, checksum FROM schema_migrations")
    assert {r["version"]: r["checksum"] for r in recorded} == {
        m.version: m.checksum for m in shipped
    }

    assert await migrate(empty_conn) == []
    assert await empty_conn.fetchval("SELECT count(*) FROM schema_migrations") == len(shipped)
    assert await pending_migrations(empty_conn) == []
    await require_current_schema(empty_conn)


async def test_five_concurrent_migrations_apply_each_file_once(empty_dsn: str) -> None:
    conns = [await connect(empty_dsn) for _ in range(5)]
    try:
        results = await asyncio.gather(*(migrate(conn) for conn in conns))
        applied = [m.version for result in results for m in result]
        assert sorted(applied) == [m.version for m in available_migrations()]
        assert sum(1 for result in results if result) == 1  # one starter did all the work
        versions = await conns[0].fetch("SELECT version FROM schema_migrations")
        assert len(versions) == len(available_migrations())
        await require_current_schema(conns[0])
    finally:
        for conn in conns:
            await conn.close()

    store = await PostgresStore.open(empty_dsn, max_size=2)
    try:
        result = await store.enqueue(NewTask(queue="q"))
        assert result.created
    finally:
        await store.close()


async def test_an_edited_migration_is_refused(database_dsn: str) -> None:
    conn = await connect(database_dsn)
    try:
        original = await conn.fetchval("SELECT checksum FROM schema_migrations WHERE version = 1")
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn)
        # The lock was released on the way out: a fixed history migrates again.
        await conn.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = 1", original)
        other = await connect(database_dsn)
        try:
            assert await asyncio.wait_for(migrate(other), timeout=10) == []
        finally:
            await other.close()
    finally:
        await conn.close()


async def test_a_failing_migration_is_rolled_back_and_not_recorded(
    empty_conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    await migrate(empty_conn)
    broken = Migration(
        9999,
        "broken",
        "CREATE TABLE half_done (id int); SELECT * FROM no_such_table;",
    )
    shipped = available_migrations()
    monkeypatch.setattr(migrate_module, "available_migrations", lambda: [*shipped, broken])
    with pytest.raises(MigrationError, match="9999_broken"):
        await migrate(empty_conn)
    assert await empty_conn.fetchval("SELECT to_regclass('half_done')") is None
    assert await empty_conn.fetchval("SELECT max(version) FROM schema_migrations") == max(
        m.version for m in shipped
    )
    with pytest.raises(SchemaNotReady, match="9999_broken"):
        await require_current_schema(empty_conn)


async def test_an_empty_database_is_not_ready(empty_dsn: str) -> None:
    conn = await connect(empty_dsn)
    try:
        assert [m.version for m in await pending_migrations(conn)] == [
            m.version for m in available_migrations()
        ]
        with pytest.raises(SchemaNotReady, match="conveyor migrate"):
            await require_current_schema(conn)
    finally:
        await conn.close()
    store = await PostgresStore.open(empty_dsn, max_size=1)
    try:
        with pytest.raises(SchemaNotReady, match="conveyor migrate"):
            await store.enqueue(NewTask(queue="q"))
    finally:
        await store.close()


# -- schema.sql equals the replayed migrations ---------------------------------------------

_OWN_TABLES = """
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND c.relname <> 'schema_migrations'
"""

_CATALOG: dict[str, str] = {
    "tables": f"""
        SELECT c.relname, c.relkind::text, pg_get_partkeydef(c.oid)
        FROM pg_class c WHERE c.oid IN ({_OWN_TABLES})""",
    "columns": f"""
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text,
               a.attgenerated::text
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.oid IN ({_OWN_TABLES}) AND a.attnum > 0 AND NOT a.attisdropped""",
    "indexes": f"""
        SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
        WHERE i.indrelid IN ({_OWN_TABLES})""",
    "constraints": f"""
        SELECT c.relname, con.conname, con.contype::text, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
        WHERE con.conrelid IN ({_OWN_TABLES})""",
    "triggers": f"""
        SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
        WHERE t.tgrelid IN ({_OWN_TABLES}) AND NOT t.tgisinternal""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public'""",
    "sequences": """
        SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
               s.seqmin, s.seqmax, s.seqcache, s.seqcycle
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'""",
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')""",
    "types": """
        SELECT t.typname, t.typtype::text FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)""",
    "seed_tenants": "SELECT id, name, weight FROM tenants",
}


async def describe(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """A normalized, order-independent description of the Conveyor schema in ``dsn``."""
    conn = await connect(dsn)
    try:
        return {
            part: sorted((tuple(row) for row in await conn.fetch(sql)), key=repr)
            for part, sql in _CATALOG.items()
        }
    finally:
        await conn.close()


async def test_replaying_the_migrations_equals_schema_sql(
    database_factory: DatabaseFactory,
) -> None:
    from_schema = await database_factory.create_empty()
    from_migrations = await database_factory.create_empty()
    try:
        schema_sql = (resources.files("conveyor.store") / "schema.sql").read_text("utf-8")
        conn = await connect(from_schema)
        try:
            await conn.execute(schema_sql)
        finally:
            await conn.close()
        conn = await connect(from_migrations)
        try:
            await migrate(conn)
        finally:
            await conn.close()

        expected = await describe(from_migrations)
        actual = await describe(from_schema)
        assert expected["tables"], "the description found no tables"
        assert expected["functions"] and expected["indexes"] and expected["constraints"]
        for part in _CATALOG:
            assert actual[part] == expected[part], f"schema.sql differs in {part}"

        # The description is sharp enough to see small drift.
        drifts = {
            "columns": "ALTER TABLE tasks ALTER COLUMN priority SET DEFAULT 4",
            "indexes": "DROP INDEX tasks_group_idx",
            "constraints": "ALTER TABLE workers DROP CONSTRAINT workers_state_check",
            "functions": "CREATE OR REPLACE FUNCTION conveyor_drop_partition("
            "parent regclass, part_name text) RETURNS void LANGUAGE sql AS 'SELECT 1'",
        }
        conn = await connect(from_schema)
        try:
            for part, statement in drifts.items():
                await conn.execute(statement)
                drifted = await describe(from_schema)
                assert drifted[part] != expected[part], f"{part} drift went unnoticed"
        finally:
            await conn.close()
    finally:
        await database_factory.drop(from_schema)
        await database_factory.drop(from_migrations)
