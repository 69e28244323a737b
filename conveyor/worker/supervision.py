"""Keeping the worker's own loops honest: none dies silently.

A background loop (the outcome flusher, the heartbeat) that raises something it does not
handle must not vanish while the rest of the worker carries on claiming: ``supervised``
logs the death at error level and tells the worker, which stops and exits non-zero.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger("conveyor.worker")


def supervised(
    loop: Coroutine[Any, Any, None],
    name: str,
    on_death: Callable[[str, BaseException], None],
) -> asyncio.Task[None]:
    """Run ``loop`` as a task; if it ever ends with an exception, log it and call
    ``on_death(name, exc)``. Cancellation is the normal way to end it and is not reported."""

    def check(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            exc = RuntimeError(f"the {name} loop returned, which it never should")
        log.error("worker_loop_died", loop=name, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        on_death(name, exc)

    task = asyncio.create_task(loop, name=f"conveyor-{name}")
    task.add_done_callback(check)
    return task
