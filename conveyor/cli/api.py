"""``conveyor api`` (the HTTP API process) and ``conveyor keys`` (its API keys).

The command resolves the database first (starting the embedded server when
``DATABASE_URL`` is unset, and migrating it), then serves; each server process builds its
app in ``cli/api_root.py``. FastAPI is imported only by ``api``, so the other commands
start as fast as before.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from conveyor.cli.common import DatabaseUrl, err, out, print_error
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.cli.common import with_store as _with_store
from conveyor.core.api_keys import new_key
from conveyor.errors import ConveyorError
from conveyor.store.database import open_store
from conveyor.store.embedded import EmbeddedPostgres
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import ApiKey

# what each server process imports and calls to build its app (the composition root)
FACTORY = "conveyor.cli.api_root:build_app"
# prometheus_client's multiprocess folder (named here: importing it would load the library)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def api(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Server processes (each its own pool).")
    ] = 1,
    log_level: Annotated[
        str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API (FastAPI under uvicorn) until SIGTERM/SIGINT; it never runs agents."""
    from conveyor.observability.logging import configure_logging

    configure_logging(log_level)
    settings = _settings(database_url)
    embedded = None
    if settings.database_url is None:
        # a private server for this machine: started here, shared by the server processes
        embedded = EmbeddedPostgres(settings.embedded_dir)
        try:
            settings = settings.model_copy(update={"database_url": embedded.start()})
        except ConveyorError as exc:
            print_error(exc)
            raise typer.Exit(1) from None
    try:

        async def prepare() -> None:
            # the embedded server is ours: keep it migrated (as `worker` does); a configured
            # one is migrated by `conveyor migrate`, and checked here
            async with open_store(
                settings,
                auto_migrate=embedded is not None,
                wait_seconds=settings.database_wait_seconds,
            ):
                pass

        _run(prepare())
        from conveyor.api.server import serve

        assert settings.database_url is not None
        os.environ["DATABASE_URL"] = settings.database_url  # for the server processes
        with metrics_folder(workers):
            serve(FACTORY, host=host, port=port, workers=workers)
    finally:
        if embedded is not None:
            embedded.stop()


@contextlib.contextmanager
def metrics_folder(workers: int) -> Iterator[None]:
    """With several server processes, prometheus_client's multiprocess folder: every
    process writes its samples there and any of them answers ``/metrics`` with the sum.

    PROMETHEUS_MULTIPROC_DIR as the operator set it (emptied first: samples of an earlier
    run would add up with this one's), else a temporary folder removed at exit. One process
    keeps its metrics in memory, as the worker does.
    """
    if workers <= 1:
        yield
        return
    given = os.environ.get(MULTIPROC_ENV)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="conveyor-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)  # before the server processes start
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)
            del os.environ[MULTIPROC_ENV]


keys_cli = typer.Typer(
    help="Create, list and revoke API keys (shown once; stored as hashes).",
    no_args_is_help=True,
)


@keys_cli.command("create")
def keys_create(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="The tenant the key acts for.")
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin key instead.")] = False,
    name: Annotated[str, typer.Option("--name", help="A label for listings.")] = "",
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key and print it once: it cannot be shown again."""
    if admin == (tenant is not None):
        raise typer.BadParameter("give --tenant TENANT or --admin (one of them)")
    issued = new_key(secrets.token_bytes)

    async def go(store: PostgresStore) -> None:
        await store.create_api_key(issued.key_id, tenant, issued.secret_hash, name)

    _run(_with_store(_settings(database_url), go))
    who = "admin" if admin else f"tenant {tenant}"
    err.print(f"created key {issued.key_id} for {who}; it is shown once, keep it secret:")
    out.print(issued.token, highlight=False)


@keys_cli.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List keys by id (never their secrets), newest first."""

    async def go(store: PostgresStore) -> list[ApiKey]:
        return await store.list_api_keys(tenant)

    found = _run(_with_store(_settings(database_url), go))
    table = Table(title="API keys")
    for column in ("id", "for", "name", "created", "revoked"):
        table.add_column(column)
    for key in found:
        revoked = "" if key.revoked_at is None else f"{key.revoked_at:%Y-%m-%d %H:%M:%S}"
        table.add_row(
            key.id,
            "admin" if key.admin else str(key.tenant_id),
            key.name,
            f"{key.created_at:%Y-%m-%d %H:%M:%S}",
            revoked,
        )
    out.print(table)


@keys_cli.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (the 12 hex digits).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key; API processes stop accepting it within CONVEYOR_API_KEY_CACHE_SECONDS."""

    async def go(store: PostgresStore) -> ApiKey | None:
        return await store.revoke_api_key(key_id)

    revoked = _run(_with_store(_settings(database_url), go))
    if revoked is None:
        print_error(f"no key {key_id!r}; `conveyor keys list` shows them")
        raise typer.Exit(1)
    out.print(f"revoked {revoked.id}")
