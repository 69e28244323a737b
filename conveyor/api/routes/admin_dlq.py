"""``/v1/admin/dlq``: the dead-letter queue across tenants — list with filters, inspect one
with its last error, replay one, many by id, or every match of a filter. Admin keys only.

Replaying puts a dead task back in its queue with the same id and a fresh attempt budget.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from conveyor.api.dependencies import Services, admin
from conveyor.api.problems import V1_STATUSES, Problem, problem_responses
from conveyor.client.admin_models import (
    TENANT_PATTERN,
    DeadTaskList,
    DeadTaskView,
    Replayed,
    ReplayRequest,
)
from conveyor.client.models import QUEUE_PATTERN
from conveyor.errors import TaskNotFound
from conveyor.store.params import ReplayFilter
from conveyor.store.records import DeadTask, TaskRecord
from conveyor.types import TaskState

router = APIRouter(
    prefix="/v1/admin/dlq",
    tags=["admin"],
    dependencies=[Depends(admin)],
    responses=problem_responses(*V1_STATUSES),
)

TaskId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The dead task's id.")]


@router.get("", response_model=DeadTaskList)
async def list_dead(
    svc: Services,
    queue: Annotated[str | None, Query(pattern=QUEUE_PATTERN)] = None,
    tenant_id: Annotated[str | None, Query(pattern=TENANT_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadTaskList:
    """Dead tasks, newest first, optionally of one queue or tenant."""
    dead = await svc.store.list_dead(queue=queue, tenant_id=tenant_id, limit=limit)
    return DeadTaskList(tasks=[_dead_view(d) for d in dead])


@router.get("/{task_id}", response_model=DeadTaskView)
async def get_dead(task_id: TaskId, svc: Services) -> DeadTaskView:
    """One dead task with the error that killed it; 404 if no dead task has that id."""
    try:
        record = await svc.store.get_task(task_id)
    except TaskNotFound:
        raise _not_dead(task_id) from None
    if record.state is not TaskState.DEAD:
        raise _not_dead(task_id)
    return _record_view(record)


@router.post("/{task_id}/replay", response_model=Replayed)
async def replay_one(task_id: TaskId, svc: Services) -> Replayed:
    """Put one dead task back in its queue; 404 if no dead task has that id."""
    replayed = await svc.store.replay_dead(ReplayFilter(task_ids=(task_id,)))
    if not replayed:
        raise _not_dead(task_id)
    return Replayed(ids=replayed)


@router.post("/replay", response_model=Replayed)
async def replay_many(body: ReplayRequest, svc: Services) -> Replayed:
    """Replay dead tasks by ids, queue and tenant (each narrows), or ``all``. Ids that are
    not dead are skipped: the answer lists those replayed."""
    if not (body.ids or body.queue or body.tenant_id or body.all):
        raise Problem(422, "validation", "say what to replay: ids, queue, tenant_id or all")
    which = ReplayFilter(
        tuple(body.ids) if body.ids else None, body.queue, body.tenant_id, body.all
    )
    return Replayed(ids=await svc.store.replay_dead(which))


def _not_dead(task_id: int) -> Problem:
    return Problem(404, "not-found", f"no dead task {task_id}")


def _dead_view(dead: DeadTask) -> DeadTaskView:
    return DeadTaskView(
        id=dead.id,
        tenant_id=dead.tenant_id,
        queue=dead.queue,
        attempts=dead.attempts,
        max_attempts=dead.max_attempts,
        last_error=dead.last_error,
        payload=dead.payload,
        created_at=dead.created_at,
        finished_at=dead.finished_at,
    )


def _record_view(record: TaskRecord) -> DeadTaskView:
    return DeadTaskView(
        id=record.id,
        tenant_id=record.tenant_id,
        queue=record.queue,
        attempts=record.attempts,
        max_attempts=record.max_attempts,
        last_error=record.last_error,
        payload=record.payload,
        created_at=record.created_at,
        finished_at=record.finished_at,
    )
