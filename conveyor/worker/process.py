"""A worker process: the worker plus maintenance, stopped gracefully by SIGTERM/SIGINT.

When the worker asks to be recycled (``--max-tasks-per-process``, ``--max-memory``) it
drains like a SIGTERM, and the process then replaces itself with a fresh interpreter
running the same command (same pid, so supervisors and orchestrators see no restart).

With ``--metrics-port`` the process serves Prometheus metrics (the worker's and the LLM
gateway's) from before it opens the database until it exits.

The first signal stops claiming and lets in-flight tasks finish within the grace period
(the rest are released, no attempt counted); a second signal exits at once, and the
leases of whatever was running expire and are redelivered. The command installs the
handlers first thing (``ShutdownSignals``), so a signal during start-up is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys

import structlog

from conveyor.app import App
from conveyor.observability.metrics import serve_metrics
from conveyor.observability.worker_metrics import unwatch_worker, watch_worker
from conveyor.settings import Settings
from conveyor.store.database import open_store
from conveyor.worker.maintenance import Maintenance, MaintenanceOptions
from conveyor.worker.options import WorkerOptions
from conveyor.worker.runtime import Worker
from conveyor.worker.signals import ShutdownSignals

log = structlog.get_logger("conveyor.worker")


async def serve(
    app: App,
    settings: Settings,
    options: WorkerOptions,
    *,
    migrate: bool,
    maintenance: bool = True,
    signals: ShutdownSignals | None = None,
) -> str | None:
    """Run one worker until a signal stops it; the recycle reason if it asked for one.

    ``signals`` installed by the caller at process start carry over a signal that came
    before this point; a stop asked for while the worker is still starting (waiting for
    the database, migrating) ends the start-up at once.
    """
    stop = asyncio.Event()
    (signals or ShutdownSignals()).attach(asyncio.get_running_loop(), stop.set)
    tune_garbage_collector()
    metrics = (
        None
        if options.metrics_port is None
        else serve_metrics(options.metrics_port, options.metrics_host)
    )
    started = asyncio.Event()
    try:
        main = asyncio.create_task(
            _serve_worker(app, settings, options, stop, migrate, maintenance, started)
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not main.done() and not started.is_set():
            main.cancel()  # stopped before it ever ran: nothing to drain
            with contextlib.suppress(asyncio.CancelledError):
                await main
            return None
        return await main
    finally:
        if metrics is not None:
            await asyncio.to_thread(metrics.shutdown)  # waits out its poll, up to 0.5 s
            metrics.server_close()


async def _serve_worker(
    app: App,
    settings: Settings,
    options: WorkerOptions,
    stop: asyncio.Event,
    migrate: bool,
    maintenance: bool,
    started: asyncio.Event,
) -> str | None:
    # the pool must hold the claim loop, the flusher and the heartbeat at once
    pool_settings = settings.model_copy(update={"pool_max_size": max(settings.pool_max_size, 4)})
    async with open_store(
        pool_settings, auto_migrate=migrate, wait_seconds=settings.database_wait_seconds
    ) as store:
        upkeep = None
        if maintenance:
            options_m = MaintenanceOptions(
                promote_seconds=settings.promote_seconds, reaper_seconds=settings.reaper_seconds
            )
            upkeep = asyncio.create_task(Maintenance(store, app.schedules, options_m).run())
        worker = Worker(app, store, options)
        watch_worker(worker)
        try:
            started.set()
            await worker.run(stop)
            # a signal during the recycle drain means stop, not start over
            return None if stop.is_set() else worker.recycle_reason
        finally:
            unwatch_worker(worker)
            if upkeep is not None:
                upkeep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await upkeep


def reexec_self() -> None:
    """Replace this process with a fresh run of the same ``conveyor`` command."""
    argv = [sys.executable, "-m", "conveyor.cli", *sys.argv[1:]]
    os.execv(sys.executable, argv)


def tune_garbage_collector() -> None:
    """Keep full collections from stalling the event loop.

    With 10,000 agents in flight a full (generation 2) collection walks every live object
    and was measured at 20-45 ms, the largest source of loop lag. Freezing what exists at
    start (modules, the app) takes it out of every later collection, and a larger
    generation-0 threshold makes collections rarer (Instagram's server recipe).
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(50_000, gen1, gen2)
