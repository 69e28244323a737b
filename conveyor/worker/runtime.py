"""The worker: claims tasks as slots free up, runs handlers, and records outcomes in batches.

One process holds up to ``concurrency`` tasks in flight as coroutines. It claims only what
it can start now (no prefetch hoarding behind slow tasks), wakes on LISTEN/NOTIFY and polls
with jitter as a fallback, extends all its leases in one statement per heartbeat, and
commits outcomes in groups: while one batch is being written the next one accumulates.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import random
import socket
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import structlog

from conveyor.app import AgentSpec, App
from conveyor.errors import ConfigurationError, ConveyorError
from conveyor.store.notify import NotificationListener
from conveyor.store.params import ClaimRequest, Finish, LeaseRef, RetryLease, WorkerInfo
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import ClaimedTask
from conveyor.types import TaskState
from conveyor.worker.context import TaskContext
from conveyor.worker.isolation import run_isolated
from conveyor.worker.looplag import LoopLagMonitor
from conveyor.worker.outcomes import (
    Outcome,
    TaskStalled,
    TaskTimedOut,
    error_record,
    failure,
    parse_payload,
    success,
)

log = structlog.get_logger("conveyor.worker")

_START_SLICE = 100
_FLUSH_SLICE = 1000
_SHUTDOWN = "shutdown"
_CANCEL = "cancel"
_LOST = "lost"
_STALLED = "stalled"


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker runs; each field documents its default."""

    queues: tuple[str, ...] | None = None
    """Queues to serve (default: every agent of the app)."""
    concurrency: int = 256
    """Tasks in flight at once in this process."""
    claim_batch: int = 100
    """Most tasks taken by one claim statement."""
    lease_seconds: float = 30.0
    """Lease length; a dead worker's tasks come back this long after its last heartbeat."""
    heartbeat_seconds: float = 5.0
    """How often all leases are extended (at most half the lease)."""
    claim_coalesce_seconds: float = 0.005
    """A busy worker woken with few free slots waits this long to claim more at once."""
    poll_seconds: float = 2.0
    """Idle poll period (jittered), the fallback when a notification is missed."""
    grace_seconds: float = 30.0
    """On shutdown, how long in-flight tasks may finish before they are released."""
    max_tasks_per_process: int | None = None
    """Recycle (drain and restart) the process after claiming this many tasks."""
    max_memory_mb: float | None = None
    """Recycle the process when its resident memory grows past this many MB."""
    sync_threads: int = 64
    """Threads for plain ``def`` handlers (each blocks one thread while it runs)."""
    loop_lag_warn_seconds: float = 0.25
    """Log a warning naming the task when the event loop is blocked this long."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port while the process runs (0: any free port)."""
    metrics_host: str = "0.0.0.0"
    """Address the metrics are served on: all interfaces, so Prometheus can scrape a pod's IP."""
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError("--concurrency must be >= 1")
        if self.claim_batch < 1:
            raise ConfigurationError("--claim-batch must be >= 1")
        if self.max_tasks_per_process is not None and self.max_tasks_per_process < 1:
            raise ConfigurationError("--max-tasks-per-process must be >= 1")
        if self.max_memory_mb is not None and self.max_memory_mb <= 0:
            raise ConfigurationError("--max-memory must be > 0 MB")
        if self.sync_threads < 1:
            raise ConfigurationError("--sync-threads must be >= 1")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigurationError("--metrics-port must be a TCP port (0 to 65535)")
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ConfigurationError(
                "CONVEYOR_HEARTBEAT_SECONDS must be at most half of CONVEYOR_LEASE_SECONDS, "
                "or live tasks lose their leases"
            )


@dataclass(slots=True)
class _Running:
    claimed: ClaimedTask
    agent: AgentSpec
    context: TaskContext
    runner: asyncio.Task[None] | None = None


class Worker:
    """Runs an App's agents against a store until ``stop`` is set."""

    def __init__(
        self, app: App, store: PostgresStore, options: WorkerOptions | None = None
    ) -> None:
        self.app = app
        self.store = store
        self.options = options or WorkerOptions()
        queues = self.options.queues or tuple(app.agents)
        missing = [q for q in queues if q not in app.agents]
        if missing:
            raise ConfigurationError(f"no agent registered for queue(s): {', '.join(missing)}")
        if not queues:
            raise ConfigurationError("the app registers no agents; nothing to run")
        self.queues = queues
        self._is_async = {name: spec.is_async for name, spec in app.agents.items()}
        self.stats: Counter[str] = Counter()
        self._running: dict[int, _Running] = {}
        self._per_queue: Counter[str] = Counter()
        self._cancel_reasons: dict[int, str] = {}
        self._pending: list[Outcome] = []
        self._releases: list[LeaseRef] = []
        self._wake = asyncio.Event()
        self._flush_wake = asyncio.Event()
        # The heartbeat and a flush both lock this worker's task rows, in whatever order
        # their statements visit them; running them one at a time rules out a deadlock.
        self._row_writes = asyncio.Lock()
        self.loop_lag = LoopLagMonitor(
            warn_after=self.options.loop_lag_warn_seconds, describe=_running_task
        )
        self._threads = ThreadPoolExecutor(
            self.options.sync_threads, thread_name_prefix="conveyor-sync"
        )
        self.recycle_reason: str | None = None
        """Why the worker stopped to be recycled (None: it was asked to stop)."""

    @property
    def in_flight(self) -> int:
        """Tasks running now."""
        return len(self._running)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully."""
        opts = self.options
        idle_rss = resident_memory_mb()
        if opts.max_memory_mb is not None and idle_rss >= opts.max_memory_mb * 0.9:
            raise ConfigurationError(
                f"--max-memory {opts.max_memory_mb:g} MB is below what this worker uses idle "
                f"({idle_rss:.0f} MB): it would recycle forever; give it more headroom"
            )
        await self.store.register_worker(
            WorkerInfo(
                opts.worker_id, socket.gethostname(), os.getpid(), self.queues, opts.concurrency
            )
        )
        listener = NotificationListener(
            self.store.dsn, on_ready=self._on_ready, on_cancel=self._on_cancel
        )
        try:
            await listener.start()
        except ConveyorError as exc:  # polling still works without notifications
            log.warning("listen_unavailable", error=str(exc))
        lag = asyncio.create_task(self.loop_lag.run(), name="conveyor-looplag")
        flusher = asyncio.create_task(self._flush_loop(), name="conveyor-flush")
        beats = asyncio.create_task(self._heartbeat_loop(), name="conveyor-heartbeat")
        log.info("worker_started", worker_id=opts.worker_id, queues=list(self.queues))
        try:
            await self._claim_loop(stop)
        finally:
            await self._shutdown()
            # Cancel the flusher and the heartbeat only between their writes: cancelling a
            # statement in flight could leave it committed while we think it failed (the
            # retried finish would then be refused as a lost lease).
            async with self._row_writes:
                for helper in (beats, flusher, lag):
                    helper.cancel()
            for helper in (beats, flusher, lag):
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
            while self._pending or self._releases:
                await self._flush()
            await listener.stop()
            await _close_gateway_if_used()
            self._threads.shutdown(wait=False, cancel_futures=True)
            await self.store.set_worker_state(opts.worker_id, "stopped")
            log.info(
                "worker_stopped",
                worker_id=opts.worker_id,
                recycle=self.recycle_reason,
                **dict(self.stats),
                **self.loop_lag.summary(),
            )

    # -- claiming -----------------------------------------------------------------------

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self.recycle_reason = self._recycle_due()
                if self.recycle_reason is not None:
                    log.info("recycling", reason=self.recycle_reason)
                    return
                self._wake.clear()
                try:
                    full = await self._claim_available()
                except ConveyorError as exc:
                    log.warning("claim_failed", error=str(exc))
                    full = False
                if full:
                    continue  # more may be ready: claim again at once
                waker = asyncio.create_task(self._wake.wait())
                jitter = self.options.poll_seconds * (0.5 + random.random())
                await asyncio.wait({waker, stopper}, timeout=jitter, return_when="FIRST_COMPLETED")
                waker.cancel()
                await self._gather_slots(stop)
        finally:
            stopper.cancel()

    async def _gather_slots(self, stop: asyncio.Event) -> None:
        """Woken with only a slot or two free: wait a moment for more to free up.

        A busy worker is woken by every finishing task; claiming each slot on its own costs
        a claim transaction per task. A few milliseconds of waiting turns those into one
        claim of several (measured in benchmarks/fairness.py: 20 ms tasks).
        """
        wait = self.options.claim_coalesce_seconds
        free = self.options.concurrency - len(self._running)
        enough = max(1, min(self.options.claim_batch, self.options.concurrency) // 4)
        if wait > 0 and 0 < free < enough and not stop.is_set():
            await asyncio.sleep(wait)

    def _recycle_due(self) -> str | None:
        opts = self.options
        claimed = self.stats["claimed"]
        if opts.max_tasks_per_process is not None and claimed >= opts.max_tasks_per_process:
            return f"claimed {claimed} tasks (--max-tasks-per-process)"
        if opts.max_memory_mb is not None:
            rss = resident_memory_mb()
            if rss > opts.max_memory_mb:
                return f"resident memory {rss:.0f} MB > {opts.max_memory_mb:g} MB (--max-memory)"
        return None

    async def _claim_available(self) -> bool:
        """Claim for every free slot; True when some claim came back full."""
        free = self.options.concurrency - len(self._running)
        if self.options.max_tasks_per_process is not None:
            free = min(free, self.options.max_tasks_per_process - self.stats["claimed"])
        if free <= 0:
            return False
        unlimited = tuple(q for q in self.queues if self.app.agents[q].concurrency is None)
        groups: list[tuple[tuple[str, ...], int]] = []
        if unlimited:
            groups.append((unlimited, free))
        for queue in self.queues:
            cap = self.app.agents[queue].concurrency
            if cap is not None:
                groups.append(((queue,), cap - self._per_queue[queue]))
        filled = False
        for queues, room in groups:
            limit = min(room, free, self.options.claim_batch)
            if limit <= 0:
                continue
            defaults = tuple(self.app.agents[q].retry.max_attempts for q in queues)
            claimed = await self.store.claim(
                ClaimRequest(
                    queues, limit, self.options.worker_id, self.options.lease_seconds, defaults
                )
            )
            for count, task in enumerate(claimed, 1):
                self._start(task)
                if count % _START_SLICE == 0:
                    await asyncio.sleep(0)  # let running agents breathe between slices
            free -= len(claimed)
            filled = filled or len(claimed) == limit
        return filled

    def _start(self, task: ClaimedTask) -> None:
        agent = self.app.agents[task.queue]
        timeout = task.timeout_seconds or agent.timeout
        context = TaskContext(task, self.store, timeout=timeout, llm_cache=agent.llm_cache)
        entry = _Running(task, agent, context)
        self._running[task.id] = entry
        self._per_queue[task.queue] += 1
        self.stats["claimed"] += 1
        entry.runner = asyncio.create_task(self._execute(entry), name=f"conveyor-task-{task.id}")

    # -- running ------------------------------------------------------------------------

    async def _execute(self, entry: _Running) -> None:
        task, agent = entry.claimed, entry.agent
        timeout = task.timeout_seconds or agent.timeout
        outcome: Outcome | None = None
        try:
            if timeout is None:  # no deadline to arm: a measurable share of a short task
                outcome = success(task, await self._call(entry))
            else:
                deadline = asyncio.timeout(timeout)
                try:
                    async with deadline:
                        result = await self._call(entry)
                    outcome = success(task, result)
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    outcome = failure(task, agent, TaskTimedOut(timeout))
        except asyncio.CancelledError:
            reason = self._cancel_reasons.pop(task.id, None)
            if reason is None:
                raise  # not ours: the worker itself is being torn down
            if reason == _SHUTDOWN:
                self._releases.append(LeaseRef(task.id, task.lease_token))
            elif reason == _STALLED:
                outcome = failure(task, agent, TaskStalled(agent.stall_timeout or 0.0))
            elif reason == _CANCEL:
                error = error_record(asyncio.CancelledError("cancel requested"), task.attempts)
                outcome = Finish(
                    LeaseRef(task.id, task.lease_token), TaskState.CANCELLED, error=error
                )
            # _LOST: another worker owns the task now; record nothing
        except Exception as exc:
            outcome = failure(task, agent, exc)
            _log_failure(task, exc, outcome)
        finally:
            del self._running[task.id]
            self._per_queue[task.queue] -= 1
            self._wake.set()
        if outcome is not None:
            self._pending.append(outcome)
        self._flush_wake.set()

    async def _call(self, entry: _Running) -> Any:
        """Run the handler where it belongs: a child process, the loop, or a thread."""
        task, agent = entry.claimed, entry.agent
        if agent.isolation == "process":
            parse_payload(agent, task)  # a payload that does not fit fails before a child starts
            return await run_isolated(agent, entry.context.task, task.payload)
        if self._is_async[task.queue]:
            return await agent.handler(entry.context, parse_payload(agent, task))
        payload = parse_payload(agent, task)
        # a pool of our own (--sync-threads), not asyncio's default of cpu+4 threads
        call = functools.partial(agent.handler, entry.context, payload)
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._threads, context.run, call)

    def _cancel(self, task_id: int, reason: str) -> None:
        entry = self._running.get(task_id)
        if entry is not None and entry.runner is not None and task_id not in self._cancel_reasons:
            self._cancel_reasons[task_id] = reason
            entry.runner.cancel()

    def _on_ready(self, queue: str) -> None:
        if queue in self.queues:
            self._wake.set()

    def _on_cancel(self, task_id: int) -> None:
        self._cancel(task_id, _CANCEL)

    # -- recording ----------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            try:
                await self._flush()
            except ConveyorError as exc:
                log.warning("flush_failed", error=str(exc))
                await asyncio.sleep(0.5)
                self._flush_wake.set()

    async def _flush(self) -> None:
        """Write every pending outcome: one finish, one retry and one release statement."""
        # At most _FLUSH_SLICE outcomes a statement: encoding 10,000 at once would hold the
        # event loop for tens of milliseconds; the rest go in the next flush, at once.
        outcomes, self._pending = self._pending[:_FLUSH_SLICE], self._pending[_FLUSH_SLICE:]
        if self._pending:
            self._flush_wake.set()
        releases, self._releases = self._releases, []
        finishes = [o for o in outcomes if isinstance(o, Finish)]
        retries = [o for o in outcomes if isinstance(o, RetryLease)]
        try:
            async with self._row_writes:
                refused = await self.store.finish(finishes) if finishes else set()
                refused |= await self.store.retry(retries) if retries else set()
                if releases:
                    await self.store.release(releases)
        except BaseException:
            self._pending = outcomes + self._pending  # keep them for the next try
            self._releases = releases + self._releases
            raise
        if finishes or retries or releases:
            # Claim again now: until this commit, the finished tasks still counted against
            # their tenants' caps, so a claim made when they ended may have come back short.
            self._wake.set()
        for finish in finishes:
            if finish.lease.task_id not in refused:
                self.stats[finish.state.value] += 1
        self.stats["retried"] += sum(1 for r in retries if r.lease.task_id not in refused)
        self.stats["released"] += len(releases)
        if refused:
            self.stats["lease_lost"] += len(refused)
            log.warning("lease_lost", task_ids=sorted(refused))

    def _cancel_stalled(self) -> None:
        """Fail runs that made no progress for their agent's stall_timeout."""
        now = time.monotonic()
        for task_id, entry in list(self._running.items()):
            limit = entry.agent.stall_timeout
            if limit is not None and now - entry.context.last_progress > limit:
                log.warning("task_stalled", task_id=task_id, queue=entry.claimed.queue)
                self._cancel(task_id, _STALLED)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_seconds)
            self._cancel_stalled()
            held = [LeaseRef(t, e.claimed.lease_token) for t, e in self._running.items()]
            held += [o.lease for o in self._pending]
            try:
                async with self._row_writes:
                    beat = await self.store.heartbeat(
                        self.options.worker_id, held, self.options.lease_seconds
                    )
            except ConveyorError as exc:
                log.warning("heartbeat_failed", error=str(exc))
                continue
            for task_id in beat.lost:
                self._cancel(task_id, _LOST)
            for task_id in beat.cancel_requested:
                self._cancel(task_id, _CANCEL)

    async def _shutdown(self) -> None:
        """Let in-flight tasks finish within the grace period, then release the rest."""
        runners = [e.runner for e in self._running.values() if e.runner is not None]
        if runners:
            log.info("draining", in_flight=len(runners), grace_seconds=self.options.grace_seconds)
            await asyncio.wait(runners, timeout=self.options.grace_seconds)
        leftovers = [e.runner for e in self._running.values() if e.runner is not None]
        for task_id in list(self._running):
            self._cancel(task_id, _SHUTDOWN)
        if leftovers:
            await asyncio.wait(leftovers)


def _running_task(frame: FrameType) -> dict[str, Any] | None:
    """For the loop-lag watchdog: the task whose handler is on this stack, if any."""
    if frame.f_code.co_name != "_execute":
        return None
    task = frame.f_locals.get("task")
    if not isinstance(task, ClaimedTask):
        return None
    return {"task_id": task.id, "queue": task.queue, "tenant_id": task.tenant_id}


def resident_memory_mb() -> float:
    """This process's resident set size in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1_048_576
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log_failure(task: ClaimedTask, exc: Exception, outcome: Outcome) -> None:
    """One line per failed run: what failed and what happens next."""
    if isinstance(outcome, RetryLease):
        next_step = "snooze" if not outcome.count_attempt else f"retry in {outcome.delay:.2f}s"
    else:
        next_step = outcome.state.value
    log.warning(
        "task_failed",
        task_id=task.id,
        queue=task.queue,
        tenant_id=task.tenant_id,
        attempt=task.attempts,
        error_type=type(exc).__name__,
        error=str(exc)[:500],
        next=next_step,
    )


async def _close_gateway_if_used() -> None:
    """Close the LLM gateway's connections if an agent used ``ctx.llm`` in this process.

    Looked up in sys.modules: a worker whose agents never call a model never loads it.
    """
    current = sys.modules.get("conveyor.gateway.current")
    if current is not None:
        await current.close_gateway()
