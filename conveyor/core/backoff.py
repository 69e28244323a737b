"""Retry policy and exponential backoff with full jitter.

Full jitter (delay drawn uniformly from ``[0, min(cap, base * 2**(attempt-1))]``) spreads
retries of many failing tasks over time instead of synchronising them into waves; see the
AWS architecture note "Exponential Backoff And Jitter" for the measurement behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from conveyor.errors import ConfigurationError

# 2**62 overflows nothing in Python, but a float this large is pointless; past this exponent
# every ceiling equals the cap anyway for any sane base.
_MAX_EXPONENT = 62


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing task is retried.

    Attributes:
        max_attempts: total runs allowed, the first included (default 5). 1 means no retry.
        base: backoff ceiling of the first retry, in seconds (default 1.0).
        cap: the largest backoff ceiling, in seconds (default 300.0).
    """

    max_attempts: int = 5
    base: float = 1.0
    cap: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base <= 0:
            raise ConfigurationError(f"retry base must be > 0 seconds, got {self.base}")
        if self.cap < self.base:
            raise ConfigurationError(
                f"retry cap ({self.cap}s) must be >= retry base ({self.base}s)"
            )


def backoff_ceiling(policy: RetryPolicy, attempt: int) -> float:
    """The largest delay after failed attempt number ``attempt`` (1-based)."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    exponent = min(attempt - 1, _MAX_EXPONENT)
    return min(policy.cap, policy.base * (2.0**exponent))


def full_jitter_delay(policy: RetryPolicy, attempt: int, uniform: Callable[[], float]) -> float:
    """A delay in ``[0, backoff_ceiling]``; ``uniform`` returns a float in ``[0, 1)``."""
    return backoff_ceiling(policy, attempt) * uniform()
