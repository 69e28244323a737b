"""What every ``conveyor`` command shares: consoles, the database flag, settings and a store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from conveyor.core.durations import format_rate, parse_rate
from conveyor.core.llm_caps import LLMCaps
from conveyor.errors import ConveyorError
from conveyor.settings import Settings, load_settings
from conveyor.store.database import open_store
from conveyor.store.params import StartRate, validate_queue_name
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import CapCounter

T = TypeVar("T")

out = Console()
err = Console(stderr=True)


def print_error(message: object) -> None:
    """``error: <message>`` on stderr, the message printed as it is: rich would read a
    ``[...]`` in it (a list, a user's text) as markup, and drop or garble it."""
    err.print(f"[red]error:[/red] {escape(str(message))}")


INT32_MAX = 2**31 - 1
"""The largest value of a PostgreSQL ``integer`` column (caps, attempts, rates per minute)."""
INT64_MAX = 2**63 - 1
"""The largest ``bigint``: task ids, monthly limits and budgets."""
SPEND_MAX = 9_999_999_999.0
"""About the largest ``numeric(14, 4)``: a spend limit in USD."""


def caps_text(caps: LLMCaps) -> str:
    """``50 calls, 200,000 tokens, $2.00`` (``none``: no cap)."""
    parts = []
    if caps.calls is not None:
        parts.append(f"{caps.calls:,} calls")
    if caps.tokens is not None:
        parts.append(f"{caps.tokens:,} tokens")
    if caps.cost is not None:
        parts.append(f"${caps.cost:,.2f}")
    return ", ".join(parts) or "none"


def counter_document(counter: CapCounter | None) -> dict[str, Any] | None:
    """A task's or group's caps in force (each with who set it) and what they counted, as
    JSON for ``conveyor show`` and ``conveyor group``; None when nothing caps it."""
    if counter is None:
        return None
    return {
        "caps": counter.in_force.document() or {},
        "used": {k: str(v) for k, v in asdict(counter.used).items()},
        "in_flight": {k: str(v) for k, v in asdict(counter.in_flight).items()},
    }


def task_id(text: str) -> int:
    """A task id from the command line: a whole number from 1 to INT64_MAX."""
    cleaned = text.strip()
    if cleaned.isascii() and cleaned.isdigit() and 1 <= int(cleaned) <= INT64_MAX:
        return int(cleaned)
    raise typer.BadParameter(
        f"{text!r} is not a task id: ids are whole numbers from 1 to {INT64_MAX}"
    )


TaskId = Annotated[int, typer.Argument(parser=task_id, metavar="ID", help="A task id.")]

ID_ARGUMENT = {"ignore_unknown_options": True}
"""Context settings of a command taking an ID: ``show -1`` reaches the id check instead
of reading as an unknown option ``-1``."""

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
        print_error(exc)
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
        print_error(exc)
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
        count, seconds = parse_rate(text)
        if count > INT32_MAX:
            raise ValueError(f"invalid rate {text!r}: at most {INT32_MAX} starts per period")
        return StartRate(count, seconds)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--start-rate") from None


def rate_text(limit: int | None, interval: float | None, unset: str) -> str:
    """A start rate as ``10/1m``, or ``unset`` when there is none."""
    return format_rate(limit, interval) if limit is not None and interval else unset
