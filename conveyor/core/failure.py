"""What happens to a task whose run failed: retry after a delay, or the dead-letter queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from conveyor.core.backoff import RetryPolicy, full_jitter_delay


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Run the task again in ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Move the task to the dead-letter queue; ``reason`` says why."""

    reason: str


FailureDecision = RetryLater | GiveUp


def decide_after_failure(
    *,
    attempts: int,
    max_attempts: int,
    permanent: bool,
    policy: RetryPolicy,
    uniform: Callable[[], float],
    requested_delay: float | None = None,
) -> FailureDecision:
    """Decide a failed run's fate.

    ``attempts`` counts runs so far, this one included. A permanent error or an exhausted
    attempt budget gives up; otherwise the task is retried after ``requested_delay`` (a
    handler's ``Retry(after=...)``) or a full-jitter backoff delay.
    """
    if permanent:
        return GiveUp("permanent error")
    if attempts >= max_attempts:
        return GiveUp(f"attempts exhausted ({attempts}/{max_attempts})")
    if requested_delay is not None:
        return RetryLater(max(0.0, requested_delay))
    return RetryLater(full_jitter_delay(policy, attempts, uniform))
