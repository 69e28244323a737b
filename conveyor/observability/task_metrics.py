"""Task duration and queue wait per queue: a ``TaskHook`` the worker's composition root adds.

Both are observed when a run ends (whatever its outcome), labelled by queue only:

- ``conveyor_task_duration_seconds``: the run, from the handler's start to its end, as the
  hook sees it (inside the task's timeout, around the App's own hooks);
- ``conveyor_task_queue_wait_seconds``: submission to the start of the first attempt (the
  same measure as the history reports' wait: a task submitted with a delay counts it). A
  retry is not observed again: its wait would hold the earlier runs and the backoff.

The wait compares the database's ``created_at`` with this machine's clock; clocks kept by
NTP differ by milliseconds. Samples carry the trace id as an exemplar when a span is active.

An observation is a ``bisect`` and two additions on the event loop, no lock: the buckets
are plain counts that a collector turns into histograms at scrape time (prometheus_client's
``Histogram.observe`` takes three locks and walks the buckets in Python: 3 µs a task,
measured). The worker never imports this module.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar

from conveyor.app import CallNext, TaskHook
from conveyor.observability.metrics import REGISTRY
from conveyor.observability.trace_ids import trace_exemplar

if TYPE_CHECKING:
    from conveyor.worker.context import TaskContext

__all__ = ["TaskMetrics"]

# From a no-op task (a millisecond) to an agent's long run (an hour).
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
# From a hot queue's milliseconds to a backlog of hours.
WAIT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400,
)  # fmt: skip


class Buckets:
    """One queue's observations of one histogram: counts per bucket (the last is +Inf),
    their sum, and the latest exemplar of each bucket."""

    __slots__ = ("bounds", "counts", "exemplars", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.exemplars: list[Exemplar | None] = [None] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, exemplar: dict[str, str] | None) -> None:
        """Count ``value`` in the first bucket whose bound is at least ``value``."""
        index = bisect_left(self.bounds, value)
        self.counts[index] += 1
        self.total += value
        if exemplar is not None:
            self.exemplars[index] = Exemplar(exemplar, value, time.time())

    def add_to(self, family: HistogramMetricFamily, queue: str) -> None:
        """Add this queue's cumulative buckets to ``family`` (copies taken first: the loop
        may count meanwhile, and each list copy is atomic under the GIL)."""
        counts, exemplars, total = list(self.counts), list(self.exemplars), self.total
        buckets: list[Any] = []
        running = 0
        for index, bound in enumerate((*self.bounds, float("inf"))):
            running += counts[index]
            # as prometheus_client writes a bound: "1.0", "0.005", "+Inf"
            le = "+Inf" if index == len(self.bounds) else repr(float(bound))
            example = exemplars[index]
            buckets.append([le, running] if example is None else [le, running, example])
        family.add_metric([queue], buckets, total)


class TaskHistograms:
    """The collector of both histograms, per queue."""

    def __init__(self) -> None:
        self.duration: dict[str, Buckets] = {}
        self.wait: dict[str, Buckets] = {}

    def describe(self) -> Iterable[Metric]:
        """The two families (without samples)."""
        return self._families({}, {})

    def collect(self) -> Iterable[Metric]:
        """Both histograms as observed so far."""
        return self._families(dict(self.duration), dict(self.wait))

    @staticmethod
    def _families(duration: dict[str, Buckets], wait: dict[str, Buckets]) -> list[Metric]:
        runs = HistogramMetricFamily(
            "conveyor_task_duration_seconds",
            "Run time of tasks by queue, observed when a run ends (whatever its outcome).",
            labels=["queue"],
        )
        waits = HistogramMetricFamily(
            "conveyor_task_queue_wait_seconds",
            "Time from a task's submission to the start of its first attempt, by queue.",
            labels=["queue"],
        )
        for queue, buckets in sorted(duration.items()):
            buckets.add_to(runs, queue)
        for queue, buckets in sorted(wait.items()):
            buckets.add_to(waits, queue)
        return [runs, waits]


HISTOGRAMS = TaskHistograms()
"""The process's task histograms (every ``TaskMetrics`` counts into them)."""
REGISTRY.register(HISTOGRAMS)


class TaskMetrics(TaskHook):
    """Observes each run's duration and, on a first attempt, its queue wait."""

    async def around_task(self, ctx: TaskContext, call_next: CallNext) -> Any:
        """Run the task; observe when it ends."""
        started_wall, started = time.time(), time.perf_counter()
        try:
            return await call_next()
        finally:
            task = ctx.task
            exemplar = trace_exemplar()
            runs = HISTOGRAMS.duration.get(task.queue)
            if runs is None:
                runs = HISTOGRAMS.duration[task.queue] = Buckets(DURATION_BUCKETS)
            runs.observe(time.perf_counter() - started, exemplar)
            if task.attempt <= 1 and task.created_at is not None:
                waits = HISTOGRAMS.wait.get(task.queue)
                if waits is None:
                    waits = HISTOGRAMS.wait[task.queue] = Buckets(WAIT_BUCKETS)
                waits.observe(max(started_wall - task.created_at, 0.0), exemplar)
