"""When the client tries a request again, and how long it waits first.

A 503, or a 429 that carries ``Retry-After`` (backpressure, a rate limit), is retried
after the server's ``Retry-After``, capped, with up to 20 % added at random so a crowd of
clients refused together does not come back together. A connection that fails (refused,
reset, timed out) is retried with exponential backoff and full jitter, but only for a
request that is safe to repeat: every request the client sends is (reads, cancels, and
submits, which always carry an ``Idempotency-Key``). A 429 without ``Retry-After`` (a
monthly quota) is not retried: waiting seconds cannot help it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from conveyor.core.llm_errors import parse_retry_after
from conveyor.errors import ConfigurationError

JITTER = 0.2
"""Up to this fraction of a server's Retry-After is added at random."""


@dataclass(frozen=True, slots=True)
class ClientRetries:
    """How many times, and how long at most, the client waits and tries again.

    Attributes:
        attempts: sends allowed per call, the first included (default 6; 1: never retry).
        backoff: the first wait after a failed connection, in seconds (default 0.25); it
            doubles per attempt, drawn at random below that ceiling (full jitter): the
            defaults ride out up to ~8 s of an API restarting.
        max_wait: the longest single wait, in seconds, whatever Retry-After says
            (default 30.0); a longer Retry-After is waited for this long.
        default_wait: the wait after a 503 without Retry-After (default 1.0).
    """

    attempts: int = 6
    backoff: float = 0.25
    max_wait: float = 30.0
    default_wait: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(f"ClientRetries.attempts must be >= 1, got {self.attempts}")
        for name in ("backoff", "max_wait", "default_wait"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigurationError(f"ClientRetries.{name} must be >= 0, got {value}")

    def after_status(
        self, status: int, headers: Mapping[str, str], random: Callable[[], float]
    ) -> float | None:
        """Seconds to wait before sending again after ``status``; None: do not retry."""
        if status not in (429, 503):
            return None
        server = parse_retry_after(headers.get("retry-after"), None, time.time())
        if server is None:
            if status == 429:
                return None  # a quota, not a moment's congestion
            server = self.default_wait
        return min(server * (1 + JITTER * random()), self.max_wait)

    def after_connection_error(self, attempt: int, random: Callable[[], float]) -> float:
        """Seconds to wait after attempt number ``attempt`` (1-based) could not connect."""
        ceiling = min(self.backoff * 2.0 ** min(attempt - 1, 60), self.max_wait)
        return ceiling * random()
