"""What to do after a failed LLM attempt: stop, wait and retry the same target, or move on.

Pure: the caller passes the attempt number, the provider's Retry-After, and a uniform random
draw, and gets back a decision with the delay to wait. Nothing here reads a clock or sleeps,
so the whole policy is unit-tested with hypothesis.

- 400, 401, 403, 404, 422 (and other 4xx but 408/409/429) are the request's fault: the same
  request gets the same answer from every provider, so it is neither retried nor failed over.
- 429 waits the provider's Retry-After (slightly spread so many callers do not return in one
  wave), or backs off when there is none; a wait longer than ``max_retry_after`` moves on.
- 5xx (501 aside), 529, 408, 409, transport errors and timeouts back off exponentially with
  full jitter (``conveyor.core.backoff``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum

from conveyor.core.backoff import RetryPolicy, full_jitter_delay
from conveyor.errors import ConfigurationError

PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 422})
RETRYABLE_STATUSES = frozenset({408, 409, 500, 502, 503, 504, 529})
RATE_LIMIT_STATUS = 429
# 501 Not Implemented: the endpoint does not exist there; asking again cannot help.
NOT_IMPLEMENTED = 501
# A 429 retry waits Retry-After plus up to this fraction of it more: never earlier than asked.
RETRY_AFTER_SPREAD = 0.1


class FailureKind(StrEnum):
    """Why an attempt failed, as far as retrying is concerned."""

    PERMANENT = "permanent"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TRANSPORT = "transport"
    TIMEOUT = "timeout"


class Verdict(StrEnum):
    """What the gateway does next."""

    RETRY = "retry"  # wait ``delay``, then try the same target again
    NEXT_TARGET = "next_target"  # give this target up; try the next one in the chain
    FAIL = "fail"  # the request is at fault: stop, no retry and no fallback


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """A verdict, the seconds to wait before the retry (0 otherwise), and why."""

    verdict: Verdict
    delay: float
    reason: str


def _default_backoff() -> RetryPolicy:
    return RetryPolicy(max_attempts=3, base=0.5, cap=8.0)


@dataclass(frozen=True, slots=True)
class CallRetryPolicy:
    """How one target of a chain is retried.

    Attributes:
        backoff: attempts per target (the first included) and the full-jitter backoff
            (default 3 attempts, 0.5 s base, 8 s cap).
        max_retry_after: the longest Retry-After worth waiting for in-process, in seconds
            (default 60); a longer one moves on to the next target instead.
    """

    backoff: RetryPolicy = field(default_factory=_default_backoff)
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if not (self.max_retry_after >= 0 and math.isfinite(self.max_retry_after)):
            raise ConfigurationError(
                f"max_retry_after must be a finite number of seconds >= 0, "
                f"got {self.max_retry_after}"
            )


def classify_status(status: int) -> FailureKind:
    """The kind of failure an HTTP error status is; ValueError for a success status."""
    if status < 300:
        raise ValueError(f"HTTP {status} is not a failure")
    if status == RATE_LIMIT_STATUS:
        return FailureKind.RATE_LIMITED
    if status in RETRYABLE_STATUSES or (status >= 500 and status != NOT_IMPLEMENTED):
        return FailureKind.SERVER_ERROR
    # The rest of 4xx, 501, and redirects (a wrong base URL): the same request fails again.
    return FailureKind.PERMANENT


def parse_retry_after(
    retry_after: str | None, retry_after_ms: str | None, now: float
) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``.

    ``now`` is the current Unix time, needed to turn a date into a wait. The millisecond
    header (OpenAI's) wins when valid since whole seconds are rounded up. None when neither
    header holds a usable value; a date or number in the past gives 0.
    """
    if retry_after_ms is not None:
        millis = _number(retry_after_ms)
        if millis is not None:
            return max(millis, 0.0) / 1000
    if retry_after is None:
        return None
    seconds = _number(retry_after)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(retry_after.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; a date without a zone is read so too
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def decide(
    kind: FailureKind,
    attempt: int,
    policy: CallRetryPolicy,
    uniform: float,
    retry_after: float | None = None,
) -> RetryDecision:
    """Decide after failed attempt number ``attempt`` (1-based) at one target.

    ``uniform`` is a draw from ``[0, 1)``; ``retry_after`` the provider's requested wait in
    seconds, if it sent one.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if not 0.0 <= uniform < 1.0:
        raise ValueError(f"uniform must be in [0, 1), got {uniform}")
    if kind is FailureKind.PERMANENT:
        return RetryDecision(Verdict.FAIL, 0.0, "the request is at fault; not retried")
    attempts = policy.backoff.max_attempts
    if attempt >= attempts:
        return RetryDecision(Verdict.NEXT_TARGET, 0.0, f"attempts exhausted ({attempt}/{attempts})")
    if kind is FailureKind.RATE_LIMITED and retry_after is not None:
        wait = max(retry_after, 0.0)
        if wait > policy.max_retry_after:
            return RetryDecision(
                Verdict.NEXT_TARGET,
                0.0,
                f"Retry-After {wait:g}s is longer than max_retry_after "
                f"({policy.max_retry_after:g}s)",
            )
        delay = wait * (1.0 + RETRY_AFTER_SPREAD * uniform)
        return RetryDecision(Verdict.RETRY, delay, f"rate limited; waiting Retry-After {wait:g}s")
    delay = full_jitter_delay(policy.backoff, attempt, lambda: uniform)
    return RetryDecision(Verdict.RETRY, delay, f"{kind.value}; backing off {delay:.3f}s")
