"""The worker's outcome recorder: writes finished runs in groups, and keeps them through a
lost database.

While one batch is being written the next one accumulates. A batch that cannot be written
because the database is gone stays here and is written once it is back (with backoff, no
attempt counted). A batch that the database refuses on a live connection is written one
outcome at a time, so one outcome it cannot store (a bug of ours) neither blocks the others
nor loops forever: that one is recorded as dead with the reason, or else dropped with an
error log (its lease then expires and the task runs again).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence

import structlog

from conveyor.core.backoff import FailureBackoff
from conveyor.errors import ConveyorError, DatabaseUnavailable, StoreConflict
from conveyor.store.params import Finish, LeaseRef, RetryLease, SuspendLease
from conveyor.store.ports import WorkerLeases
from conveyor.types import TaskState
from conveyor.worker.outcomes import Outcome

log = structlog.get_logger("conveyor.worker")

_FLUSH_SLICE = 1000


class OutcomeRecorder:
    """Pending outcomes and releases of one worker, and the loop that writes them."""

    def __init__(
        self,
        store: WorkerLeases,
        stats: Counter[str],
        row_writes: asyncio.Lock,
        *,
        on_written: Callable[[], None],
    ) -> None:
        self._store = store
        self._stats = stats
        # shared with the heartbeat: both lock this worker's task rows (see Worker)
        self._row_writes = row_writes
        self._on_written = on_written
        self.pending: list[Outcome] = []
        self.releases: list[LeaseRef] = []
        self.wake = asyncio.Event()
        self.failing_since: float | None = None
        """``time.monotonic()`` of the first failed write in a row; None while writes work."""
        self.last_written_at = time.monotonic()
        """When an outcome was last written (or the worker started)."""
        self._backoff = FailureBackoff(base=0.1, cap=5.0)
        self.by_queue: Counter[tuple[str, str]] = Counter()
        """Written outcomes per (queue, outcome): what ``stats`` counts, split by queue."""
        self._queue_of: dict[int, str] = {}

    @property
    def unwritten(self) -> int:
        """Outcomes and releases waiting to be written."""
        return len(self.pending) + len(self.releases)

    def add(self, outcome: Outcome, queue: str = "") -> None:
        """Queue an outcome of a task of ``queue`` for the next write."""
        self._queue_of[outcome.lease.task_id] = queue
        self.pending.append(outcome)
        self.wake.set()

    def release(self, lease: LeaseRef, queue: str = "") -> None:
        """Queue a lease (of a task of ``queue``) to hand back without counting the attempt."""
        self._queue_of[lease.task_id] = queue
        self.releases.append(lease)
        self.wake.set()

    def leases(self) -> list[LeaseRef]:
        """The leases of everything waiting to be written (the heartbeat extends them)."""
        return [o.lease for o in self.pending] + self.releases

    async def run(self) -> None:
        """Write whenever something is pending; back off while the database is gone."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                await self.flush()
            except ConveyorError as exc:
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                delay = self._backoff.failed(random.random)
                log.warning(
                    "flush_failed", error=str(exc), unwritten=self.unwritten, retry_in=delay
                )
                await asyncio.sleep(delay)
                self.wake.set()

    async def drain(self, within: float) -> bool:
        """Write everything left, retrying up to ``within`` seconds; False if it could not."""
        deadline = time.monotonic() + within
        backoff = FailureBackoff(base=0.1, cap=2.0)
        while self.pending or self.releases:
            try:
                await self.flush()
            except ConveyorError as exc:
                if time.monotonic() >= deadline:
                    log.error(
                        "outcomes_unwritten",
                        error=str(exc),
                        unwritten=self.unwritten,
                        hint="their leases expire and the tasks run again elsewhere",
                    )
                    return False
                await asyncio.sleep(backoff.failed(random.random))
        return True

    async def flush(self) -> None:
        """Write every pending outcome: one finish, one retry, one suspend and one release
        statement."""
        # At most _FLUSH_SLICE outcomes a statement: encoding 10,000 at once would hold the
        # event loop for tens of milliseconds; the rest go in the next flush, at once.
        # Taken under the lock, so that while anything is being written the lock is held:
        # whoever else takes it (the heartbeat, the orphan sweep) sees every lease either in
        # ``pending``/``releases`` or already written.
        async with self._row_writes:
            outcomes, self.pending = self.pending[:_FLUSH_SLICE], self.pending[_FLUSH_SLICE:]
            if self.pending:
                self.wake.set()
            releases, self.releases = self.releases, []
            try:
                refused = await self._write(outcomes, releases)
            except (DatabaseUnavailable, StoreConflict):  # try the same batch again later
                self._put_back(outcomes, releases)
                raise
            except ConveyorError as exc:
                # refused on a live connection: find the outcome the database will not take
                log.error("flush_refused", error=str(exc), outcomes=len(outcomes))
                try:
                    refused = await self._write_one_by_one(outcomes, releases)
                except BaseException:
                    self._put_back(outcomes, releases)
                    raise
            except BaseException:
                self._put_back(outcomes, releases)
                raise
        self.failing_since = None
        self._backoff.succeeded()
        if outcomes or releases:
            self.last_written_at = time.monotonic()
            self._on_written()
        self._count(outcomes, releases, refused)

    def _put_back(self, outcomes: list[Outcome], releases: list[LeaseRef]) -> None:
        self.pending = outcomes + self.pending
        self.releases = releases + self.releases

    async def _write(self, outcomes: Sequence[Outcome], releases: Sequence[LeaseRef]) -> set[int]:
        finishes = [o for o in outcomes if isinstance(o, Finish)]
        retries = [o for o in outcomes if isinstance(o, RetryLease)]
        waits = [o for o in outcomes if isinstance(o, SuspendLease)]
        refused = await self._store.finish(finishes) if finishes else set()
        refused |= await self._store.retry(retries) if retries else set()
        refused |= await self._store.suspend(waits) if waits else set()
        if releases:
            await self._store.release(releases)
        return refused

    async def _write_one_by_one(
        self, outcomes: Sequence[Outcome], releases: Sequence[LeaseRef]
    ) -> set[int]:
        refused: set[int] = set()
        if releases:
            await self._store.release(releases)
        for outcome in outcomes:
            try:
                refused |= await self._write([outcome], ())
            except (DatabaseUnavailable, StoreConflict):
                raise
            except ConveyorError as exc:
                refused |= await self._record_unstorable(outcome, exc)
        return refused

    async def _record_unstorable(self, outcome: Outcome, exc: ConveyorError) -> set[int]:
        error = {
            "type": "OutcomeNotRecorded",
            "message": f"the database refused this run's outcome: {exc}"[:2000],
        }
        try:
            return await self._store.finish([Finish(outcome.lease, TaskState.DEAD, error=error)])
        except (DatabaseUnavailable, StoreConflict):
            raise
        except ConveyorError as again:
            log.error("outcome_dropped", task_id=outcome.lease.task_id, error=str(again))
            return set()

    def _count(
        self, outcomes: Sequence[Outcome], releases: Sequence[LeaseRef], refused: set[int]
    ) -> None:
        queue_of, by_queue = self._queue_of, self.by_queue
        for outcome in outcomes:
            queue = queue_of.pop(outcome.lease.task_id, "")
            if outcome.lease.task_id in refused:
                by_queue[queue, "lease_lost"] += 1
                continue
            if isinstance(outcome, Finish):
                name = outcome.state.value
            elif isinstance(outcome, SuspendLease):
                name = "waiting"
            else:
                name = "retried"
            self._stats[name] += 1
            by_queue[queue, name] += 1
        for lease in releases:
            by_queue[queue_of.pop(lease.task_id, ""), "released"] += 1
        self._stats["released"] += len(releases)
        if refused:
            self._stats["lease_lost"] += len(refused)
            log.warning("lease_lost", task_ids=sorted(refused))
