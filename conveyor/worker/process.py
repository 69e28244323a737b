"""A worker process's life: run until SIGTERM/SIGINT, drain, and recycle when asked.

The composition root (``conveyor/cli/worker_root.py``) builds what the process needs and
calls ``run_process`` with its start-up; this module owns what every worker process does
whatever it was given: the signals, the start-up race and the drain.

When the worker asks to be recycled (``--max-tasks-per-process``, ``--max-memory``) it
drains like a SIGTERM, and the process then replaces itself with a fresh interpreter
running the same command (same pid, so supervisors and orchestrators see no restart).

The first signal stops claiming and lets in-flight tasks finish within the grace period
(the rest are released, no attempt counted); a second signal exits at once, and the
leases of whatever was running expire and are redelivered. The command installs the
handlers first thing (``ShutdownSignals``), so a signal during start-up is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from conveyor.worker.maintenance import Maintenance
from conveyor.worker.runtime import Worker
from conveyor.worker.signals import ShutdownSignals

log = structlog.get_logger("conveyor.worker")

Start = Callable[[asyncio.Event, asyncio.Event], Coroutine[Any, Any, str | None]]
"""``start(stop, started)``: open what the process needs, set ``started`` once the worker
runs, serve until ``stop`` is set; the recycle reason if the worker asked for one."""


async def run_process(start: Start, signals: ShutdownSignals | None = None) -> str | None:
    """Run ``start`` until a signal stops it; the recycle reason if it asked for one.

    ``signals`` installed by the caller at process start carry over a signal that came
    before this point; a stop asked for while the process is still starting (waiting for
    the database, migrating) ends the start-up at once.
    """
    stop = asyncio.Event()
    (signals or ShutdownSignals()).attach(asyncio.get_running_loop(), stop.set)
    started = asyncio.Event()
    main: asyncio.Task[str | None] = asyncio.create_task(start(stop, started))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not main.done() and not started.is_set():
        main.cancel()  # stopped before it ever ran: nothing to drain
        with contextlib.suppress(asyncio.CancelledError):
            await main
        return None
    return await main


async def run_worker(
    worker: Worker,
    stop: asyncio.Event,
    started: asyncio.Event,
    maintenance: Maintenance | None = None,
) -> str | None:
    """Serve with ``worker`` (and ``maintenance`` alongside) until ``stop``; the recycle
    reason if the worker asked for one."""
    upkeep = None if maintenance is None else asyncio.create_task(maintenance.run())
    try:
        started.set()
        await worker.run(stop)
        # a signal during the recycle drain means stop, not start over
        return None if stop.is_set() else worker.recycle_reason
    finally:
        if upkeep is not None:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep


def reexec_self() -> None:
    """Replace this process with a fresh run of the same ``conveyor`` command."""
    argv = [sys.executable, "-m", "conveyor.cli", *sys.argv[1:]]
    os.execv(sys.executable, argv)
