"""``/v1/tasks``: submit one or a batch, read and list, cancel, for the caller's tenant.

Every route reaches data only through ``store.for_tenant(tenant)``, the tenant-bound view:
another tenant's id is a missing id by construction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response

from conveyor.api.dependencies import Services, Tenant
from conveyor.api.problems import Problem, problem_responses
from conveyor.api.traceparent import trace_context
from conveyor.client.models import (
    QUEUE_PATTERN,
    TEXT_PATTERN,
    TaskBatch,
    TaskBatchCreated,
    TaskCreated,
    TaskPage,
    TaskSubmission,
    TaskView,
)
from conveyor.store.params import NewTask, TaskListParams
from conveyor.store.records import TaskRecord
from conveyor.types import TaskState

router = APIRouter(
    prefix="/v1/tasks",
    tags=["tasks"],
    responses=problem_responses(401, 403, 404, 413, 422, 429, 503),
)

TaskId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The task's id.")]


@router.post("", status_code=201, response_model=TaskCreated)
async def submit_task(
    body: TaskSubmission,
    svc: Services,
    tenant: Tenant,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    traceparent: Annotated[str | None, Header()] = None,
    tracestate: Annotated[str | None, Header()] = None,
) -> TaskCreated:
    """Submit one task. The same ``Idempotency-Key`` (header or field) returns the first."""
    if idempotency_key and body.idempotency_key and idempotency_key != body.idempotency_key:
        raise Problem(
            422,
            "validation",
            "the Idempotency-Key header and the idempotency_key field differ; send one",
        )
    key = idempotency_key or body.idempotency_key
    task = _new_task(body, tenant, key, trace_context(traceparent, tracestate))
    await svc.store.require_declared_queues([task.queue])
    result = await svc.submits.submit(tenant, task)
    if not result.created:
        response.status_code = 200
    return TaskCreated(id=result.task_id, created=result.created)


@router.post("/batch", status_code=201, response_model=TaskBatchCreated)
async def submit_batch(
    body: TaskBatch,
    svc: Services,
    tenant: Tenant,
    traceparent: Annotated[str | None, Header()] = None,
    tracestate: Annotated[str | None, Header()] = None,
) -> TaskBatchCreated:
    """Submit up to 10,000 tasks in one statement: all are stored, or none."""
    context = trace_context(traceparent, tracestate)
    tasks = [_new_task(t, tenant, t.idempotency_key, context) for t in body.tasks]
    await svc.store.require_declared_queues(sorted({t.queue for t in tasks}))
    results = await svc.store.for_tenant(tenant).enqueue_batch(tasks)
    return TaskBatchCreated(tasks=[TaskCreated(id=r.task_id, created=r.created) for r in results])


@router.get("/{task_id}", response_model=TaskView)
async def get_task(task_id: TaskId, svc: Services, tenant: Tenant) -> TaskView:
    """A task of the caller's tenant, running or finished; 404 for any other id."""
    return task_view(await svc.store.for_tenant(tenant).get_task(task_id))


@router.get("", response_model=TaskPage)
async def list_tasks(
    svc: Services,
    tenant: Tenant,
    state: Annotated[TaskState | None, Query(description="Only tasks in this state.")] = None,
    queue: Annotated[str | None, Query(pattern=QUEUE_PATTERN)] = None,
    group_id: Annotated[
        str | None, Query(min_length=1, max_length=128, pattern=TEXT_PATTERN)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="next_cursor of the previous page.")
    ] = None,
) -> TaskPage:
    """The tenant's tasks, running and finished, newest first, a page at a time."""
    query = TaskListParams(
        limit=limit, before_id=cursor, queue=queue, group_id=group_id, state=state
    )
    found = await svc.store.for_tenant(tenant).list_tasks(query)
    more = len(found) == limit
    return TaskPage(
        tasks=[task_view(r) for r in found], next_cursor=found[-1].id if more and found else None
    )


@router.post("/{task_id}/cancel", response_model=TaskView)
async def cancel_task(task_id: TaskId, svc: Services, tenant: Tenant) -> TaskView:
    """Cancel a task: at once if it waits, by asking its worker if it runs."""
    view = svc.store.for_tenant(tenant)
    await view.cancel(task_id, reason="cancelled over the API")
    return task_view(await view.get_task(task_id))


def _new_task(
    body: TaskSubmission, tenant: str, key: str | None, trace: dict[str, str] | None
) -> NewTask:
    if body.run_at is not None and body.delay_seconds is not None:
        raise Problem(422, "validation", "give run_at or delay_seconds, not both")
    run_at = body.run_at
    if body.delay_seconds:
        run_at = datetime.now(UTC) + timedelta(seconds=body.delay_seconds)
    return NewTask(
        queue=body.queue,
        payload=body.payload,
        tenant_id=tenant,
        priority=body.priority,
        run_at=run_at,
        max_attempts=body.max_attempts,
        timeout_seconds=body.timeout_seconds,
        idempotency_key=key,
        group_id=body.group_id,
        trace_context=trace,
    )


def task_view(record: TaskRecord) -> TaskView:
    """The tenant's view of a stored task."""
    return TaskView(
        id=record.id,
        queue=record.queue,
        state=record.state,
        priority=record.priority,
        attempts=record.attempts,
        max_attempts=record.max_attempts,
        payload=record.payload,
        result=record.result,
        last_error=record.last_error,
        idempotency_key=record.idempotency_key,
        group_id=record.group_id,
        parent_id=record.parent_id,
        run_at=record.run_at,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )
