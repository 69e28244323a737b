"""The database pool's size and waits, for Prometheus.

``watch_pool(store)`` sets the store's acquire observer (``PoolEngine.acquire_observer``):
every operation's wait for a pooled connection lands in a histogram, so the store imports no
metrics library. ``sample_pool(store)`` sets the size gauges; the load sampler
(``queue_metrics.py``) calls it each period.

All are plain prometheus_client metrics, so in an API with several server processes
(multiprocess mode, ``docs/metrics.md``) they add up over the processes (``livesum``).
"""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

from conveyor.observability.metrics import REGISTRY
from conveyor.store.engine import PoolEngine

__all__ = ["sample_pool", "unwatch_pool", "watch_pool"]

# An idle pool lends a connection in microseconds; a starved one makes callers wait seconds.
ACQUIRE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

acquire_seconds = Histogram(
    "conveyor_db_pool_acquire_seconds",
    "Time an operation waited for a connection of the pool (count: acquires).",
    buckets=ACQUIRE_BUCKETS,
    registry=REGISTRY,
)
open_connections = Gauge(
    "conveyor_db_pool_open_connections",
    "Connections the pool holds open.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
idle_connections = Gauge(
    "conveyor_db_pool_idle_connections",
    "Open connections of the pool that no operation holds.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
max_connections = Gauge(
    "conveyor_db_pool_max_connections",
    "Most connections the pool opens (CONVEYOR_POOL_MAX_SIZE, at least 4 in a worker).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)


def watch_pool(store: PoolEngine) -> None:
    """Observe every acquire of ``store``'s pool from now on; set the size gauges now."""
    store.acquire_observer = acquire_seconds.observe
    sample_pool(store)


def unwatch_pool(store: PoolEngine) -> None:
    """Stop observing ``store``'s acquires."""
    store.acquire_observer = None


def sample_pool(store: PoolEngine) -> None:
    """Set the size gauges from ``store``'s pool now."""
    stats = store.pool_stats()
    open_connections.set(stats.size)
    idle_connections.set(stats.idle)
    max_connections.set(stats.max_size)
