"""``/v1/tasks``: submit one or a batch, read and list, cancel, signal, for the caller's
tenant.

Every route reaches data only through ``store.for_tenant(tenant)``, the tenant-bound view:
another tenant's id is a missing id by construction.

A submit passes, in order: the per-key rate limit (in the ``caller`` dependency), the
queue's backpressure (``backpressure.py``, from memory), a declarative role's prompt
template rendered over the payload (``agent_definitions.py``, from memory), then the store, where an
idempotency key carries the request's fingerprint and a debounced task replaces the payload
of its waiting twin. A refused submit stores nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response

from conveyor.api.dependencies import Services, Tenant
from conveyor.api.problems import V1_STATUSES, Problem, problem_responses
from conveyor.api.reports import caps_view, task_usage
from conveyor.api.services import ApiServices
from conveyor.api.traceparent import trace_context
from conveyor.client.models import (
    QUEUE_PATTERN,
    TEXT_PATTERN,
    Instant,
    SignalDelivered,
    TaskBatch,
    TaskBatchCreated,
    TaskCreated,
    TaskPage,
    TaskSubmission,
    TaskView,
)
from conveyor.core.json_documents import DocumentProblem, check_document, fingerprint
from conveyor.core.llm_caps import CapScope
from conveyor.core.waits import SIGNAL_NAME_PATTERN
from conveyor.errors import SignalRefused
from conveyor.store.params import NewTask, TaskListParams
from conveyor.store.records import EnqueueResult, TaskRecord
from conveyor.types import TaskState

router = APIRouter(
    prefix="/v1/tasks",
    tags=["tasks"],
    responses=problem_responses(*V1_STATUSES),
)

TaskId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The task's id.")]
SignalName = Annotated[
    str,
    Path(
        pattern=SIGNAL_NAME_PATTERN,
        description="The signal's name, as the agent awaits it: ctx.wait_for(name).",
    ),
]


@router.post(
    "",
    status_code=201,
    response_model=TaskCreated,
    responses={200: {"model": TaskCreated, "description": "An earlier task (same key)"}},
)
async def submit_task(
    body: TaskSubmission,
    svc: Services,
    tenant: Tenant,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    traceparent: Annotated[str | None, Header()] = None,
    tracestate: Annotated[str | None, Header()] = None,
) -> TaskCreated:
    """Submit one task. The same ``Idempotency-Key`` (header or field) returns the first;
    with another body it is refused (422 ``idempotency-conflict``)."""
    if idempotency_key and body.idempotency_key and idempotency_key != body.idempotency_key:
        raise Problem(
            422,
            "validation",
            "the Idempotency-Key header and the idempotency_key field differ; send one",
        )
    key = idempotency_key or body.idempotency_key
    if key is not None and body.debounce is not None:
        raise Problem(
            422,
            "validation",
            "debounce and an idempotency key do not go together: the debounce key already "
            "decides what a repeated submit does",
        )
    _check_load(svc, [body])
    if svc.agents is not None:  # a declarative role's template must render this payload
        svc.agents.check([("", body.queue, body.payload)])
    task = _new_task(body, tenant, key, trace_context(traceparent, tracestate))
    await svc.declared.require([task.queue])
    result: EnqueueResult
    if task.debounce_key is not None:
        result = await svc.store.for_tenant(tenant).enqueue_debounced(task)
    else:  # concurrent single submits of a tenant share one statement (api/coalesce.py)
        result = await svc.submits.submit(tenant, task)
    if result.created and svc.depth is not None:
        svc.depth.accepted([task.queue])
    if not result.created:
        response.status_code = 200
    return TaskCreated(id=result.task_id, created=result.created, replaced=result.replaced)


@router.post("/batch", status_code=201, response_model=TaskBatchCreated)
async def submit_batch(
    body: TaskBatch,
    svc: Services,
    tenant: Tenant,
    traceparent: Annotated[str | None, Header()] = None,
    tracestate: Annotated[str | None, Header()] = None,
) -> TaskBatchCreated:
    """Submit up to 10,000 tasks in one statement: all are stored, or none."""
    for index, item in enumerate(body.tasks):
        if item.debounce is not None:
            raise Problem(
                422,
                "validation",
                f"tasks.{index}.debounce: debounce is for single submits (POST /v1/tasks)",
            )
    _check_load(svc, body.tasks)
    if svc.agents is not None:
        svc.agents.check([(f"tasks.{i}.", t.queue, t.payload) for i, t in enumerate(body.tasks)])
    context = trace_context(traceparent, tracestate)
    tasks = [_new_task(t, tenant, t.idempotency_key, context) for t in body.tasks]
    await svc.declared.require(t.queue for t in tasks)
    results = await svc.store.for_tenant(tenant).enqueue_batch(tasks)
    if svc.depth is not None:
        svc.depth.accepted(t.queue for t, r in zip(tasks, results, strict=True) if r.created)
    return TaskBatchCreated(tasks=[TaskCreated(id=r.task_id, created=r.created) for r in results])


@router.get("/{task_id}", response_model=TaskView)
async def get_task(task_id: TaskId, svc: Services, tenant: Tenant) -> TaskView:
    """A task of the caller's tenant, running or finished, with its LLM usage and cost so
    far and its caps (what they counted, what is in flight); 404 for any other id."""
    view = svc.store.for_tenant(tenant)
    record = await view.get_task(task_id)
    usage = await task_usage(view, task_id, record.created_at)
    caps = caps_view(await view.llm_cap_counter(CapScope.RUN, str(task_id)))
    return task_view(record).model_copy(update={"usage": usage, "caps": caps})


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
    created_after: Annotated[
        Instant | None, Query(description="Only tasks created at or after this instant.")
    ] = None,
    created_before: Annotated[
        Instant | None, Query(description="Only tasks created before this instant.")
    ] = None,
) -> TaskPage:
    """The tenant's tasks, running and finished, newest first, a page at a time."""
    query = TaskListParams(
        limit=limit,
        before_id=cursor,
        queue=queue,
        group_id=group_id,
        state=state,
        created_after=created_after,
        created_before=created_before,
    )
    found = await svc.store.for_tenant(tenant).list_tasks(query)
    more = len(found) == limit
    return TaskPage(
        tasks=[task_view(r) for r in found], next_cursor=found[-1].id if more and found else None
    )


@router.post(
    "/{task_id}/signals/{name}",
    status_code=201,
    response_model=SignalDelivered,
    responses={
        200: {"model": SignalDelivered, "description": "The same signal, delivered before"},
        **problem_responses(409),
    },
    openapi_extra={
        "requestBody": {
            "required": False,
            "description": "Any JSON document: what ctx.wait_for(name) returns (empty: null).",
            "content": {"application/json": {"schema": {}}},
        }
    },
)
async def signal_task(
    task_id: TaskId,
    name: SignalName,
    svc: Services,
    tenant: Tenant,
    request: Request,
    response: Response,
) -> SignalDelivered:
    """Deliver signal ``name`` to a task: a task waiting for it resumes, and one that waits
    for it later gets it at once. The first signal of a name holds: the same body again
    answers 200 (a duplicate), another body 409, as does a signal to a finished task or one
    after the wait timed out."""
    payload = signal_payload(await request.body())
    try:
        delivery = await svc.store.for_tenant(tenant).signal(task_id, name, payload)
    except SignalRefused as exc:
        raise Problem(
            409, "signal-refused", str(exc), task_id=task_id, signal=name, reason=exc.reason
        ) from None
    if delivery.duplicate:
        response.status_code = 200
    return SignalDelivered(
        task_id=delivery.task_id,
        signal=delivery.name,
        state=delivery.state,
        resumed=delivery.resumed,
        duplicate=delivery.duplicate,
    )


def signal_payload(raw: bytes) -> Any:
    """The body as a JSON document (empty: null), whatever its Content-Type says (``curl
    -d`` sends form encoding); 422 naming the body when it is not storable JSON."""
    if not raw.strip():
        return None

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON (use null or a string)")

    try:
        payload = json.loads(raw.decode("utf-8"), parse_constant=refuse)
        check_document(payload, path="body")
    except DocumentProblem as exc:
        raise Problem(422, "validation", str(exc)) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise Problem(422, "validation", f"body: not JSON in UTF-8 ({exc})") from None
    return payload


@router.post("/{task_id}/cancel", response_model=TaskView)
async def cancel_task(task_id: TaskId, svc: Services, tenant: Tenant) -> TaskView:
    """Cancel a task: at once if it waits, by asking its worker if it runs."""
    view = svc.store.for_tenant(tenant)
    await view.cancel(task_id, reason="cancelled over the API")
    return task_view(await view.get_task(task_id))


def _check_load(svc: ApiServices, bodies: list[TaskSubmission]) -> None:
    """Refuse (429/503) before any round trip if a queue sheds the tasks' priorities."""
    if svc.depth is not None:
        svc.depth.check((b.queue, b.priority) for b in bodies)


def _new_task(
    body: TaskSubmission, tenant: str, key: str | None, trace: dict[str, str] | None
) -> NewTask:
    if body.run_at is not None and body.delay_seconds is not None:
        raise Problem(422, "validation", "give run_at or delay_seconds, not both")
    run_at = body.run_at
    if body.delay_seconds:
        run_at = datetime.now(UTC) + timedelta(seconds=body.delay_seconds)
    debounce_key = None
    if body.debounce is not None:
        if run_at is not None:
            raise Problem(422, "validation", "debounce sets the start; give no run_at or delay")
        debounce_key = body.debounce.key
        run_at = datetime.now(UTC) + timedelta(seconds=body.debounce.seconds)
    # The fingerprint of what the client sent, the key left out: a retry of the same
    # request matches, another request under the same key does not.
    document = body.model_dump(mode="json", exclude={"idempotency_key"})
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
        idempotency_fingerprint=fingerprint(document) if key is not None else None,
        debounce_key=debounce_key,
        llm_caps=body.caps.caps() if body.caps is not None else None,
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
        waiting_for=record.waiting_for,
        wait_until=record.wait_until,
    )
