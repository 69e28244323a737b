"""``conveyor worker``: run the agents of an App until a signal stops the process."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.app import App
from conveyor.cli.app_import import load_app
from conveyor.cli.common import DatabaseUrl
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.errors import ConveyorError
from conveyor.store.params import validate_queue_name
from conveyor.worker.agents_file import load_agents_file


def worker(
    app_ref: Annotated[str | None, typer.Option("--app", help="package.module:app to run.")] = None,
    agents_file: Annotated[
        str | None,
        typer.Option(
            "--agents", help="TOML file of declarative agents to serve (see docs/agents.md)."
        ),
    ] = None,
    stored_agents: Annotated[
        list[str] | None,
        typer.Option(
            "--stored-agent",
            help="Serve this declarative agent as defined in the database (repeatable).",
        ),
    ] = None,
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
    metrics_host: Annotated[
        str,
        typer.Option(
            "--metrics-host",
            help="Address for --metrics-port (default all interfaces; 127.0.0.1: this machine).",
        ),
    ] = "0.0.0.0",
    migrate_first: Annotated[
        bool | None, typer.Option("--migrate/--no-migrate", help="Apply migrations first.")
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    database_url: DatabaseUrl = None,
) -> None:
    """Run the agents of an App, and declarative agents, until SIGTERM/SIGINT (a second
    signal forces exit)."""
    from conveyor.worker.signals import ShutdownSignals

    signals = ShutdownSignals().install()  # before anything else: a signal is never lost
    from conveyor.cli.worker_root import serve
    from conveyor.observability.logging import configure_logging
    from conveyor.worker.options import WorkerOptions
    from conveyor.worker.process import reexec_self

    configure_logging(log_level)
    settings = _settings(database_url)
    if app_ref is None and agents_file is None and not stored_agents:
        raise typer.BadParameter(
            "give --app package.module:app, --agents FILE or --stored-agent ROLE (or several)",
            param_hint="--app",
        )
    app = load_app(app_ref) if app_ref is not None else App("agents")
    try:
        agents = load_agents_file(agents_file) if agents_file is not None else {}
        for role in stored_agents or ():
            validate_queue_name(role)
    except ConveyorError as exc:
        hint = "--agents" if agents_file is not None else "--stored-agent"
        raise typer.BadParameter(str(exc), param_hint=hint) from None
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
            metrics_host=metrics_host,
        )
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc)) from None
    migrate_now = settings.database_url is None if migrate_first is None else migrate_first
    served = serve(
        app,
        settings,
        options,
        migrate=migrate_now,
        signals=signals,
        agents=agents,
        stored_agents=tuple(stored_agents or ()),
    )
    if _run(served, fast_loop=True) is not None:
        reexec_self()  # drained: start over in a fresh interpreter
