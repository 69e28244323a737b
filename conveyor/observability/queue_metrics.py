"""Queue depth and age, per queue and for the busiest tenants, read from the database.

One ``LoadSampler`` per process reads every queue's load in one statement each period
(``store.queue_metrics``, ``store/queue_metrics.py``) and keeps the snapshot; the collector
exports the snapshot at scrape time. So a scrape never queries the database, several
Prometheus servers scraping cost nothing more, and a database that is away leaves the last
snapshot in place (``conveyor_queue_metrics_read_timestamp_seconds`` says how old it is).
The sampler also sets the pool's size gauges (``pool_metrics.py``).

Tenants are bounded: the ``top_tenants`` with the most tasks waiting are named, the others
summed as ``tenant="other"``. Every process that samples exports the same values (they read
the same tables): aggregate with ``max by (queue)``, not ``sum``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from conveyor.errors import ConveyorError
from conveyor.observability.metrics import REGISTRY
from conveyor.observability.pool_metrics import sample_pool, unwatch_pool, watch_pool
from conveyor.store.postgres import PostgresStore
from conveyor.store.queue_metrics import QueueMetrics

__all__ = ["OTHER_TENANTS", "LoadSampler", "QueueCollector"]

log = structlog.get_logger("conveyor.metrics")

OTHER_TENANTS = "other"
"""The ``tenant`` label of every tenant outside the busiest ones."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The queues as last read, and when (Unix time)."""

    queues: Sequence[QueueMetrics]
    read_at: float


class QueueCollector:
    """Exports the last snapshot; nothing until the first read."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def describe(self) -> Iterable[Metric]:
        """The families this collector exports (without samples)."""
        return _families(Snapshot((), 0.0))

    def collect(self) -> Iterable[Metric]:
        """The snapshot's metrics (one reference read: the sampler swaps it whole)."""
        snapshot = self.snapshot
        return [] if snapshot is None else _families(snapshot)


def _families(snapshot: Snapshot) -> list[Metric]:
    by_queue = ["queue"]
    by_tenant = ["queue", "tenant"]
    depth = GaugeMetricFamily(
        "conveyor_queue_depth", "Tasks ready and waiting to be claimed, by queue.", labels=by_queue
    )
    scheduled = GaugeMetricFamily(
        "conveyor_queue_scheduled_tasks",
        "Tasks waiting for their run_at (delayed, or backing off before a retry), by queue.",
        labels=by_queue,
    )
    running = GaugeMetricFamily(
        "conveyor_queue_running_tasks", "Tasks leased to a worker now, by queue.", labels=by_queue
    )
    oldest = GaugeMetricFamily(
        "conveyor_queue_oldest_age_seconds",
        "Age of the oldest ready task (since its run_at), by queue; 0 when none waits.",
        labels=by_queue,
    )
    dead = GaugeMetricFamily(
        "conveyor_queue_dead_tasks",
        "Tasks in the dead-letter queue (until replayed or dropped by retention), by queue.",
        labels=by_queue,
    )
    tenant_depth = GaugeMetricFamily(
        "conveyor_tenant_queue_depth",
        "Tasks ready and waiting, by queue and tenant (the busiest tenants; 'other': the rest).",
        labels=by_tenant,
    )
    tenant_running = GaugeMetricFamily(
        "conveyor_tenant_queue_running_tasks",
        "Tasks running now, by queue and tenant (the busiest tenants; 'other': the rest).",
        labels=by_tenant,
    )
    tenant_oldest = GaugeMetricFamily(
        "conveyor_tenant_queue_oldest_age_seconds",
        "Age of the oldest ready task, by queue and tenant (the busiest; 'other': the rest).",
        labels=by_tenant,
    )
    read_at = GaugeMetricFamily(
        "conveyor_queue_metrics_read_timestamp_seconds",
        "When the queue metrics were last read from the database (Unix time).",
    )
    for q in snapshot.queues:
        depth.add_metric([q.queue], q.queued)
        scheduled.add_metric([q.queue], q.scheduled)
        running.add_metric([q.queue], q.running)
        oldest.add_metric([q.queue], q.oldest_queued_seconds or 0.0)
        dead.add_metric([q.queue], q.dead)
        for t in q.tenants:
            labels = [q.queue, OTHER_TENANTS if t.tenant_id is None else t.tenant_id]
            tenant_depth.add_metric(labels, t.queued)
            tenant_running.add_metric(labels, t.running)
            tenant_oldest.add_metric(labels, t.oldest_queued_seconds or 0.0)
    if snapshot.read_at:
        read_at.add_metric([], snapshot.read_at)
    return [
        depth,
        scheduled,
        running,
        oldest,
        dead,
        tenant_depth,
        tenant_running,
        tenant_oldest,
        read_at,
    ]


COLLECTOR = QueueCollector()
"""The process's one queue collector, on ``REGISTRY`` (and on a multiprocess scrape's)."""
REGISTRY.register(COLLECTOR)


class LoadSampler:
    """Reads the queues' load (when ``queues``) and the pool's size every ``period`` s."""

    def __init__(
        self,
        store: PostgresStore,
        *,
        period: float = 10.0,
        top_tenants: int = 10,
        queues: bool = True,
        collector: QueueCollector = COLLECTOR,
    ) -> None:
        self.store = store
        self.period = period
        self.top_tenants = top_tenants
        self.queues = queues
        self.collector = collector

    async def sample(self) -> None:
        """One read: the pool's gauges, then the queues' load (a failed read is logged and
        leaves the last snapshot)."""
        sample_pool(self.store)
        if not self.queues:
            return
        try:
            found = await self.store.queue_metrics(self.top_tenants)
        except ConveyorError as exc:
            log.warning("queue_metrics_failed", error=str(exc))
            return
        self.collector.snapshot = Snapshot(tuple(found), time.time())

    async def run(self) -> None:
        """Sample every period until cancelled."""
        while True:
            await self.sample()
            await asyncio.sleep(self.period)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LoadSampler]:
        """Watch the pool and sample in the background while the block runs."""
        watch_pool(self.store)
        task = asyncio.create_task(self.run(), name="conveyor-load-sampler")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            unwatch_pool(self.store)
            self.collector.snapshot = None
