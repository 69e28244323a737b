"""What every ``conveyor`` command shares: consoles, the database flag, settings and a store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from conveyor.core.durations import format_rate, parse_rate
from conveyor.errors import ConveyorError
from conveyor.settings import Settings, load_settings
from conveyor.store.database import open_store
from conveyor.store.params import StartRate, validate_queue_name
from conveyor.store.postgres import PostgresStore

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="DATABASE_URL", help="PostgreSQL DSN (default: embedded)."
    ),
]


def settings(database_url: str | None) -> Settings:
    try:
        return load_settings(database_url=database_url)
    except ConveyorError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def run(coro: Coroutine[Any, Any, T], *, fast_loop: bool = False) -> T:
    """Run ``coro``; a Conveyor error becomes one readable line and exit status 1.

    ``fast_loop`` uses uvloop where it is installed: it schedules the worker's thousands of
    coroutines with measurably less CPU than the default loop.
    """
    try:
        if fast_loop:
            try:
                import uvloop
            except ImportError:  # pragma: no cover - Windows, or a minimal install
                pass
            else:
                return uvloop.run(coro)
        return asyncio.run(coro)
    except ConveyorError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


async def with_store(settings: Settings, action: Callable[[PostgresStore], Awaitable[T]]) -> T:
    # The embedded server is private to this machine, so keeping it migrated is safe; a
    # configured server is migrated only when asked (`conveyor migrate`).
    async with open_store(settings, auto_migrate=settings.database_url is None) as store:
        return await action(store)


def check_queue(queue: str) -> None:
    """Refuse a malformed queue name as a usage error naming QUEUE."""
    try:
        validate_queue_name(queue)
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc), param_hint="QUEUE") from None


def start_rate(text: str | None) -> StartRate | None:
    """The value of a ``--start-rate COUNT/DURATION`` flag."""
    if text is None:
        return None
    try:
        return StartRate(*parse_rate(text))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--start-rate") from None


def rate_text(limit: int | None, interval: float | None, unset: str) -> str:
    """A start rate as ``10/1m``, or ``unset`` when there is none."""
    return format_rate(limit, interval) if limit is not None and interval else unset
