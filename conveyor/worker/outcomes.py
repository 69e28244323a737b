"""Turn how a handler ended into exactly one store operation: finish, retry or suspend."""

from __future__ import annotations

import json
import random
import traceback
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from conveyor.app import AgentSpec
from conveyor.core.failure import GiveUp, decide_after_failure
from conveyor.errors import Cancel, PermanentError, Retry, Snooze, TaskOutcome, TaskSuspended
from conveyor.store.params import Finish, LeaseRef, RetryLease, SuspendLease
from conveyor.store.records import ClaimedTask
from conveyor.types import TaskState

log = structlog.get_logger("conveyor.worker")

Outcome = Finish | RetryLease | SuspendLease
_JSON_SCALARS = frozenset({str, int, bool})  # floats may be NaN, which JSON lacks


@dataclass(frozen=True, slots=True)
class TaskTimedOut(Exception):
    """A run took longer than its timeout; it is retried per the agent's policy."""

    seconds: float

    def __str__(self) -> str:
        return f"task exceeded its timeout of {self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class TaskStalled(Exception):
    """A run showed no progress for its agent's stall_timeout; it is retried per policy."""

    seconds: float

    def __str__(self) -> str:
        return f"task showed no progress for {self.seconds:g}s (stall_timeout)"


def error_record(exc: BaseException, attempt: int) -> dict[str, Any]:
    """The JSON kept as ``last_error``: type, message, traceback and attempt.

    NUL characters are replaced: jsonb cannot hold them, and one such message would fail
    the whole batch of outcomes it is written with.
    """
    return {
        "type": type(exc).__name__,
        "message": _printable(str(exc) or type(exc).__name__),
        "traceback": _printable("".join(traceback.format_exception(exc))),
        "attempt": attempt,
    }


def _printable(text: str) -> str:
    return text.replace("\x00", "\\0") if "\x00" in text else text


def caused_by_lost_database(exc: BaseException, gave_up: BaseException | None) -> bool:
    """True when a run failed only because Conveyor's database was out of reach.

    ``gave_up`` is the DatabaseUnavailable that the task's own store calls (``ctx.step``,
    ``ctx.once``, ...) gave up with after retrying; only that very error, raised as is or
    wrapped by the handler, releases the task without charging an attempt. A handler's own
    decision (Retry, Snooze, Cancel, PermanentError) stands, and so does an error it chose
    to hide (``raise ... from None``): anything else the handler raises is its own error.
    """
    if gave_up is None or isinstance(exc, TaskOutcome):
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if current is gave_up:
            return True
        seen.add(id(current))
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__suppress_context__:
            return False
        else:
            current = current.__context__
    return False


def parse_payload(agent: AgentSpec, task: ClaimedTask) -> Any:
    """The payload as the handler declared it: its pydantic model, or the plain dict.

    A payload that does not fit the model fails the task for good (no retry can fix it),
    with pydantic's account of each wrong field.
    """
    if agent.payload_model is None:
        return task.payload
    return validated_payload(agent.payload_model, task.payload)


def validated_payload(model: type[BaseModel], payload: Any) -> BaseModel:
    """``payload`` as ``model``, or PermanentError naming each wrong field (also used by an
    isolated child, which validates in its own process)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'payload'}: {error['msg']}"
            for error in exc.errors()
        )
        raise PermanentError(f"payload does not match {model.__name__}: {problems}") from None


def success(task: ClaimedTask, result: Any) -> Outcome:
    """Finish as succeeded; a result that is not JSON becomes a permanent error."""
    lease = LeaseRef(task.id, task.lease_token)
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    if result is None or (type(result) in _JSON_SCALARS and not _has_nul(result)):
        return Finish(lease, TaskState.SUCCEEDED, result=result)
    try:
        # allow_nan=False: PostgreSQL rejects NaN in jsonb, and one such result would fail the
        # whole batch of outcomes it is flushed with; so would a NUL character.
        text = json.dumps(result, allow_nan=False)
        if "\\u0000" in text:
            raise ValueError("it contains a NUL character (\\u0000), which jsonb cannot store")
    except (TypeError, ValueError) as exc:
        problem = PermanentError(f"handler returned a result that is not JSON: {exc}")
        return Finish(lease, TaskState.DEAD, error=error_record(problem, task.attempts))
    return Finish(lease, TaskState.SUCCEEDED, result=result)


def _has_nul(value: object) -> bool:
    return isinstance(value, str) and "\x00" in value


def suspension(task: ClaimedTask, suspended: TaskSuspended) -> Outcome:
    """The run ended in ``ctx.wait_for``: the task waits for the signal, holding nothing."""
    return SuspendLease(LeaseRef(task.id, task.lease_token), suspended.name, suspended.timeout)


def failure(task: ClaimedTask, agent: AgentSpec, exc: BaseException) -> Outcome:
    """Classify an exception raised by a handler (or by the runtime on its behalf)."""
    lease = LeaseRef(task.id, task.lease_token)
    record = error_record(exc, task.attempts)
    if isinstance(exc, Cancel):
        return Finish(lease, TaskState.CANCELLED, error=record)
    if isinstance(exc, Snooze):
        return RetryLease(lease, exc.seconds, error=None, count_attempt=False)
    decision = decide_after_failure(
        attempts=task.attempts,
        max_attempts=task.max_attempts,
        permanent=isinstance(exc, PermanentError),
        policy=agent.retry,
        uniform=random.random,
        requested_delay=exc.after if isinstance(exc, Retry) else None,
    )
    if isinstance(decision, GiveUp):
        record["gave_up"] = decision.reason
        return Finish(lease, TaskState.DEAD, error=record)
    return RetryLease(lease, decision.delay, error=record)


def first_suspension(group: BaseExceptionGroup[TaskSuspended]) -> TaskSuspended:
    """The first ``TaskSuspended`` of a group (``wait_for`` inside a TaskGroup)."""
    first = group.exceptions[0]
    return first if isinstance(first, TaskSuspended) else first_suspension(first)


def log_failure(task: ClaimedTask, exc: Exception, outcome: Outcome) -> None:
    """One line per failed run: what failed and what happens next."""
    if isinstance(outcome, SuspendLease):
        next_step = "waiting"
    elif isinstance(outcome, RetryLease):
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
