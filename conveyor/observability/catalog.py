"""Every metric Conveyor can export, by name: what dashboards, alerts and docs are held to.

``metric_families`` imports every module that defines metrics and lists each family's name
and type (a collector's families through its ``describe``, so a worker's appear without a
worker). ``series_names`` adds the sample suffixes a query uses (``_total``, ``_bucket``,
...). ``tests/unit/test_dashboards.py`` checks that the Grafana dashboard and the alert
rules query only these, and that ``docs/metrics.md`` lists exactly these families.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

__all__ = ["metric_families", "series_names"]

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "gauge": ("",),
}


def metric_families() -> dict[str, str]:
    """``{family name: type}`` of every Conveyor metric (counters without ``_total``)."""
    from conveyor.observability import (
        gateway_metrics,
        http_metrics,
        metrics,
        pool_metrics,
        queue_metrics,
        task_metrics,
        worker_metrics,
    )

    found: dict[str, str] = {}
    described: Iterable[Metric] = [
        *metrics.REGISTRY.collect(),  # the plain metrics: their families even without samples
        *queue_metrics.COLLECTOR.describe(),
        *worker_metrics.WorkerCollector().describe(),
    ]
    for family in described:
        if family.name.startswith("conveyor_"):
            found[family.name] = family.type
    del gateway_metrics, http_metrics, pool_metrics, task_metrics  # imported for their metrics
    return found


def series_names() -> set[str]:
    """Every sample name a query may use: ``conveyor_tasks_total``, ``..._bucket``, ..."""
    return {
        name + suffix
        for name, kind in metric_families().items()
        for suffix in _SUFFIXES.get(kind, ("",))
    }
