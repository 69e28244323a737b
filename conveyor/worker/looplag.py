"""Event-loop lag: measured all the time, and a blocked loop named while it is blocked.

A coroutine sleeps ``interval`` and records how late it wakes (the lag every other coroutine
suffers too). A watchdog thread notices when that coroutine has not run for ``warn_after``
seconds, looks at the loop thread's current stack, and logs which task is blocking it and
where, so the offending agent can be fixed (or moved to a thread or a child process).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger("conveyor.looplag")

Describe = Callable[[FrameType], dict[str, Any] | None]


class LoopLagMonitor:
    """Samples loop lag and warns, naming the culprit, when the loop is blocked."""

    def __init__(
        self,
        *,
        interval: float = 0.05,
        warn_after: float = 0.25,
        describe: Describe | None = None,
        keep: int = 20_000,
    ) -> None:
        self.interval = interval
        self.warn_after = warn_after
        self.samples: deque[float] = deque(maxlen=keep)
        self.blocked_events = 0
        self._describe = describe
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()

    async def run(self) -> None:
        """Sample until cancelled; starts and stops the watchdog thread."""
        self._loop_thread = threading.get_ident()
        watchdog = threading.Thread(target=self._watch, name="conveyor-looplag", daemon=True)
        watchdog.start()
        try:
            while True:
                # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds
                started = time.perf_counter()
                self._beat = time.monotonic()
                await asyncio.sleep(self.interval)
                self.samples.append(max(0.0, time.perf_counter() - started - self.interval))
        finally:
            self._stop.set()
            with contextlib.suppress(RuntimeError):
                watchdog.join(timeout=1)

    def percentile(self, fraction: float) -> float:
        """The lag (seconds) below which ``fraction`` of the samples fall; 0 with none."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def summary(self) -> dict[str, float]:
        """p50, p99 and max lag in milliseconds, for logs and benchmarks."""
        peak = max(self.samples, default=0.0)
        return {
            "loop_lag_p50_ms": round(self.percentile(0.50) * 1000, 2),
            "loop_lag_p99_ms": round(self.percentile(0.99) * 1000, 2),
            "loop_lag_max_ms": round(peak * 1000, 2),
        }

    def _watch(self) -> None:
        reported_beat = 0.0
        while not self._stop.wait(self.interval):
            silent = time.monotonic() - self._beat
            if silent < self.warn_after or self._beat == reported_beat:
                continue
            reported_beat = self._beat  # one warning per stall
            self.blocked_events += 1
            frame = sys._current_frames().get(self._loop_thread)
            log.warning("event_loop_blocked", blocked_for_s=round(silent, 3), **self._blame(frame))

    def _blame(self, frame: FrameType | None) -> dict[str, Any]:
        if frame is None:
            return {}
        where = traceback.extract_stack(frame, limit=1)
        found: dict[str, Any] = (
            {"where": f"{where[-1].filename}:{where[-1].lineno}"} if where else {}
        )
        walker: FrameType | None = frame
        while walker is not None and self._describe is not None:
            described = self._describe(walker)
            if described:
                found.update(described)
                break
            walker = walker.f_back
        return found
