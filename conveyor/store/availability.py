"""Riding out a database that is away for a moment (a restart, a failover, a reset path).

``retry_while_unavailable`` repeats an operation that failed with a retryable
DatabaseUnavailable, with backoff, until it succeeds or a deadline passes. Only operations
that are safe to repeat go through it: reads, idempotent writes, a whole transaction.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from conveyor.core.backoff import FailureBackoff
from conveyor.errors import DatabaseUnavailable

T = TypeVar("T")

_log = structlog.get_logger("conveyor.store")


async def retry_while_unavailable(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    seconds: float,
    backoff: FailureBackoff | None = None,
    log: Any = None,
    log_each: bool = True,
) -> T:
    """``await operation()``, retried for up to ``seconds`` while the database is out of
    reach. Other errors, a DatabaseUnavailable that waiting cannot fix (a wrong password),
    and the failure at the deadline propagate. Logs ``database_unavailable`` on ``log``
    for each retry, or only the first with ``log_each=False``."""
    deadline = time.monotonic() + seconds
    backoff = backoff or FailureBackoff(base=0.1, cap=2.0)
    logger = log if log is not None else _log
    while True:
        try:
            return await operation()
        except DatabaseUnavailable as exc:
            left = deadline - time.monotonic()
            if not exc.retryable or left <= 0:
                raise
            delay = min(backoff.failed(random.random), left)
            if log_each or backoff.failures == 1:
                logger.warning(
                    "database_unavailable",
                    during=what,
                    error=str(exc),
                    retry_in=round(delay, 2),
                    gives_up_in=round(left, 1),
                )
            await asyncio.sleep(delay)
