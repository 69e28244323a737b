"""``conveyor status``: depth and age per queue, running and dead counts, and the workers;
``--watch`` redraws a live view (``status_view.py``) until Ctrl-C."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from conveyor.cli import status_view
from conveyor.cli.common import DatabaseUrl, out
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.cli.common import with_store as _with_store
from conveyor.core.worker_health import WorkerHealth, WorkerReport, judge_worker
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import WorkerStatus


def status(
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="A live view of queues, workers, breakers and the last minute's "
            "throughput and errors, redrawn until Ctrl-C.",
        ),
    ] = False,
    every: Annotated[
        float,
        typer.Option("--every", min=0.1, max=3600, help="Seconds between redraws of --watch."),
    ] = 2.0,
    metrics_urls: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics-url",
            help="A worker's /metrics URL to read its circuit breakers from (repeatable; "
            "--watch only).",
        ),
    ] = None,
) -> None:
    """Depth and age per queue, running and dead counts, and the workers."""

    settings = _settings(database_url)
    urls = list(metrics_urls or ())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise typer.BadParameter(
                f"{url!r} is not an http(s) URL, e.g. http://worker-1:9100/metrics",
                param_hint="--metrics-url",
            )
    if urls and not watch:
        raise typer.BadParameter("breakers are shown by --watch only", param_hint="--metrics-url")
    if watch and as_json:
        raise typer.BadParameter("--watch draws tables; leave out --json", param_hint="--watch")

    def health(w: WorkerStatus) -> WorkerHealth:
        return judge_worker(
            WorkerReport(
                w.state, w.silent_seconds, w.running, w.concurrency, w.seconds_since_outcome
            ),
            lease_seconds=settings.lease_seconds,
            stuck_seconds=settings.worker_stuck_seconds,
        )

    if watch:

        async def live(store: PostgresStore) -> None:
            await status_view.watch(store, health, out, every=every, metrics_urls=urls)

        try:
            _run(_with_store(settings, live))
        except KeyboardInterrupt:  # Ctrl-C: the way out of --watch, not an error
            raise typer.Exit(0) from None
        return

    async def go(store: PostgresStore) -> None:
        queues, workers = await store.queue_status(), await store.list_workers()
        if as_json:
            body = {
                "queues": [asdict(q) for q in queues],
                "workers": [{**asdict(w), "health": health(w)} for w in workers],
            }
            out.print_json(json.dumps(body, default=str))
            return
        table = Table(title="queues")
        for column in (
            "queue",
            "queued",
            "scheduled",
            "running",
            "waiting",
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
                str(q.waiting),
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
