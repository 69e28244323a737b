"""Prometheus metrics of a worker, read from the live ``Worker`` when scraped.

The worker's claim and finish paths already keep counters (``Worker.stats``), its
in-flight count and its loop-lag samples; a collector reads them at scrape time, so the
metrics cost the hot path nothing. ``watch_worker`` names the worker to read (one per
process: ``conveyor worker`` runs one); until then the collector exports nothing.

The collector runs on the metrics server's thread while the event loop keeps working:
it only takes copies (``dict(...)``, ``len``, ``sorted``) that are atomic under the GIL,
never iterates the worker's live containers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from conveyor.observability.metrics import REGISTRY
from conveyor.types import TaskState

__all__ = ["WorkerView", "unwatch_worker", "watch_worker"]

# The outcomes Worker.stats counts, exported from the start (at 0) so rate() has a series.
OUTCOMES = (
    TaskState.SUCCEEDED.value,
    TaskState.DEAD.value,
    TaskState.CANCELLED.value,
    "retried",
    TaskState.WAITING.value,
    "released",
    "lease_lost",
)
LAG_QUANTILES = (0.5, 0.99, 1.0)


class LoopLagView(Protocol):
    """What the collector reads of a ``LoopLagMonitor``."""

    @property
    def blocked_events(self) -> int:
        """Times the loop was seen blocked past the warning threshold."""
        ...

    @property
    def samples(self) -> Iterable[float]:
        """The recent lag samples, in seconds."""
        ...


class OptionsView(Protocol):
    """What the collector reads of ``WorkerOptions``."""

    @property
    def concurrency(self) -> int:
        """Tasks the worker may hold in flight."""
        ...


class WorkerView(Protocol):
    """What the collector reads of a ``Worker`` (a protocol: no import of the worker)."""

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters: ``claimed`` and one per outcome."""
        ...

    @property
    def outcomes_by_queue(self) -> Mapping[tuple[str, str], int]:
        """Written outcomes per (queue, outcome)."""
        ...

    @property
    def queues(self) -> Sequence[str]:
        """The queues the worker serves."""
        ...

    @property
    def in_flight(self) -> int:
        """Tasks running now."""
        ...

    @property
    def options(self) -> OptionsView:
        """The worker's options."""
        ...

    @property
    def unwritten(self) -> int:
        """Outcomes and releases finished in the worker and not yet written."""
        ...

    @property
    def seconds_since_outcome(self) -> float:
        """Seconds since the worker last wrote an outcome (or started)."""
        ...

    @property
    def writes_failing(self) -> bool:
        """True while outcomes cannot be written (the worker claims nothing meanwhile)."""
        ...

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up."""
        ...

    @property
    def loop_lag(self) -> LoopLagView:
        """The worker's loop-lag monitor."""
        ...


class WorkerCollector:
    """Reads the watched worker's counters at each scrape."""

    def __init__(self) -> None:
        self.worker: WorkerView | None = None

    def describe(self) -> Iterable[Metric]:
        """The metric families this collector exports (without samples)."""
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        """The watched worker's metrics now; nothing while no worker is watched."""
        worker = self.worker
        if worker is None:
            return []
        stats = dict(worker.stats)  # one atomic copy: the loop may add keys meanwhile
        found = _families()
        found.claimed.add_metric([], stats.get("claimed", 0))
        by_queue = dict(worker.outcomes_by_queue)
        for queue in worker.queues:  # every series from the start, at 0, so rate() has one
            for outcome in OUTCOMES:
                by_queue.setdefault((queue, outcome), 0)
        for (queue, outcome), count in sorted(by_queue.items()):
            found.tasks.add_metric([queue, outcome], count)
        in_flight, concurrency = worker.in_flight, worker.options.concurrency
        found.in_flight.add_metric([], in_flight)
        found.concurrency.add_metric([], concurrency)
        found.free_slots.add_metric([], max(concurrency - in_flight, 0))
        found.unwritten.add_metric([], worker.unwritten)
        found.since_outcome.add_metric([], worker.seconds_since_outcome)
        found.writes_failing.add_metric([], 1 if worker.writes_failing else 0)
        found.listening.add_metric([], 1 if worker.listening else 0)
        # Sorted once here, not by LoopLagMonitor.percentile per quantile: a sort of 20,000
        # samples holds the GIL, and so the event loop, for about 3 ms.
        lags = sorted(worker.loop_lag.samples)
        for fraction in LAG_QUANTILES:
            lag = lags[min(len(lags) - 1, int(fraction * len(lags)))] if lags else 0.0
            found.loop_lag.add_metric([f"{fraction:g}"], lag)
        found.loop_blocked.add_metric([], worker.loop_lag.blocked_events)
        return list(found)


class _Families(NamedTuple):
    claimed: CounterMetricFamily
    tasks: CounterMetricFamily
    in_flight: GaugeMetricFamily
    concurrency: GaugeMetricFamily
    free_slots: GaugeMetricFamily
    unwritten: GaugeMetricFamily
    since_outcome: GaugeMetricFamily
    writes_failing: GaugeMetricFamily
    listening: GaugeMetricFamily
    loop_lag: GaugeMetricFamily
    loop_blocked: CounterMetricFamily


def _families() -> _Families:
    return _Families(
        CounterMetricFamily("conveyor_tasks_claimed", "Tasks claimed by this worker."),
        CounterMetricFamily(
            "conveyor_tasks",
            "Task runs of this worker by queue and outcome, counted once the outcome is "
            "committed (succeeded, dead, cancelled, retried, waiting, released, lease_lost).",
            labels=["queue", "outcome"],
        ),
        GaugeMetricFamily("conveyor_tasks_in_flight", "Tasks running in this worker now."),
        GaugeMetricFamily(
            "conveyor_worker_concurrency", "Most tasks this worker runs at once (--concurrency)."
        ),
        GaugeMetricFamily(
            "conveyor_worker_free_slots",
            "Tasks this worker could start now: --concurrency minus those in flight.",
        ),
        GaugeMetricFamily(
            "conveyor_worker_unwritten_outcomes",
            "Runs finished in this worker whose outcome is not written yet.",
        ),
        GaugeMetricFamily(
            "conveyor_worker_last_outcome_age_seconds",
            "Seconds since this worker last wrote an outcome (or started).",
        ),
        GaugeMetricFamily(
            "conveyor_worker_writes_failing",
            "1 while this worker cannot write outcomes (it claims nothing meanwhile).",
        ),
        GaugeMetricFamily(
            "conveyor_worker_listening",
            "1 while this worker's LISTEN connection is up (0: it relies on polling).",
        ),
        GaugeMetricFamily(
            "conveyor_loop_lag_seconds",
            "Event-loop lag of this worker over its last 20,000 samples (about 17 minutes); "
            'quantile="1" is the largest.',
            labels=["quantile"],
        ),
        CounterMetricFamily(
            "conveyor_loop_blocked",
            "Times this worker's event loop was blocked past its warning threshold "
            "(loop_lag_warn_seconds, 0.25 s by default; each one is logged with the task).",
        ),
    )


_collector = WorkerCollector()
REGISTRY.register(_collector)


def watch_worker(worker: WorkerView) -> None:
    """Export ``worker``'s metrics from now on (replacing any worker watched before)."""
    _collector.worker = worker


def unwatch_worker(worker: WorkerView) -> None:
    """Stop exporting ``worker``'s metrics, if it is the one watched."""
    if _collector.worker is worker:
        _collector.worker = None
