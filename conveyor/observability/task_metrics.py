"""Task duration and queue wait per queue: a ``TaskHook`` the worker's composition root adds.

Both are observed when a run ends (whatever its outcome), labelled by queue only:

- ``conveyor_task_duration_seconds``: the run, from the handler's start to its end, as the
  hook sees it (inside the task's timeout, around the App's own hooks);
- ``conveyor_task_queue_wait_seconds``: submission to the start of the first attempt (the
  same measure as the history reports' wait: a task submitted with a delay counts it). A
  retry is not observed again: its wait would hold the earlier runs and the backoff.

The wait compares the database's ``created_at`` with this machine's clock; clocks kept by
NTP differ by milliseconds. Samples carry the trace id as an exemplar when a span is active.
The worker never imports this module.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram

from conveyor.app import CallNext, TaskHook
from conveyor.observability.metrics import REGISTRY
from conveyor.observability.trace_ids import trace_exemplar

if TYPE_CHECKING:
    from conveyor.worker.context import TaskContext

__all__ = ["TaskMetrics"]

# From a no-op task (a millisecond) to an agent's long run (an hour).
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)
# From a hot queue's milliseconds to a backlog of hours.
WAIT_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
    14400,
)

task_duration = Histogram(
    "conveyor_task_duration_seconds",
    "Run time of tasks by queue, observed when a run ends (whatever its outcome).",
    ["queue"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
queue_wait = Histogram(
    "conveyor_task_queue_wait_seconds",
    "Time from a task's submission to the start of its first attempt, by queue.",
    ["queue"],
    buckets=WAIT_BUCKETS,
    registry=REGISTRY,
)


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
            task_duration.labels(task.queue).observe(time.perf_counter() - started, exemplar)
            if task.attempt <= 1 and task.created_at is not None:
                wait = max(started_wall - task.created_at, 0.0)
                queue_wait.labels(task.queue).observe(wait, exemplar)
