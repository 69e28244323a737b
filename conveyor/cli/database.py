"""``conveyor migrate`` and ``conveyor retention``: the schema, and the history it keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from conveyor.cli.common import DatabaseUrl, out
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.cli.common import with_store as _with_store
from conveyor.core.durations import parse_duration
from conveyor.store.connection import connect
from conveyor.store.database import direct_dsn, resolve_dsn
from conveyor.store.migrate import migrate as apply_migrations
from conveyor.store.postgres import PostgresStore


def migrate(database_url: DatabaseUrl = None) -> None:
    """Apply pending schema migrations (safe to run from many processes at once).

    They run on CONVEYOR_DIRECT_DATABASE_URL when it is set: the migration lock is a
    session lock, which a transaction-pooling PgBouncer cannot hold."""

    async def go() -> None:
        settings = _settings(database_url)
        async with resolve_dsn(settings) as dsn:
            conn = await connect(direct_dsn(settings, dsn))
            try:
                applied = await apply_migrations(conn)
            finally:
                await conn.close()
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (up to date)"
        out.print(f"applied migrations: {names}")

    _run(go())


def retention(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Age to keep, e.g. 90d (default CONVEYOR_RETENTION)."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Drop whole monthly partitions of finished tasks older than --older-than."""
    settings = _settings(database_url)
    try:
        age = parse_duration(older_than or settings.retention)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None
    if age < timedelta(days=1):
        # `m` is minutes: "--older-than 3m" would wipe the history; refuse the typo.
        raise typer.BadParameter(
            f"{older_than} is less than a day (m means minutes); use days or weeks, e.g. 90d",
            param_hint="--older-than",
        )
    try:
        cutoff = datetime.now(UTC) - age
    except OverflowError:
        raise typer.BadParameter(
            f"{older_than} reaches before the year 1", param_hint="--older-than"
        ) from None

    async def go(store: PostgresStore) -> None:
        dropped, pruned = await store.apply_retention(cutoff)
        out.print(
            f"cutoff {cutoff:%Y-%m-%d %H:%M} UTC: dropped {len(dropped)} partition(s)"
            f"{': ' + ', '.join(dropped) if dropped else ''}; pruned {pruned} ledger row(s)"
        )

    _run(_with_store(settings, go))
