"""TaskContext: what a handler gets besides its payload.

``ctx.step`` and ``ctx.once`` share the effects ledger (``effects`` table, keyed by tenant
and key). A step's result is recorded when it completes; when the task runs again (a retry,
or redelivery after a crash) a completed step returns its recorded result instead of running,
so an agent that crashed after three LLM calls resumes at the fourth. A step runs again
only if it finished but its result was not recorded: the worker died in between, or the
database server crashed within a fraction of a second of the record (steps are recorded with
an asynchronous commit, which cuts their cost by a WAL flush each). Make a step idempotent
(for example pass its key to the provider) where a repeat matters.

``ctx.once`` is for effects that must not repeat: its key is owned by one running lease
while the effect runs, and its result is committed durably. It runs the effect again only
if the worker dies (SIGKILL, a crash) after the effect and before its record commits; for
an effect on another service, hand that service ``ctx.idempotency_key(key)`` so a repeat
is a no-op there. ``ctx.once_in_transaction`` is for effects on Conveyor's own database:
the effect's writes and its record commit in one transaction, so it happens exactly once,
whatever crashes.

``ctx.wait_for`` waits for a signal without holding the worker: with no signal yet it ends
the run (``TaskSuspended``) and the task waits as a row; the signal runs it again from the
top, where completed steps and effects replay, and ``wait_for`` returns the payload.

Every store call here rides out a database restart: it is retried with backoff for up to
``database_retry_seconds``; after that the run fails with DatabaseUnavailable, and the
worker hands the task back without counting an attempt.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload

import structlog

from conveyor.app import StepInfo
from conveyor.core.backoff import FailureBackoff
from conveyor.core.events import check_agent_kind
from conveyor.core.waits import check_signal_name, check_wait_timeout
from conveyor.errors import (
    ConfigurationError,
    ConveyorError,
    DatabaseUnavailable,
    PermanentError,
    TaskSuspended,
    WaitTimedOut,
)
from conveyor.store.availability import retry_while_unavailable
from conveyor.store.event_records import NewEvent
from conveyor.store.params import EffectOwner, NewTask
from conveyor.store.records import ClaimedTask, EffectStatus
from conveyor.types import Priority
from conveyor.worker.task_hooks import run_step_around

if TYPE_CHECKING:
    from conveyor.app import TaskHook
    from conveyor.core.llm_caps import LLMCaps
    from conveyor.gateway.bound import BoundLLM
    from conveyor.gateway.gateway import Gateway
    from conveyor.worker.ports import WorkerStore

T = TypeVar("T")

# Set while ctx.once_in_transaction's fn runs: a nested store call would need a second
# pooled connection while fn holds one (enough such runs at once starve the pool).
_IN_TRANSACTIONAL_EFFECT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "conveyor_in_transactional_effect", default=False
)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """The running task as a handler sees it."""

    id: int
    tenant_id: str
    queue: str
    attempt: int
    max_attempts: int
    group_id: str | None
    parent_id: int | None
    created_at: float | None = None
    """When the task was submitted, Unix time by the database's clock (a float: the
    isolated child gets this record as JSON)."""


class TaskContext:
    """Handed to every handler: identity, a bound logger, durable steps, effects, spawning,
    and the LLM gateway (``ctx.llm``)."""

    def __init__(
        self,
        claimed: ClaimedTask,
        store: WorkerStore | None = None,
        *,
        timeout: float | None = None,
        llm_cache: bool = False,
        database_retry_seconds: float = 30.0,
        llm: Gateway | None = None,
        step_hooks: Sequence[TaskHook] = (),
        llm_caps: LLMCaps | None = None,
    ) -> None:
        self.task = TaskInfo(
            id=claimed.id,
            tenant_id=claimed.tenant_id,
            queue=claimed.queue,
            attempt=claimed.attempts,
            max_attempts=claimed.max_attempts,
            group_id=claimed.group_id,
            parent_id=claimed.parent_id,
            created_at=claimed.created_at.timestamp(),
        )
        self._log: Any = None
        self.last_progress = time.monotonic()
        self._store = store
        self._trace_context = claimed.trace_context
        self._enqueued_at = claimed.created_at
        self._step_hooks = step_hooks
        self._lease_token = claimed.lease_token
        self._spawned = 0
        self._gateway = llm
        self._llm: BoundLLM | None = None
        self.deadline = None if timeout is None else self.last_progress + timeout
        """``time.monotonic()`` by which the task times out; None without a timeout."""
        self._llm_cache = llm_cache
        self._llm_caps = llm_caps
        self._once_locks: dict[str, asyncio.Lock] | None = None
        self._database_retry_seconds = database_retry_seconds
        self._recording: set[asyncio.Future[Any]] = set()
        self.database_gave_up: DatabaseUnavailable | None = None
        """The error a store call of this run gave up with after retrying through an outage
        (the worker then releases the task without charging an attempt)."""

    @property
    def trace_context(self) -> dict[str, str] | None:
        """The W3C ``traceparent`` (and ``tracestate``) stored with the task at submit, the
        context its runs join; None when it was submitted without one."""
        return self._trace_context

    @property
    def enqueued_at(self) -> datetime:
        """When the task was submitted."""
        return self._enqueued_at

    @property
    def log(self) -> Any:
        """A structlog logger bound to tenant_id, group_id, task_id, queue, attempt and the
        trace_id of the task's stored ``traceparent``.

        Built on first use: binding costs more than a no-op task's whole run.
        """
        if self._log is None:
            self._log = structlog.get_logger("conveyor.task").bind(
                tenant_id=self.task.tenant_id,
                group_id=self.task.group_id,
                task_id=self.task.id,
                queue=self.task.queue,
                attempt=self.task.attempt,
                trace_id=trace_id_of(self._trace_context),
            )
        return self._log

    @property
    def llm(self) -> BoundLLM:
        """The worker's LLM gateway on behalf of this task: ``await ctx.llm.chat(...)``.

        Calls are accounted to this task's tenant and id; every streamed chunk and every
        finished chat counts as progress (``heartbeat``). Raises ConfigurationError when
        the worker was given no gateway (``CONVEYOR_LLM_CONFIG`` unset). See docs/gateway.md.
        """
        if self._llm is None:
            if self._gateway is None:
                raise ConfigurationError(
                    "no LLM gateway configured; set CONVEYOR_LLM_CONFIG to a .toml or .json "
                    "file and restart the worker (see docs/gateway.md)"
                )
            # Imported here: a worker whose agents never call a model does not load httpx.
            from conveyor.gateway.bound import BoundLLM
            from conveyor.gateway.scope import CallScope

            scope = CallScope(
                tenant_id=self.task.tenant_id,
                task_id=self.task.id,
                group_id=self.task.group_id,
                queue=self.task.queue,
                deadline=self.deadline,
                run=self._lease_token,
                run_caps=self._llm_caps,
            )
            self._llm = BoundLLM(
                self._gateway,
                scope,
                on_progress=self.heartbeat,
                cache=self._llm_cache,
            )
        return self._llm

    def heartbeat(self) -> None:
        """Report progress (each streamed chunk does this for you)."""
        self.last_progress = time.monotonic()

    @overload
    async def step(self, name: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T: ...
    @overload
    async def step(self, name: str, fn: Callable[..., T], *args: Any) -> T: ...
    async def step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` once per task: a rerun of this task returns the recorded result.

        ``name`` must be unique within the task; the result must be JSON.
        """
        if self._step_hooks:
            step = StepInfo("step", name)
            run = functools.partial(self._step, name, fn, args, step)
            return await run_step_around(self._step_hooks, self, step, run)
        return await self._step(name, fn, args)

    async def _step(
        self, name: str, fn: Callable[..., Any], args: Any, step: StepInfo | None = None
    ) -> Any:
        store = self._require_store("step")
        tenant, key = self.task.tenant_id, f"step:{self.task.id}:{name}"
        # a read: no commit to wait on
        found = await self._durably(lambda: store.get_effect(tenant, key))
        if found is not None:
            if step is not None:
                step.replayed = True
            self.log.debug("step_replayed", step=name)
            return found.result
        result = await _call_json(key, fn, args)
        stored = await self._durably(
            lambda: store.record_step(tenant, key, result, task_id=self.task.id)
        )
        self.heartbeat()
        return stored.result

    @overload
    async def once(self, key: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T: ...
    @overload
    async def once(self, key: str, fn: Callable[..., T], *args: Any) -> T: ...
    async def once(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a side effect once per tenant and ``key``, across retries and tasks.

        Use a key that names the effect itself, e.g. ``f"email:welcome:{user_id}"``.
        """
        if self._step_hooks:
            step = StepInfo("once", key)
            run = functools.partial(self._once, f"once:{key}", fn, args, step)
            return await run_step_around(self._step_hooks, self, step, run)
        return await self._once(f"once:{key}", fn, args)

    async def once_in_transaction(self, key: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(conn, *args)`` exactly once per tenant and ``key``, in a transaction
        on Conveyor's database that also records its result.

        ``conn`` is an asyncpg connection inside that transaction: what ``fn`` writes through
        it commits together with the record, or (a crash, a lost connection, an exception)
        not at all, and the next run does it afresh. A rerun after the commit returns the
        recorded result without calling ``fn``. Keep ``fn`` to database work: anything else
        it does (an HTTP call) may repeat when the transaction does not commit. The result
        must be JSON.
        """
        if self._step_hooks:
            step = StepInfo("once_in_transaction", key)
            run = functools.partial(self._once_in_transaction, key, fn, args, step)
            result: T = await run_step_around(self._step_hooks, self, step, run)
            return result
        return await self._once_in_transaction(key, fn, args)

    async def _once_in_transaction(
        self, key: str, fn: Callable[..., Awaitable[T]], args: Any, step: StepInfo | None = None
    ) -> T:
        store = self._require_store("once_in_transaction")
        tenant, ledger_key = self.task.tenant_id, f"tx:{key}"
        ran = False

        async def effect(conn: Any) -> Any:
            nonlocal ran
            ran = True
            token = _IN_TRANSACTIONAL_EFFECT.set(True)
            try:
                return await _call_json(ledger_key, fn, (conn, *args))
            finally:
                _IN_TRANSACTIONAL_EFFECT.reset(token)

        stored = await self._durably(
            lambda: store.run_effect_in_transaction(
                tenant, ledger_key, effect, task_id=self.task.id
            )
        )
        if step is not None:
            step.replayed = not ran
        self.heartbeat()
        return stored.result  # type: ignore[no-any-return]

    def idempotency_key(self, key: str) -> str:
        """A key for ``key``'s effect on another service, the same in every run and worker.

        Pass it as that service's idempotency key (Stripe's ``Idempotency-Key``, a message
        id): if the effect runs again after a crash, the service applies it once. It
        depends only on the tenant and ``key``, never on the attempt.
        """
        digest = hashlib.sha256(f"{self.task.tenant_id}\x00{key}".encode()).hexdigest()
        return f"conveyor-{digest[:40]}"

    # ``timeout`` is a durable deadline kept by the database, not one of this coroutine's:
    # asyncio.timeout cannot outlive the run, which ends when the task starts waiting.
    async def wait_for(self, name: str, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Wait for signal ``name`` without holding a worker: its payload (any JSON).

        If the signal was delivered (``POST /v1/tasks/{id}/signals/{name}``, the client's
        ``signal``, ``conveyor signal``), its payload is returned at once, on this run and
        on every later one. If not, the run ends here: the task becomes ``waiting``, frees
        its slot and its lease, and is not charged an attempt; the signal makes it run again
        from the top, where completed ``step``s and ``once`` effects return their recorded
        results and this call returns the payload. ``timeout`` (seconds, None: for ever)
        bounds the wait: past it, this call raises WaitTimedOut, which the handler may catch
        (uncaught, the task is dead). Not for sync or isolated handlers.
        """
        return await self.await_signal(name, timeout, reserved=False)

    async def await_signal(self, name: str, seconds: float | None, *, reserved: bool) -> Any:
        """``wait_for`` (``seconds``: its timeout), for Conveyor's own waits too:
        ``reserved`` admits the ``conveyor:`` names that tenants cannot signal (the webhook
        adapter's callback waits on one)."""
        try:
            check_signal_name(name, reserved=reserved)
            seconds = check_wait_timeout(seconds)
        except ValueError as exc:
            raise PermanentError(f"ctx.wait_for: {exc}") from None
        store = self._require_store("wait_for")
        tenant, task_id = self.task.tenant_id, self.task.id
        held = await self._durably(lambda: store.get_signal(tenant, task_id, name))
        if held is None:
            raise TaskSuspended(name, seconds)
        if held.timed_out:
            raise WaitTimedOut(name, seconds)
        self.heartbeat()
        return held.payload

    async def spawn(
        self,
        queue: str,
        payload: dict[str, Any] | None = None,
        *,
        priority: int = Priority.NORMAL,
        key: str | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Enqueue a child task (same tenant and group, linked by parent); its id.

        Spawns are idempotent across reruns of this task: the n-th spawn of a run gets the
        same key every time (or pass ``key``), so a retried planner does not duplicate work.
        """
        store = self._require_store("spawn")
        self._spawned += 1
        child = NewTask(
            queue=queue,
            payload=payload or {},
            tenant_id=self.task.tenant_id,
            priority=priority,
            max_attempts=max_attempts,
            idempotency_key=(
                f"spawn:{self.task.id}:key:{key}"
                if key is not None
                else f"spawn:{self.task.id}:n:{self._spawned}"
            ),
            parent_id=self.task.id,
            group_id=self.task.group_id,
            trace_context=self._trace_context,
        )
        # the idempotency key makes a retried enqueue (its commit unacknowledged) return
        # the task the first one made
        result = await self._durably(lambda: store.enqueue(child))
        return result.task_id

    async def emit(self, kind: str, data: Any = None) -> None:
        """Add an event of your own to this task's log (``kind``: lower case, not one of the
        lifecycle kinds; ``data``: JSON). Subscribers of the task's or the tenant's event
        stream receive it in order with the lifecycle events (docs/events.md). Written
        durably before this returns; a rerun of the task emits again.
        """
        try:
            check_agent_kind(kind)
        except ValueError as exc:
            raise PermanentError(str(exc)) from None
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"event {kind!r}: data must be JSON ({exc})") from None
        store = self._require_store("emit")
        event = NewEvent(
            tenant_id=self.task.tenant_id,
            task_id=self.task.id,
            queue=self.task.queue,
            group_id=self.task.group_id,
            kind=kind,
            attempt=self.task.attempt,
            data=data,
        )
        await self._durably(lambda: store.append_events([event]))
        self.heartbeat()

    async def _once(
        self, key: str, fn: Callable[..., Any], args: Any, step: StepInfo | None = None
    ) -> Any:
        # The ledger's owner is the lease, so two calls of one run with the same key would
        # both own it: within a run, the second waits for the first and gets its result.
        if self._once_locks is None:
            self._once_locks = {}
        lock = self._once_locks.setdefault(key, asyncio.Lock())
        async with lock:
            return await self._once_owned(key, fn, args, step)

    async def _once_owned(
        self, key: str, fn: Callable[..., Any], args: Any, step: StepInfo | None
    ) -> Any:
        store = self._require_store("once")
        owner = EffectOwner(self.task.tenant_id, key, self.task.id, self._lease_token)
        wait = 0.05
        while True:
            found = await self._durably(lambda: store.begin_effect(owner))
            if found.status is EffectStatus.DONE:
                if step is not None:
                    step.replayed = True
                self.log.debug("effect_replayed", key=key)
                return found.result
            if found.status is EffectStatus.OWNED:
                break
            # another running task is doing this very effect: wait for its result
            await asyncio.sleep(wait)
            wait = min(wait * 2, 1.0)
        try:
            result = await _call_json(key, fn, args)
        except BaseException:
            try:  # the next attempt runs it
                await asyncio.shield(store.abandon_effect(owner))
            except ConveyorError as exc:  # the key passes on once this lease is gone
                self.log.warning("effect_not_abandoned", key=key, error=str(exc))
            raise
        # Recording is retried through a lost connection, and shielded from the run's own
        # timeout, stall detection and shutdown: the effect has happened, and a run that
        # gave up here would do it again. complete_effect is safe to repeat.
        record = asyncio.ensure_future(self._durably(lambda: store.complete_effect(owner, result)))
        self._recording.add(record)
        record.add_done_callback(self._recording.discard)
        stored = await asyncio.shield(record)
        self.heartbeat()
        return stored.result if stored.recorded else result

    async def records_settled(self) -> None:
        """Wait for effect records still being written after the run was cancelled (each is
        bounded by ``database_retry_seconds``); the worker calls this before the outcome."""
        if self._recording:
            await asyncio.wait(set(self._recording))

    async def _durably(self, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``, retried with backoff while the database is out of reach.

        Every call passed here is safe to repeat. After ``database_retry_seconds`` the
        DatabaseUnavailable propagates, and the worker releases the task without charging
        an attempt.
        """
        if _IN_TRANSACTIONAL_EFFECT.get():
            raise RuntimeError(
                "ctx.step, ctx.once and ctx.spawn cannot run inside ctx.once_in_transaction's "
                "fn: it holds a connection, and a second one from the same pool can starve "
                "the worker; do that work before or after, or through fn's own conn"
            )
        try:
            return await retry_while_unavailable(
                call,
                what="task",
                seconds=self._database_retry_seconds,
                backoff=FailureBackoff(base=0.05, cap=2.0),
                log=self.log,
                log_each=False,
                level="debug",  # the worker's own loops report the outage once, not every run
            )
        except DatabaseUnavailable as exc:
            if exc.retryable:
                self.database_gave_up = exc  # the worker releases the task for this one
            raise

    def _require_store(self, what: str) -> WorkerStore:
        if self._store is None:
            raise RuntimeError(f"ctx.{what} needs a worker's store (not available here)")
        return self._store


async def _call_json(key: str, fn: Callable[..., Any], args: Any) -> Any:
    """``fn(*args)``, awaited if need be; its result must be JSON to enter the ledger."""
    value = fn(*args)
    result = await value if inspect.isawaitable(value) else value
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        # permanent: running it again returns the same kind of value
        raise PermanentError(f"result of {key!r} must be JSON to be recorded: {exc}") from exc
    return result


def trace_id_of(trace_context: dict[str, str] | None) -> str | None:
    """The 32-hex trace id of a stored ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    traceparent = (trace_context or {}).get("traceparent")
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else None
