"""``/v1/groups``: campaigns of the caller's tenant — create one with its follow-up, read
its counts by state with its LLM tokens and cost, list its tasks a page at a time.

Every route reaches data only through ``store.for_tenant(tenant)``: another tenant's group
answers 404 exactly like a group that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from conveyor.api.dependencies import Services, Tenant
from conveyor.api.problems import V1_STATUSES, problem_responses
from conveyor.api.reports import caps_view, group_usage
from conveyor.api.routes.tasks import task_view
from conveyor.client.models import GroupCreate, GroupView, TaskPage
from conveyor.core.llm_caps import CapScope, LLMCaps
from conveyor.errors import GroupNotFound
from conveyor.store.params import NewTask, TaskListParams
from conveyor.store.tenant import TenantStore
from conveyor.types import TaskState

router = APIRouter(
    prefix="/v1/groups",
    tags=["groups"],
    responses=problem_responses(*V1_STATUSES),
)

GroupId = Annotated[str, Path(min_length=1, max_length=128, description="The group's id.")]


@router.post(
    "",
    status_code=201,
    response_model=GroupView,
    responses={200: {"model": GroupView, "description": "The group existed: updated"}},
)
async def create_group(
    body: GroupCreate, svc: Services, tenant: Tenant, response: Response
) -> GroupView:
    """Register a campaign (``201``), or replace the follow-up and caps of one that exists
    (``200``).

    Tasks join it by naming its id as their ``group_id``; ``on_complete`` is enqueued once
    when none of its tasks waits or runs any more; ``caps`` bound the LLM calls, tokens and
    USD of all its tasks together.
    """
    view = svc.store.for_tenant(tenant)
    follow_up = None
    if body.on_complete is not None:
        spec = body.on_complete
        await svc.declared.require([spec.queue])
        follow_up = NewTask(
            queue=spec.queue,
            payload=spec.payload,
            priority=spec.priority,
            max_attempts=spec.max_attempts,
            timeout_seconds=spec.timeout_seconds,
        )
    existed = await _exists(view, body.id)
    caps = body.caps.caps() if body.caps is not None else LLMCaps()  # left out: none
    await view.create_group(body.id, on_complete=follow_up, caps=caps)
    if existed:
        response.status_code = 200
    return await _group_view(view, body.id)


@router.get("/{group_id}", response_model=GroupView)
async def get_group(group_id: GroupId, svc: Services, tenant: Tenant) -> GroupView:
    """A campaign's tasks by state, whether it completed, its LLM tokens and cost, and its
    caps with what they counted so far."""
    return await _group_view(svc.store.for_tenant(tenant), group_id)


@router.get("/{group_id}/tasks", response_model=TaskPage)
async def list_group_tasks(
    group_id: GroupId,
    svc: Services,
    tenant: Tenant,
    state: Annotated[TaskState | None, Query(description="Only tasks in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="next_cursor of the previous page.")
    ] = None,
) -> TaskPage:
    """The campaign's tasks, newest first, a page at a time (as ``GET /v1/tasks``)."""
    view = svc.store.for_tenant(tenant)
    query = TaskListParams(limit=limit, before_id=cursor, group_id=group_id, state=state)
    found = await view.list_tasks(query)
    if not found:
        await view.group_status(group_id)  # an empty page of an unknown group is a 404
    more = len(found) == limit
    return TaskPage(
        tasks=[task_view(r) for r in found], next_cursor=found[-1].id if more and found else None
    )


async def _exists(view: TenantStore, group_id: str) -> bool:
    try:
        await view.group_status(group_id)
    except GroupNotFound:
        return False
    return True


async def _group_view(view: TenantStore, group_id: str) -> GroupView:
    status = await view.group_status(group_id)
    return GroupView(
        id=group_id,
        counts=status.counts,
        total=status.total,
        completed_at=status.completed_at,
        follow_up_id=status.follow_up_id,
        usage=await group_usage(view, group_id),
        caps=caps_view(await view.llm_cap_counter(CapScope.GROUP, group_id)),
    )
