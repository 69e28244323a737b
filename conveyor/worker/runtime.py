"""The worker: claims tasks as slots free up, runs handlers, and records outcomes in batches.

One process holds up to ``concurrency`` tasks in flight as coroutines. It claims only what
it can start now (no prefetch hoarding behind slow tasks), wakes on LISTEN/NOTIFY and polls
with jitter as a fallback, extends all its leases in one statement per heartbeat, and
commits outcomes in groups: while one batch is being written the next one accumulates.

What it needs it is given: the store, the LLM gateway (``llm``, handed to every task's
``ctx.llm``; the caller owns and closes it) and the task hooks. ``conveyor worker`` builds
them once in its composition root (``conveyor/cli/worker_root.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from conveyor.app import AgentSpec, App, TaskHook
from conveyor.core.backoff import FailureBackoff
from conveyor.errors import (
    ConfigurationError,
    ConveyorError,
    DatabaseUnavailable,
    TaskSuspended,
    WorkerCrashed,
)
from conveyor.store.availability import retry_while_unavailable
from conveyor.store.notify import CANCEL_CHANNEL, TASKS_CHANNEL, NotificationListener
from conveyor.store.params import (
    ClaimRequest,
    Finish,
    LeaseRef,
    WorkerInfo,
)
from conveyor.store.records import ClaimedTask
from conveyor.types import TaskState
from conveyor.worker.context import TaskContext
from conveyor.worker.external import ExternalRuns
from conveyor.worker.isolation import run_isolated
from conveyor.worker.looplag import LoopLagMonitor
from conveyor.worker.memory import resident_memory_mb
from conveyor.worker.options import WorkerOptions
from conveyor.worker.outcomes import (
    Outcome,
    TaskStalled,
    TaskTimedOut,
    caused_by_lost_database,
    error_record,
    failure,
    first_suspension,
    log_failure,
    parse_payload,
    success,
    suspension,
)
from conveyor.worker.ports import WorkerStore
from conveyor.worker.recorder import OutcomeRecorder
from conveyor.worker.supervision import supervised
from conveyor.worker.task_hooks import around_hooks, run_around, step_hooks

if TYPE_CHECKING:
    from conveyor.gateway.gateway import Gateway
    from conveyor.gateway.webhooks import WebhookSender

log = structlog.get_logger("conveyor.worker")

_START_SLICE = 100
_SHUTDOWN = "shutdown"
_CANCEL = "cancel"
_LOST = "lost"
_STALLED = "stalled"


@dataclass(slots=True)
class _Running:
    claimed: ClaimedTask
    agent: AgentSpec
    context: TaskContext
    runner: asyncio.Task[None] | None = None


class Worker:
    """Runs an App's agents against a store until ``stop`` is set.

    ``llm`` is the gateway every task's ``ctx.llm`` calls through (None: ``ctx.llm``
    raises ConfigurationError naming CONVEYOR_LLM_CONFIG); the worker never closes it.
    ``hooks`` wrap every run (and every step), outside the App's own task hooks (the first
    is outermost).
    ``webhooks`` sends the deliveries of externally served roles (None: built from the
    environment's CONVEYOR_WEBHOOK_* settings on first use; see worker/external.py).
    """

    def __init__(
        self,
        app: App,
        store: WorkerStore,
        options: WorkerOptions | None = None,
        *,
        llm: Gateway | None = None,
        hooks: Sequence[TaskHook] = (),
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.options = options or WorkerOptions()
        self.llm = llm
        self.task_hooks = around_hooks([*hooks, *app.task_hooks])
        self.step_hooks = step_hooks([*hooks, *app.task_hooks])
        # Chosen once: without hooks a run costs no more than before hooks existed.
        self._run: Callable[[_Running], Awaitable[Any]] = (
            self._call_hooked if self.task_hooks else self._call
        )
        queues = self.options.queues or tuple(app.agents)
        missing = [q for q in queues if q not in app.agents]
        if missing:
            raise ConfigurationError(f"no agent registered for queue(s): {', '.join(missing)}")
        if not queues:
            raise ConfigurationError("the app registers no agents; nothing to run")
        self.queues = queues
        self.external = ExternalRuns(
            store,
            queues,
            sender=webhooks,
            database_retry_seconds=self.options.database_retry_seconds,
        )
        """The webhook adapter: runs of roles (or tenants' uses of roles) served elsewhere."""
        self._is_async = {name: spec.is_async for name, spec in app.agents.items()}
        self.stats: Counter[str] = Counter()
        self._running: dict[int, _Running] = {}
        self._per_queue: Counter[str] = Counter()
        self._cancel_reasons: dict[int, str] = {}
        self._wake = asyncio.Event()
        # The heartbeat and a flush both lock this worker's task rows, in whatever order
        # their statements visit them; running them one at a time rules out a deadlock.
        self._row_writes = asyncio.Lock()
        # Claim again as soon as outcomes are written: until then the finished tasks still
        # counted against their tenants' caps, so a claim made when they ended may have
        # come back short.
        self.recorder = OutcomeRecorder(
            store, self.stats, self._row_writes, on_written=self._wake.set
        )
        self._claim_backoff = FailureBackoff(base=0.1, cap=5.0)
        self._claim_uncertain = False
        self._holding_expired = False
        self.failure: tuple[str, BaseException] | None = None
        """The loop of the worker's own that died, and why; the worker then stops."""
        self._failed = asyncio.Event()
        self._listener: NotificationListener | None = None
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

    @property
    def outcomes_by_queue(self) -> dict[tuple[str, str], int]:
        """Written outcomes per (queue, outcome), a copy (the metrics read it)."""
        return dict(self.recorder.by_queue)

    @property
    def unwritten(self) -> int:
        """Outcomes and releases finished here and not yet written."""
        return self.recorder.unwritten

    @property
    def seconds_since_outcome(self) -> float:
        """Seconds since an outcome was last written (or the worker started)."""
        return time.monotonic() - self.recorder.last_written_at

    @property
    def writes_failing(self) -> bool:
        """True while outcomes cannot be written."""
        return self.recorder.failing_since is not None

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up."""
        return self._listener is not None and self._listener.connected

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully."""
        opts = self.options
        idle_rss = resident_memory_mb()
        if opts.max_memory_mb is not None and idle_rss >= opts.max_memory_mb * 0.9:
            raise ConfigurationError(
                f"--max-memory {opts.max_memory_mb:g} MB is below what this worker uses idle "
                f"({idle_rss:.0f} MB): it would recycle forever; give it more headroom"
            )
        info = WorkerInfo(
            opts.worker_id, socket.gethostname(), os.getpid(), self.queues, opts.concurrency
        )
        await retry_while_unavailable(
            lambda: self.store.register_worker(info),
            what="register",
            seconds=opts.database_retry_seconds,
        )
        # Polling still works while notifications are down; the listener reconnects by
        # itself and, once back, wakes the claim loop to catch up what it missed.
        listener = NotificationListener(self.store.direct_dsn, on_reconnect=self._wake.set)
        self._listener = listener
        listener.subscribe(TASKS_CHANNEL, self._on_ready)
        listener.subscribe(CANCEL_CHANNEL, self._on_cancel)
        await listener.start()
        lag = asyncio.create_task(self.loop_lag.run(), name="conveyor-looplag")
        flusher = supervised(self.recorder.run(), "flush", self._loop_died)
        beats = supervised(self._heartbeat_loop(), "heartbeat", self._loop_died)
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
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await helper
            written = await self.recorder.drain(max(opts.grace_seconds, 5.0))
            await listener.stop()
            self._threads.shutdown(wait=False, cancel_futures=True)
            await self.external.close()
            with contextlib.suppress(ConveyorError):  # the row goes silent and is pruned
                await retry_while_unavailable(
                    lambda: self.store.set_worker_state(opts.worker_id, "stopped"),
                    what="deregister",
                    seconds=min(opts.database_retry_seconds, 5.0),
                )
            log.info(
                "worker_stopped",
                worker_id=opts.worker_id,
                recycle=self.recycle_reason,
                **dict(self.stats),
                **self.loop_lag.summary(),
            )
        if self.failure is not None:
            loop_name, cause = self.failure
            raise WorkerCrashed(
                f"the worker's {loop_name} loop died ({type(cause).__name__}: {cause}); "
                "the worker stopped so that its tasks are not held by a process that "
                "cannot finish them"
            ) from cause
        if not written:
            raise WorkerCrashed(
                f"{self.recorder.unwritten} outcomes could not be written before exit; "
                "their tasks run again once their leases expire"
            )

    def _loop_died(self, name: str, exc: BaseException) -> None:
        """A loop of the worker raised what it does not handle: stop the worker loudly."""
        self.failure = (name, exc)
        self._failed.set()
        self._wake.set()

    # -- claiming -----------------------------------------------------------------------

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set() and not self._failed.is_set():
                self.recycle_reason = self._recycle_due()
                if self.recycle_reason is not None:
                    log.info("recycling", reason=self.recycle_reason)
                    return
                self._wake.clear()
                try:
                    if self._claim_uncertain:
                        await self._release_orphans()
                    full = await self._claim_available()
                    self._claim_backoff.succeeded()
                except ConveyorError as exc:
                    # a claim that failed on a lost connection may have committed; the flag
                    # stays set until a sweep of what it may have leased succeeds
                    self._claim_uncertain |= isinstance(exc, DatabaseUnavailable)
                    delay = self._claim_backoff.failed(random.random)
                    log.warning("claim_failed", error=str(exc), retry_in=round(delay, 2))
                    await asyncio.wait({stopper}, timeout=delay)
                    continue
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

    async def _release_orphans(self) -> None:
        """After a claim failed on a lost connection: hand back what it may have leased.

        The claim's commit may have gone through with its reply lost; those tasks are
        leased to this worker, which never started them. Under the row-writes lock every
        lease the worker knows of is running, pending or written (see OutcomeRecorder).
        """
        async with self._row_writes:
            held = [*self._running, *(lease.task_id for lease in self.recorder.leases())]
            orphans = await self.store.release_orphans(self.options.worker_id, held)
        self._claim_uncertain = False
        if orphans:
            log.warning("orphaned_claims_released", task_ids=sorted(orphans))

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
        """Claim for every free slot; True when some claim came back full.

        Nothing is claimed while outcomes cannot be written: new work would only join them,
        its leases kept fresh by the heartbeat and its results unrecorded. (A backlog that
        is being written is no reason to wait: claiming while the last batch is written is
        what keeps short tasks flowing.)
        """
        if self.recorder.failing_since is not None:
            return False
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
        context = TaskContext(
            task,
            self.store,
            timeout=timeout,
            llm_cache=agent.llm_cache,
            database_retry_seconds=self.options.database_retry_seconds,
            llm=self.llm,
            llm_caps=agent.caps,
            step_hooks=self.step_hooks,
        )
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
        release = False  # hand the task back without counting the attempt
        try:
            if timeout is None:  # no deadline to arm: a measurable share of a short task
                outcome = success(task, await self._run(entry))
            else:
                deadline = asyncio.timeout(timeout)
                try:
                    async with deadline:
                        result = await self._run(entry)
                    outcome = success(task, result)
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    outcome = failure(task, agent, TaskTimedOut(timeout))
        except TaskSuspended as suspended:
            # ctx.wait_for found no signal: the task waits without this slot or its lease
            outcome = suspension(task, suspended)
        except asyncio.CancelledError:
            reason = self._cancel_reasons.pop(task.id, None)
            if reason is None:
                raise  # not ours: the worker itself is being torn down
            if reason == _SHUTDOWN:
                release = True
            elif reason == _STALLED:
                outcome = failure(task, agent, TaskStalled(agent.stall_timeout or 0.0))
            elif reason == _CANCEL:
                error = error_record(asyncio.CancelledError("cancel requested"), task.attempts)
                outcome = Finish(
                    LeaseRef(task.id, task.lease_token), TaskState.CANCELLED, error=error
                )
            # _LOST: another worker owns the task now; record nothing
        except Exception as exc:
            if caused_by_lost_database(exc, entry.context.database_gave_up):
                # not the task's fault: hand it back without counting the attempt
                log.warning(
                    "task_released",
                    task_id=task.id,
                    queue=task.queue,
                    reason="database unavailable",
                    error=str(exc)[:500],
                )
                release = True
            else:
                outcome = failure(task, agent, exc)
                log_failure(task, exc, outcome)
        except BaseExceptionGroup as group:
            # (after Exception: an ExceptionGroup is a failure) wait_for inside a TaskGroup:
            # the group carries the suspension out
            waits, rest = group.split(TaskSuspended)
            if waits is None or rest is not None:
                raise
            outcome = suspension(task, first_suspension(waits))
        finally:
            # An effect record still being written (shielded from this run's timeout or
            # cancel) lands before the run's outcome: the next attempt must find it. The
            # task keeps its slot and lease (the heartbeat) until then.
            await entry.context.records_settled()
            del self._running[task.id]
            self._per_queue[task.queue] -= 1
            self._wake.set()
        if release:
            self.recorder.release(LeaseRef(task.id, task.lease_token), task.queue)
        if outcome is not None:
            self.recorder.add(outcome, task.queue)

    def _call_hooked(self, entry: _Running) -> Awaitable[Any]:
        """Run the handler inside the task hooks."""
        return run_around(self.task_hooks, entry.context, functools.partial(self._call, entry))

    async def _call(self, entry: _Running) -> Any:
        """Run the handler where it belongs: a child process, the loop, or a thread."""
        task, agent = entry.claimed, entry.agent
        if self.external.stale:  # a read of the tenants' overrides every few seconds
            await self.external.refresh()
        runtime = self.external.runtime_for(task, agent)
        if runtime is not None:  # delivered to an external runtime (worker/external.py)
            return await self.external.run(entry.context, runtime, task)
        if agent.isolation == "process":
            parse_payload(agent, task)  # a payload that does not fit fails before a child starts
            return await run_isolated(agent, entry.context.task, task.payload, llm=self.llm)
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

    def _on_cancel(self, payload: str) -> None:
        if payload.isdigit():
            self._cancel(int(payload), _CANCEL)

    # -- recording ----------------------------------------------------------------------

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
            if self._hold_unwritten():
                held += self.recorder.leases()
            try:
                async with self._row_writes:
                    beat = await self.store.heartbeat(
                        self.options.worker_id,
                        held,
                        self.options.lease_seconds,
                        unwritten=self.recorder.unwritten,
                        seconds_since_outcome=self.seconds_since_outcome,
                    )
            except ConveyorError as exc:
                log.warning("heartbeat_failed", error=str(exc))
                continue
            for task_id in beat.lost:
                self._cancel(task_id, _LOST)
            for task_id in beat.cancel_requested:
                self._cancel(task_id, _CANCEL)

    def _hold_unwritten(self) -> bool:
        """Whether the leases of unwritten outcomes are still extended.

        Kept while writes work or failed only briefly; past ``outcome_hold_seconds`` of
        failing writes they are left to expire, so that the tasks are not held forever by
        a worker that cannot record them (they run again elsewhere: at least once).
        """
        since = self.recorder.failing_since
        overdue = since is not None and time.monotonic() - since > self.options.outcome_hold_seconds
        if overdue and not self._holding_expired:
            log.error(
                "outcomes_released_to_expiry",
                unwritten=self.recorder.unwritten,
                failing_for=round(time.monotonic() - (since or 0.0), 1),
            )
        self._holding_expired = overdue
        return not overdue

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
