"""Conveyor: run workers and the demo, and operate the queue."""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from conveyor.app import App
from conveyor.cli_llm import llm_cli
from conveyor.cli_support import DatabaseUrl, out
from conveyor.cli_support import run as _run
from conveyor.cli_support import settings as _settings
from conveyor.cli_support import with_store as _with_store
from conveyor.cli_tenants import plans_cli, tenants_cli
from conveyor.core.durations import parse_duration
from conveyor.core.worker_health import WorkerHealth, WorkerReport, judge_worker
from conveyor.errors import ConveyorError
from conveyor.store.connection import connect
from conveyor.store.database import resolve_dsn
from conveyor.store.migrate import migrate as apply_migrations
from conveyor.store.params import (
    NewTask,
    QueueLimits,
    ReplayFilter,
    validate_queue_name,
)
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import WorkerStatus

T = TypeVar("T")
cli = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
dlq_cli = typer.Typer(
    help="The dead-letter queue: list and replay dead tasks.", no_args_is_help=True
)
queues_cli = typer.Typer(
    help="Pause and resume queues; set a role's global cap and aging.", no_args_is_help=True
)
cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(queues_cli, name="queues")
cli.add_typer(tenants_cli, name="tenants")
cli.add_typer(plans_cli, name="plans")
cli.add_typer(llm_cli, name="llm")


@cli.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Apply pending schema migrations (safe to run from many processes at once)."""

    async def go() -> None:
        async with resolve_dsn(_settings(database_url)) as dsn:
            conn = await connect(dsn)
            try:
                applied = await apply_migrations(conn)
            finally:
                await conn.close()
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (up to date)"
        out.print(f"applied migrations: {names}")

    _run(go())


@cli.command()
def status(
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Depth and age per queue, running and dead counts, and the workers."""

    settings = _settings(database_url)

    def health(w: WorkerStatus) -> WorkerHealth:
        return judge_worker(
            WorkerReport(
                w.state, w.silent_seconds, w.running, w.concurrency, w.seconds_since_outcome
            ),
            lease_seconds=settings.lease_seconds,
            stuck_seconds=settings.worker_stuck_seconds,
        )

    async def go(store: PostgresStore) -> None:
        queues, workers = await store.queue_status(), await store.list_workers()
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "queues": [{f: getattr(q, f) for f in q.__slots__} for q in queues],
                        "workers": [
                            {**{f: getattr(w, f) for f in w.__slots__}, "health": health(w)}
                            for w in workers
                        ],
                    },
                    default=str,
                )
            )
            return
        table = Table(title="queues")
        for column in (
            "queue",
            "queued",
            "scheduled",
            "running",
            "dead",
            "oldest queued",
            "paused",
        ):
            table.add_column(column, justify="left" if column == "queue" else "right")
        for q in queues:
            age = "-" if q.oldest_queued_seconds is None else f"{q.oldest_queued_seconds:.1f}s"
            table.add_row(
                q.queue,
                str(q.queued),
                str(q.scheduled),
                str(q.running),
                str(q.dead),
                age,
                "yes" if q.paused else "",
            )
        out.print(table)
        wtable = Table(title="workers")
        for column in (
            "id",
            "host",
            "pid",
            "health",
            "holds",
            "unwritten",
            "last outcome",
            "last heartbeat",
        ):
            wtable.add_column(column)
        for w in workers:
            judged = health(w)
            shown = judged.value if judged is WorkerHealth.OK else f"[red]{judged.value}[/red]"
            wtable.add_row(
                w.id,
                w.host,
                str(w.pid),
                shown,
                f"{w.running}/{w.concurrency}",
                str(w.unwritten),
                f"{w.seconds_since_outcome:.0f}s ago",
                f"{w.silent_seconds:.0f}s ago",
            )
        out.print(wtable)

    _run(_with_store(settings, go))


@cli.command()
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
    cutoff = datetime.now(UTC) - age

    async def go(store: PostgresStore) -> None:
        dropped, pruned = await store.apply_retention(cutoff)
        out.print(
            f"cutoff {cutoff:%Y-%m-%d %H:%M} UTC: dropped {len(dropped)} partition(s)"
            f"{': ' + ', '.join(dropped) if dropped else ''}; pruned {pruned} ledger row(s)"
        )

    _run(_with_store(settings, go))


@cli.command()
def enqueue(
    queue: Annotated[str, typer.Argument(help="The agent role, e.g. copywriter.")],
    payload: Annotated[str, typer.Option("--payload", help="JSON object.")] = "{}",
    tenant: Annotated[str, typer.Option("--tenant")] = "default",
    priority: Annotated[int, typer.Option("--priority", help="1 urgent .. 10 batch.")] = 5,
    delay: Annotated[str | None, typer.Option("--delay", help="Start later, e.g. 30s.")] = None,
    key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", help="Default: the agent's policy.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Submit one task and print its id."""
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--payload") from None
    try:
        run_at = datetime.now(UTC) + parse_duration(delay) if delay else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--delay") from None
    try:
        task = NewTask(
            queue=queue,
            payload=body,
            tenant_id=tenant,
            priority=priority,
            run_at=run_at,
            max_attempts=max_attempts,
            idempotency_key=key,
        )
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def go(store: PostgresStore) -> None:
        result = await store.enqueue(task)
        out.print(f"{result.task_id} {'created' if result.created else 'already existed'}")

    _run(_with_store(_settings(database_url), go))


@cli.command()
def show(task_id: int, database_url: DatabaseUrl = None) -> None:
    """Print one task (active or finished) as JSON."""

    async def go(store: PostgresStore) -> None:
        out.print_json(json.dumps(asdict(await store.get_task(task_id)), default=str))

    _run(_with_store(_settings(database_url), go))


@cli.command()
def cancel(task_id: int, database_url: DatabaseUrl = None) -> None:
    """Cancel a task: at once if it waits, by asking its worker if it runs."""

    async def go(store: PostgresStore) -> None:
        state = await store.cancel(task_id, reason="cancelled from the CLI")
        out.print(
            f"task {task_id}: {'cancel requested (running)' if state == 'running' else state}"
        )

    _run(_with_store(_settings(database_url), go))


@dlq_cli.command("list")
def dlq_list(
    queue: Annotated[str | None, typer.Option("--queue")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
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
    task_ids: Annotated[list[int] | None, typer.Option("--id", help="Repeatable.")] = None,
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
            "--max-running", min=0, help="Global cap: all tenants together (0 removes it)."
        ),
    ] = None,
    aging: Annotated[
        str | None,
        typer.Option("--aging", help="Serve a priority level left waiting this long, e.g. 30s."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Set a role's limits across tenants (flags not given keep their value)."""
    try:
        aging_seconds = parse_duration(aging).total_seconds() if aging is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--aging") from None
    try:
        limits = QueueLimits(validate_queue_name(queue), max_running, aging_seconds)
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = _run(_with_store(_settings(database_url), lambda s: s.set_queue_limits(limits)))
    out.print(
        f"{settings.name}: max running {settings.max_running or 'unlimited'}, "
        f"aging {settings.aging_seconds:g}s{', paused' if settings.paused else ''}"
    )


@queues_cli.command("resume")
def queues_resume(queue: str, database_url: DatabaseUrl = None) -> None:
    """Let workers claim from QUEUE again."""
    _check_queue(queue)
    _run(_with_store(_settings(database_url), lambda store: store.resume_queue(queue)))
    out.print(f"resumed {queue}")


def _check_queue(queue: str) -> None:
    try:
        validate_queue_name(queue)
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc), param_hint="QUEUE") from None


@cli.command()
def group(
    group_id: str,
    tenant: Annotated[str, typer.Option("--tenant")] = "default",
    database_url: DatabaseUrl = None,
) -> None:
    """A campaign's tasks by state, and its completion."""
    status = _run(_with_store(_settings(database_url), lambda s: s.group_status(tenant, group_id)))
    counts = ", ".join(f"{state.value} {n}" for state, n in sorted(status.counts.items()))
    done = f"completed {status.completed_at:%Y-%m-%d %H:%M:%S}" if status.completed_at else "open"
    follow = f", follow-up task {status.follow_up_id}" if status.follow_up_id else ""
    out.print(f"group {group_id} ({tenant}): {counts or 'no tasks yet'}; {done}{follow}")


@cli.command(
    "mock-llm",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def mock_llm(ctx: typer.Context) -> None:
    """A fake OpenAI, Anthropic and Ollama provider with latency and faults (docs/mock_llm.md).

    Run `conveyor mock-llm --help` for its flags.
    """
    # Imported here: the mock's HTTP server (aiohttp) is not needed by any other command.
    from conveyor.mock_llm.cli import mock_llm_command

    command = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    command.command()(mock_llm_command)
    command(args=ctx.args, prog_name="conveyor mock-llm")


def load_app(reference: str) -> App:
    """Import ``package.module:attribute`` and check that it is an App."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise typer.BadParameter("use the form package.module:app", param_hint="--app")
    if os.getcwd() not in sys.path:  # like uvicorn and celery: the app may live right here
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(
            f"cannot import {module_name}: {exc}", param_hint="--app"
        ) from None
    app: Any = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise typer.BadParameter(f"{reference} is not a conveyor.App", param_hint="--app")
    return app


@cli.command()
def worker(
    app_ref: Annotated[str, typer.Option("--app", help="package.module:app to run.")],
    queues: Annotated[
        list[str] | None, typer.Option("--queue", help="Serve only this queue (repeatable).")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 256,
    claim_batch: Annotated[int, typer.Option("--claim-batch", min=1)] = 100,
    grace: Annotated[float, typer.Option("--grace", min=0, help="Seconds to drain.")] = 30.0,
    max_tasks: Annotated[
        int | None,
        typer.Option("--max-tasks-per-process", min=1, help="Recycle after this many tasks."),
    ] = None,
    sync_threads: Annotated[
        int, typer.Option("--sync-threads", min=1, help="Threads for plain def handlers.")
    ] = 64,
    max_memory: Annotated[
        float | None,
        typer.Option("--max-memory", min=1, help="Recycle past this resident memory (MB)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port."
        ),
    ] = None,
    migrate_first: Annotated[
        bool | None, typer.Option("--migrate/--no-migrate", help="Apply migrations first.")
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    database_url: DatabaseUrl = None,
) -> None:
    """Run the agents of an App until SIGTERM/SIGINT (a second signal forces exit)."""
    from conveyor.worker.signals import ShutdownSignals

    signals = ShutdownSignals().install()  # before anything else: a signal is never lost
    from conveyor.observability.logging import configure_logging
    from conveyor.worker.options import WorkerOptions
    from conveyor.worker.process import reexec_self, serve

    configure_logging(log_level)
    settings = _settings(database_url)
    app = load_app(app_ref)
    try:
        options = WorkerOptions(
            queues=tuple(queues) if queues else None,
            concurrency=concurrency,
            claim_batch=claim_batch,
            lease_seconds=settings.lease_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            poll_seconds=settings.poll_seconds,
            grace_seconds=grace,
            max_tasks_per_process=max_tasks,
            max_memory_mb=max_memory,
            sync_threads=sync_threads,
            metrics_port=metrics_port,
        )
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc)) from None
    migrate_now = settings.database_url is None if migrate_first is None else migrate_first
    served = serve(app, settings, options, migrate=migrate_now, signals=signals)
    if _run(served, fast_loop=True) is not None:
        reexec_self()  # drained: start over in a fresh interpreter


@cli.command()
def demo(
    tasks: Annotated[int, typer.Option("--tasks", min=1, help="Tasks to submit.")] = 2000,
    tenants: Annotated[int, typer.Option("--tenants", min=1, help="Tenants to simulate.")] = 12,
    database_url: DatabaseUrl = None,
) -> None:
    """Run the agency demo: submit a multi-tenant batch, process it, show what happened."""
    from conveyor.demo import run_demo

    _run(run_demo(_settings(database_url), tasks=tasks, tenants=tenants, console=out))


def main() -> None:
    """Entry point of the ``conveyor`` script."""
    cli(prog_name="conveyor")


if __name__ == "__main__":  # pragma: no cover
    main()
