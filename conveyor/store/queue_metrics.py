"""The queues' load as the metrics collector reads it: one statement, bounded tenants.

``read_queue_metrics`` runs ``queue_metrics`` (``queries/metrics.sql``) and folds its rows
into one ``QueueMetrics`` per queue: the totals, the dead-letter count, and the load of the
busiest tenants (``top`` of them, by tasks waiting over all queues), the others summed under
``tenant_id=None``. The cardinality of what the collector exports is thereby bounded by the
number of queues times ``top + 1``, whatever the number of tenants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.store.connection import Conn
from conveyor.store.sql import q


@dataclass(frozen=True, slots=True)
class TenantLoad:
    """One tenant's tasks in one queue (``tenant_id`` None: every tenant outside the top)."""

    tenant_id: str | None
    queued: int
    scheduled: int
    running: int
    oldest_queued_seconds: float | None
    """Age of the tenant's oldest ready task (since its ``run_at``); None: none waits."""


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    """One queue's load now."""

    queue: str
    queued: int = 0
    scheduled: int = 0
    running: int = 0
    oldest_queued_seconds: float | None = None
    dead: int = 0
    """Tasks in the dead-letter queue (dead, kept in the history until replayed or dropped)."""
    tenants: tuple[TenantLoad, ...] = field(default=())
    """The busiest tenants' load in this queue, then the others' (``tenant_id`` None)."""


async def read_queue_metrics(conn: Conn, top: int) -> list[QueueMetrics]:
    """Every queue with tasks (waiting, running or dead), sorted by name."""
    loads: dict[str, list[TenantLoad]] = {}
    dead: dict[str, int] = {}
    for row in await conn.fetch(q("queue_metrics"), max(top, 0)):
        if row["kind"] == "dead":
            dead[row["queue"]] = row["dead"]
            continue
        loads.setdefault(row["queue"], []).append(
            TenantLoad(
                row["tenant_id"],
                row["queued"],
                row["scheduled"],
                row["running"],
                _age(row["oldest_queued_seconds"]),
            )
        )
    return [
        _fold(name, loads.get(name, []), dead.get(name, 0))
        for name in sorted(set(loads) | set(dead))
    ]


def _age(seconds: float | None) -> float | None:
    # run_at set by a clock a little ahead of the database's: not a negative age
    return None if seconds is None else max(seconds, 0.0)


def _fold(queue: str, tenants: list[TenantLoad], dead: int) -> QueueMetrics:
    ages = [t.oldest_queued_seconds for t in tenants if t.oldest_queued_seconds is not None]
    # the named tenants by name, then the others: a stable order for tables and tests
    tenants.sort(key=lambda t: (t.tenant_id is None, t.tenant_id or ""))
    return QueueMetrics(
        queue=queue,
        queued=sum(t.queued for t in tenants),
        scheduled=sum(t.scheduled for t in tenants),
        running=sum(t.running for t in tenants),
        oldest_queued_seconds=max(ages) if ages else None,
        dead=dead,
        tenants=tuple(tenants),
    )
