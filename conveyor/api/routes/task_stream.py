"""``GET /v1/tasks/{id}/stream``: a task's LLM output as it is generated, over SSE.

Each ``chunk`` event carries text an agent's ``ctx.llm.stream`` produced (``call_end``
marks the end of one streamed call); its id ``"<run>-<seq>"`` is the resume point: send it
back as ``Last-Event-ID`` and the stream continues right after it, while the task runs and
for ``CONVEYOR_STREAM_RETENTION_SECONDS`` after it ends. The stream closes with an ``end``
event carrying the task's state once the task has ended and its output has been sent. A
retried task's later run has greater ids: a viewer sees each run's output in order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from starlette.responses import StreamingResponse

from conveyor.api.dependencies import Services, Tenant
from conveyor.api.live_output import ENDED, LiveOutputHub
from conveyor.api.problems import V1_STATUSES, Problem, problem_responses
from conveyor.api.sse import KEEPALIVE, event_stream_responses, frame, sse_response
from conveyor.core.events import parse_chunk_cursor
from conveyor.store.event_records import LiveChunk
from conveyor.store.tenant import TenantStore

router = APIRouter(prefix="/v1/tasks", tags=["events"], responses=problem_responses(*V1_STATUSES))

TaskId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The task's id.")]

STREAM_RESPONSE = event_stream_responses(
    "Server-Sent Events: `chunk` (text), `call_end`, then `end` (the task's state)."
)


@router.get("/{task_id}/stream", response_class=StreamingResponse, responses=STREAM_RESPONSE)
async def stream_task_output(
    task_id: TaskId,
    svc: Services,
    tenant: Tenant,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    after: Annotated[
        str | None,
        Query(
            alias="last_event_id",
            max_length=64,
            description="Resume after this id (for clients that cannot set Last-Event-ID).",
        ),
    ] = None,
) -> StreamingResponse:
    """Relay the task's LLM output as it is generated; resumable with ``Last-Event-ID``."""
    resume = last_event_id or after
    cursor = (0, 0)
    if resume is not None:
        try:
            cursor = parse_chunk_cursor(resume)
        except ValueError as exc:
            raise Problem(422, "invalid-event-id", str(exc)) from None
    view = svc.store.for_tenant(tenant)
    await view.get_task(task_id)  # TaskNotFound (404) for a missing or another tenant's task
    hub = svc.live
    if hub is None:
        raise Problem(503, "unavailable", "live output is not served by this process")
    frames = _frames(hub, view, task_id, cursor, svc.sse_keepalive_seconds)
    return sse_response(frames, keepalive_seconds=None)


async def _frames(
    hub: LiveOutputHub,
    view: TenantStore,
    task_id: int,
    cursor: tuple[int, int],
    keepalive: float,
) -> AsyncIterator[bytes]:
    # Registered on the first read, not by the route: a client gone before the body starts
    # leaves an unstarted generator, whose close runs no finally (the viewer would stay).
    viewer = hub.watch(view.tenant_id, task_id, cursor)
    try:
        while True:
            try:  # a keep-alive from this task, not a wrapper's task per frame
                async with asyncio.timeout(keepalive):
                    item = await viewer.queue.get()
            except TimeoutError:
                yield KEEPALIVE
                continue
            if isinstance(item, LiveChunk):
                kind = "chunk" if item.kind == "chunk" else "call_end"
                data = (
                    {"text": item.text, "run": item.run} if kind == "chunk" else {"run": item.run}
                )
                yield frame(_json(data), event=kind, event_id=f"{item.run}-{item.seq}")
                continue
            if item is ENDED:
                task = await view.get_task(viewer.task_id)
                yield frame(_json({"task_id": task.id, "state": str(task.state)}), event="end")
            return  # ended, or behind: the client resumes with Last-Event-ID
    finally:
        hub.unwatch(viewer)


def _json(data: object) -> str:
    return json.dumps(data, separators=(",", ":"))
