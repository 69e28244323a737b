"""``/v1/admin/queues``: every queue with its depth, switches and limits; pause, resume,
and a role's limits across tenants. Admin keys only.

Like ``conveyor queues pause``, pausing or limiting a queue no worker has served yet is
allowed (an operator may pause a role before deploying its workers); it declares the queue.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from conveyor.api.dependencies import Services, admin
from conveyor.api.problems import V1_STATUSES, problem_responses
from conveyor.client.admin_models import QueueLimitsWrite, QueueList, QueueView
from conveyor.client.models import QUEUE_PATTERN
from conveyor.store.params import QueueLimits
from conveyor.store.postgres import PostgresStore

router = APIRouter(
    prefix="/v1/admin/queues",
    tags=["admin"],
    dependencies=[Depends(admin)],
    responses=problem_responses(*V1_STATUSES),
)

QueueName = Annotated[str, Path(pattern=QUEUE_PATTERN, description="The queue (role).")]


@router.get("", response_model=QueueList)
async def list_queues(svc: Services) -> QueueList:
    """Every known queue: what declares it, paused or not, its limits and its depth."""
    return QueueList(queues=await queue_views(svc.store))


@router.post("/{queue}/pause", response_model=QueueView)
async def pause_queue(queue: QueueName, svc: Services) -> QueueView:
    """Stop workers claiming from the queue; submissions are still accepted."""
    await svc.store.pause_queue(queue)
    return await _one(svc.store, queue)


@router.post("/{queue}/resume", response_model=QueueView)
async def resume_queue(queue: QueueName, svc: Services) -> QueueView:
    """Let workers claim from the queue again (idle workers are woken at once)."""
    await svc.store.resume_queue(queue)
    return await _one(svc.store, queue)


@router.patch("/{queue}", response_model=QueueView)
async def set_queue_limits(queue: QueueName, body: QueueLimitsWrite, svc: Services) -> QueueView:
    """Set the role's global cap (all tenants together; 0 removes it), its starvation guard,
    its backpressure threshold (0 removes it) and whether its lifecycle events are logged;
    fields left out keep their value."""
    await svc.store.set_queue_limits(
        QueueLimits(queue, body.max_running, body.aging_seconds, body.depth_threshold, body.events)
    )
    return await _one(svc.store, queue)


async def queue_views(store: PostgresStore) -> list[QueueView]:
    """Every queue that is declared, has tasks, or has settings, by name."""
    declared = {d.name: d.sources for d in await store.queue_declarations()}
    depth = {s.queue: s for s in await store.queue_status()}
    settings = {s.name: s for s in await store.list_queue_settings()}
    views = []
    for name in sorted(set(declared) | set(depth) | set(settings)):
        status, switch = depth.get(name), settings.get(name)
        views.append(
            QueueView(
                name=name,
                declared_by=list(declared.get(name, ())),
                paused=switch.paused if switch else False,
                max_running=switch.max_running if switch else None,
                aging_seconds=switch.aging_seconds if switch else None,
                depth_threshold=switch.depth_threshold if switch else None,
                events=switch.events if switch else True,
                queued=status.queued if status else 0,
                scheduled=status.scheduled if status else 0,
                running=status.running if status else 0,
                waiting=status.waiting if status else 0,
                dead=status.dead if status else 0,
                oldest_queued_seconds=status.oldest_queued_seconds if status else None,
            )
        )
    return views


async def _one(store: PostgresStore, queue: str) -> QueueView:
    return next(v for v in await queue_views(store) if v.name == queue)
