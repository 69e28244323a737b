"""Deciding each request's fate: the server's own rate limit first, then the injected fault."""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable

from conveyor.mock_llm.config import Fault, MockConfig, parse_fault

WINDOW_SECONDS = 60.0


class RequestRateLimiter:
    """At most ``per_minute`` admitted requests in any sliding window of ``window`` seconds
    (60 by default: a per-minute limit; tests shorten it to stay fast).

    A sliding log rather than a fixed window: a fixed window lets a client send twice the
    limit across a window boundary, and real providers do not allow that either. Rejected
    requests do not use up the window, so a client that honours Retry-After gets in.
    """

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self.per_minute = per_minute
        self.window = window
        self._clock = clock
        self._admitted: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._admitted and self._admitted[0] <= now - self.window:
            self._admitted.popleft()

    def admit(self) -> float | None:
        """None when the request may go ahead, else the seconds until a slot frees up."""
        now = self._clock()
        self._expire(now)
        if len(self._admitted) < self.per_minute:
            self._admitted.append(now)
            return None
        return max(self._admitted[0] + self.window - now, 0.001)

    def remaining(self) -> int:
        """Requests that would be admitted right now."""
        self._expire(self._clock())
        return self.per_minute - len(self._admitted)

    def reset_seconds(self) -> float:
        """Seconds until the oldest admitted request leaves the window (0 when empty)."""
        now = self._clock()
        self._expire(now)
        return self._admitted[0] + self.window - now if self._admitted else 0.0


class FaultPicker:
    """Picks each request's fault: a header override, else the script in order, else the rates.

    The draw uses one seeded RNG and one uniform number per request, so a run with the same
    seed and the same request order injects the same faults.
    """

    def __init__(self, config: MockConfig) -> None:
        self._script: deque[Fault] = deque(config.script)
        self._rates = list(config.fault_rates.items())
        self._rng = random.Random(config.seed)

    @property
    def script_remaining(self) -> tuple[Fault, ...]:
        """The scripted outcomes not yet consumed, in order."""
        return tuple(self._script)

    def reconfigure(self, config: MockConfig, changed: set[str]) -> None:
        """Take up a new config; the script restarts only when it was itself changed."""
        if "script" in changed:
            self._script = deque(config.script)
        if changed & {"fault_rates", "seed"}:
            self._rates = list(config.fault_rates.items())
            self._rng = random.Random(config.seed)

    def pick(self, override: str | None = None) -> Fault:
        """This request's fault; an ``x-mock-fault`` override leaves the script untouched.

        Raises ValueError for an override that names no fault.
        """
        if override is not None:
            return parse_fault(override)
        if self._script:
            return self._script.popleft()
        if not self._rates:
            return Fault.OK
        draw = self._rng.random()
        for fault, rate in self._rates:
            if draw < rate:
                return fault
            draw -= rate
        return Fault.OK


def retry_after_header(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds (rounded up, as HTTP requires) plus OpenAI's exact ms."""
    return {
        "Retry-After": str(math.ceil(seconds)),
        "retry-after-ms": str(math.ceil(seconds * 1000)),
    }
