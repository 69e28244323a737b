"""Retry policy and exponential backoff with full jitter.

Full jitter (delay drawn uniformly from ``[0, min(cap, base * 2**(attempt-1))]``) spreads
retries of many failing tasks over time instead of synchronising them into waves; see the
AWS architecture note "Exponential Backoff And Jitter" for the measurement behind it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from conveyor.errors import ConfigurationError

# Scaling the smallest positive float by 2**2100 overflows, so past this exponent every
# ceiling is the cap whatever the base; clamping keeps huge attempt numbers cheap.
_MAX_EXPONENT = 2100


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
        # `not x > 0` also catches NaN, which every comparison would otherwise let through.
        if not (self.base > 0 and math.isfinite(self.base)):
            raise ConfigurationError(
                f"retry base must be a finite number > 0 seconds, got {self.base}"
            )
        if not math.isfinite(self.cap):
            raise ConfigurationError(
                f"retry cap must be a finite number of seconds, got {self.cap}"
            )
        if self.cap < self.base:
            raise ConfigurationError(
                f"retry cap ({self.cap}s) must be >= retry base ({self.base}s)"
            )


def backoff_ceiling(policy: RetryPolicy, attempt: int) -> float:
    """The largest delay after failed attempt number ``attempt`` (1-based)."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    exponent = min(attempt - 1, _MAX_EXPONENT)
    try:
        # ldexp scales by a power of two exactly; it raises where the product would overflow.
        return min(policy.cap, math.ldexp(policy.base, exponent))
    except OverflowError:
        return policy.cap


def full_jitter_delay(policy: RetryPolicy, attempt: int, uniform: Callable[[], float]) -> float:
    """A delay in ``[0, backoff_ceiling]``; ``uniform`` returns a float in ``[0, 1)``."""
    return backoff_ceiling(policy, attempt) * uniform()


@dataclass(slots=True)
class FailureBackoff:
    """Delays for a loop whose operation keeps failing (a lost database, say).

    The ceiling doubles from ``base`` to ``cap`` with each failure in a row; the delay is
    drawn from the upper half of it ("equal jitter"), so a loop never spins at ~0 s while
    many processes that failed together still spread out. ``succeeded`` starts over.
    """

    base: float = 0.1
    cap: float = 5.0
    failures: int = 0

    def failed(self, uniform: Callable[[], float]) -> float:
        """Count a failure; the delay before the next try (``uniform`` in ``[0, 1)``)."""
        self.failures += 1
        ceiling = backoff_ceiling(RetryPolicy(base=self.base, cap=self.cap), self.failures)
        return ceiling / 2 + ceiling / 2 * uniform()

    def succeeded(self) -> None:
        """The operation worked: the next failure waits ``base`` again."""
        self.failures = 0
