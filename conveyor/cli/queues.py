"""``conveyor queues``: declare and list queues, pause and resume one, set a role's limits."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from conveyor.cli.common import INT32_MAX, DatabaseUrl, out
from conveyor.cli.common import check_queue as _check_queue
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.cli.common import with_store as _with_store
from conveyor.core.durations import parse_duration
from conveyor.errors import ConveyorError
from conveyor.store.params import QueueLimits, validate_queue_name
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import QueueDeclaration

queues_cli = typer.Typer(
    help="Declare, list, pause and resume queues; set a role's global cap and aging.",
    no_args_is_help=True,
)


@queues_cli.command("declare")
def queues_declare(
    queues: Annotated[list[str], typer.Argument(metavar="QUEUE...", help="Queue names.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Declare queues, so tasks can be submitted before any worker has served them."""
    for queue in queues:
        _check_queue(queue)

    async def go(store: PostgresStore) -> tuple[list[QueueDeclaration], list[str]]:
        before = await store.queue_declarations(queues)
        return before, await store.declare_queues(queues)

    before, _new = _run(_with_store(_settings(database_url), go))
    already = {d.name: d.sources for d in before}
    for queue in dict.fromkeys(queues):
        if queue in already:
            out.print(f"{queue} was already declared (by {', '.join(already[queue])})")
        else:
            out.print(f"declared {queue}")


@queues_cli.command("list")
def queues_list(database_url: DatabaseUrl = None) -> None:
    """Every declared queue and what declares it."""
    declared = _run(_with_store(_settings(database_url), lambda s: s.queue_declarations()))
    table = Table(title="declared queues")
    table.add_column("queue")
    table.add_column("declared by")
    for d in declared:
        table.add_row(d.name, ", ".join(d.sources))
    out.print(table)


@queues_cli.command("pause")
def queues_pause(queue: str, database_url: DatabaseUrl = None) -> None:
    """Stop workers from claiming QUEUE (submissions are still accepted)."""
    _check_queue(queue)
    _run(_with_store(_settings(database_url), lambda store: store.pause_queue(queue)))
    out.print(f"paused {queue}")


@queues_cli.command("set")
def queues_set(
    queue: str,
    max_running: Annotated[
        int | None,
        typer.Option(
            "--max-running",
            min=0,
            max=INT32_MAX,
            help="Global cap: all tenants together (0 removes it).",
        ),
    ] = None,
    aging: Annotated[
        str | None,
        typer.Option("--aging", help="Serve a priority level left waiting this long, e.g. 30s."),
    ] = None,
    depth_threshold: Annotated[
        int | None,
        typer.Option(
            "--depth-threshold",
            min=0,
            max=INT32_MAX // 4,
            help="Shed new work past this many waiting tasks: priority 6-10 at N, 2-5 at 2N, "
            "1 at 4N (0 removes it).",
        ),
    ] = None,
    events: Annotated[
        bool | None,
        typer.Option(
            "--events/--no-events",
            help="Write the role's lifecycle events to the task event log (docs/events.md).",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Set a role's limits across tenants (flags not given keep their value)."""
    try:
        aging_seconds = parse_duration(aging).total_seconds() if aging is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--aging") from None
    try:
        limits = QueueLimits(
            validate_queue_name(queue), max_running, aging_seconds, depth_threshold, events
        )
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = _run(_with_store(_settings(database_url), lambda s: s.set_queue_limits(limits)))
    shed = settings.depth_threshold
    out.print(
        f"{settings.name}: max running {settings.max_running or 'unlimited'}, "
        f"aging {settings.aging_seconds:g}s, "
        f"{f'sheds past depth {shed}' if shed else 'never sheds'}"
        f"{'' if settings.events else ', lifecycle events off'}"
        f"{', paused' if settings.paused else ''}"
    )


@queues_cli.command("resume")
def queues_resume(queue: str, database_url: DatabaseUrl = None) -> None:
    """Let workers claim from QUEUE again."""
    _check_queue(queue)
    _run(_with_store(_settings(database_url), lambda store: store.resume_queue(queue)))
    out.print(f"resumed {queue}")
