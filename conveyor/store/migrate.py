"""Forward-only migrations: numbered plain-SQL files applied in order under a lock.

``NNNN_name.sql`` files in ``store/migrations`` are applied once each, in their own
transaction, and recorded with a checksum in ``schema_migrations``. A session advisory lock
makes concurrent starts (ten workers booting at once) apply each file exactly once. An
applied file whose text changed is an error: migrations are never edited, only added.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

import asyncpg

from conveyor.errors import MigrationError, SchemaNotReady
from conveyor.store.connection import Conn
from conveyor.store.retention import ensure_partitions

MIGRATION_LOCK = 0x636F6E7665790000
PARTITION_MONTHS_AHEAD = 3
_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text; an applied migration must never change."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """Every migration shipped with this version of Conveyor, oldest first."""
    folder = resources.files("conveyor.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match["version"]), match["name"], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def migrate(conn: Conn, now: datetime | None = None) -> list[Migration]:
    """Apply pending migrations and create partitions ahead; returns what was applied."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(_CREATE_LEDGER)
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}
        done: list[Migration] = []
        for migration in available_migrations():
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql changed after "
                        "it was applied; add a new migration instead of editing an old one"
                    )
                continue
            async with conn.transaction():
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql failed: {exc}"
                    ) from exc
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration)
        await ensure_partitions(conn, now or datetime.now(UTC), PARTITION_MONTHS_AHEAD)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def pending_migrations(conn: Conn) -> list[Migration]:
    """Migrations not yet applied to this database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied: set[int] = set()
    if exists:
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m for m in available_migrations() if m.version not in applied]


async def require_current_schema(conn: Conn) -> None:
    """Raise SchemaNotReady unless every migration has been applied."""
    pending = await pending_migrations(conn)
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise SchemaNotReady(f"database is missing migrations ({names}); run `conveyor migrate`")
