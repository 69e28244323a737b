"""``conveyor dlq``: the dead-letter queue, listed and replayed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from conveyor.cli.common import INT64_MAX, DatabaseUrl, out, task_id
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.cli.common import with_store as _with_store
from conveyor.store.params import ReplayFilter
from conveyor.store.postgres import PostgresStore

dlq_cli = typer.Typer(
    help="The dead-letter queue: list and replay dead tasks.", no_args_is_help=True
)


@dlq_cli.command("list")
def dlq_list(
    queue: Annotated[str | None, typer.Option("--queue")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=INT64_MAX)] = 50,
    database_url: DatabaseUrl = None,
) -> None:
    """List dead tasks, newest first, with the error that killed them."""

    async def go(store: PostgresStore) -> None:
        dead = await store.list_dead(queue=queue, tenant_id=tenant, limit=limit)
        table = Table(title=f"dead tasks ({len(dead)} shown)")
        for column in ("id", "tenant", "queue", "attempts", "error", "died"):
            table.add_column(column)
        for d in dead:
            error = d.last_error or {}
            message = f"{error.get('type', '?')}: {error.get('message', '')}"[:80]
            table.add_row(
                str(d.id),
                d.tenant_id,
                d.queue,
                f"{d.attempts}/{d.max_attempts}",
                message,
                f"{d.finished_at:%Y-%m-%d %H:%M:%S}",
            )
        out.print(table)

    _run(_with_store(_settings(database_url), go))


@dlq_cli.command("replay")
def dlq_replay(
    task_ids: Annotated[
        list[int] | None, typer.Option("--id", parser=task_id, help="Repeatable.")
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Replay every dead task.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Put dead tasks back in their queue with a fresh attempt budget (same ids)."""
    if not (task_ids or queue or tenant or everything):
        raise typer.BadParameter("say what to replay: --id, --queue, --tenant or --all")
    which = ReplayFilter(tuple(task_ids) if task_ids else None, queue, tenant, everything)

    async def go(store: PostgresStore) -> None:
        replayed = await store.replay_dead(which)
        out.print(f"replayed {len(replayed)} task(s)")

    _run(_with_store(_settings(database_url), go))
