"""Background upkeep every worker runs: promote, reap, expire waits, periodic ticks,
partitions, and pruning (workers, the LLM cache, live LLM output).

Each job is safe to run in every worker at once: promotion and reaping skip rows another
process holds (and the reaper also takes an advisory lock), a periodic tick is taken by the
one transaction that advances it, and partition creation is idempotent.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from conveyor.core.backoff import FailureBackoff
from conveyor.errors import ConveyorError
from conveyor.store.availability import retry_while_unavailable
from conveyor.store.params import PeriodicTask
from conveyor.store.ports import Maintenance as MaintenanceStore

log = structlog.get_logger("conveyor.maintenance")


@dataclass(frozen=True, slots=True)
class MaintenanceOptions:
    """Periods of the upkeep jobs, in seconds."""

    promote_seconds: float = 0.5
    reaper_seconds: float = 2.0
    expire_waits_seconds: float = 1.0
    periodic_seconds: float = 1.0
    partition_seconds: float = 3600.0
    prune_workers_seconds: float = 60.0
    group_sweep_seconds: float = 10.0
    prune_llm_cache_seconds: float = 300.0
    forget_workers_after: float = 86400.0
    prune_chunks_seconds: float = 30.0
    stream_retention_seconds: float = 300.0


class Maintenance:
    """Runs the upkeep jobs until cancelled."""

    def __init__(
        self,
        store: MaintenanceStore,
        schedules: list[PeriodicTask] | None = None,
        options: MaintenanceOptions | None = None,
    ) -> None:
        self.store = store
        self.schedules = schedules or []
        self.options = options or MaintenanceOptions()

    async def run(self) -> None:
        """Run every job on its period; an error is logged and the job goes on."""
        opts = self.options
        if self.schedules:
            await self._register_schedules()
        jobs: list[tuple[str, float, Callable[[], Awaitable[object]]]] = [
            ("promote", opts.promote_seconds, self.store.promote_due),
            ("reap", opts.reaper_seconds, self._reap),
            ("expire_waits", opts.expire_waits_seconds, self._expire_waits),
            ("partitions", opts.partition_seconds, self.store.ensure_partitions),
            ("prune_workers", opts.prune_workers_seconds, self._prune_workers),
            ("groups", opts.group_sweep_seconds, self.store.sweep_open_groups),
            ("prune_llm_cache", opts.prune_llm_cache_seconds, self.store.prune_llm_cache),
            ("prune_chunks", opts.prune_chunks_seconds, self._prune_chunks),
        ]
        if self.schedules:
            jobs.append(("periodic", opts.periodic_seconds, self._periodic))
        async with asyncio.TaskGroup() as group:
            for name, period, job in jobs:
                group.create_task(_every(name, period, job), name=f"conveyor-{name}")

    async def _register_schedules(self) -> None:
        """Register the app's periodic tasks, waiting out a database that is away."""
        await retry_while_unavailable(
            lambda: self.store.register_periodic(self.schedules),
            what="register_periodic",
            seconds=float("inf"),
            backoff=FailureBackoff(base=0.2, cap=5.0),
        )

    async def _reap(self) -> None:
        result = await self.store.reap_expired()
        if result and (result.requeued or result.dead or result.cancelled):
            log.info(
                "reaped_expired_leases",
                requeued=len(result.requeued),
                dead=len(result.dead),
                cancelled=len(result.cancelled),
            )

    async def _expire_waits(self) -> None:
        # ended waits become due at once; the promoter queues them on its next pass
        expired = await self.store.expire_waits()
        if expired:
            log.info("waits_timed_out", task_ids=expired)

    async def _periodic(self) -> None:
        created = await self.store.enqueue_due_periodic(now=datetime.now(UTC))
        if created:
            log.info("periodic_enqueued", task_ids=created)

    async def _prune_chunks(self) -> None:
        cutoff = datetime.now(UTC) - timedelta(seconds=self.options.stream_retention_seconds)
        await self.store.prune_chunks(cutoff)

    async def _prune_workers(self) -> None:
        await self.store.prune_workers(self.options.forget_workers_after)


async def _every(name: str, period: float, job: Callable[[], Awaitable[object]]) -> None:
    # Start at a random phase so N workers do not hit the database in lockstep.
    await asyncio.sleep(random.random() * min(period, 1.0))
    while True:
        try:
            await job()
        except ConveyorError as exc:
            log.warning("maintenance_failed", job=name, error=str(exc))
        except Exception:
            # A bug in one job must not silently end promotion and reaping for good.
            log.exception("maintenance_crashed", job=name)
        await asyncio.sleep(period * (0.9 + 0.2 * random.random()))
