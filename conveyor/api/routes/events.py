"""``/v1/events`` and ``/v1/tasks/{id}/events``: the event log as Server-Sent Events.

Each event is a frame ``id: <position>``, ``event: <kind>``, ``data: <the event as JSON>``.
A client that reconnects sends the last ``id`` it saw as ``Last-Event-ID`` (browsers do it
themselves; the ``last_event_id`` query parameter is for clients that cannot set headers)
and receives exactly the events after it. The data is read through the tenant's view of
the store, and live events come from the process's hub (``api/events/hub.py``): no query
per client per event. docs/events.md has the kinds, the fields and a browser example.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query
from starlette.responses import StreamingResponse

from conveyor.api.dependencies import Services, Tenant
from conveyor.api.events.hub import EventHub
from conveyor.api.events.streams import finished_task_replay, task_stream, tenant_stream
from conveyor.api.problems import V1_STATUSES, Problem, problem_responses
from conveyor.api.services import ApiServices
from conveyor.api.sse import event_stream_responses, sse_response
from conveyor.client.models import QUEUE_PATTERN, TEXT_PATTERN
from conveyor.core.events import ORIGIN, EventPosition
from conveyor.store.event_records import EventFilter

router = APIRouter(tags=["events"], responses=problem_responses(*V1_STATUSES))

LastEventIdHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="Resume after this event (the id: of the last event received).",
    ),
]
LastEventIdQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Resume after this event, for clients that cannot set Last-Event-ID "
        "(the header wins when both are sent).",
    ),
]


@router.get(
    "/v1/events",
    response_class=StreamingResponse,
    responses=event_stream_responses("The tenant's events as they happen (text/event-stream)."),
)
async def tenant_events(
    svc: Services,
    tenant: Tenant,
    header_id: LastEventIdHeader = None,
    last_event_id: LastEventIdQuery = None,
    group_id: Annotated[
        str | None,
        Query(min_length=1, max_length=128, pattern=TEXT_PATTERN, description="Only this group."),
    ] = None,
    queue: Annotated[
        str | None, Query(pattern=QUEUE_PATTERN, description="Only this queue.")
    ] = None,
    task_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Only this task.")] = None,
    start: Annotated[
        Literal["now", "start"],
        Query(
            alias="from",
            description="Without Last-Event-ID: 'now' (the default) streams events from now "
            "on; 'start' replays the tenant's log first (as far as retention kept it).",
        ),
    ] = "now",
) -> StreamingResponse:
    """The caller's tenant's events, narrowed by group, queue or task; the stream does not
    end (reconnect with ``Last-Event-ID`` to resume exactly where it stopped)."""
    hub = _hub(svc)
    after = _resume_point(header_id, last_event_id)
    if after is None and start == "start":
        after = ORIGIN
    narrow = EventFilter(group_id=group_id, queue=queue, task_id=task_id)
    view = svc.store.for_tenant(tenant)
    return sse_response(tenant_stream(hub, view, narrow, after), keepalive_seconds=None)


@router.get(
    "/v1/tasks/{task_id}/events",
    response_class=StreamingResponse,
    responses=event_stream_responses(
        "The task's events from its beginning (or after Last-Event-ID); the stream ends "
        "after the task's final event (succeeded, dead or cancelled)."
    ),
)
async def task_events(
    svc: Services,
    tenant: Tenant,
    task_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="The task's id.")],
    header_id: LastEventIdHeader = None,
    last_event_id: LastEventIdQuery = None,
) -> StreamingResponse:
    """One task's events, replayed from its beginning and then live, ending after its final
    event; a finished task's log is replayed, then the stream ends. 404 for another
    tenant's task."""
    hub = _hub(svc)
    after = _resume_point(header_id, last_event_id) or ORIGIN
    view = svc.store.for_tenant(tenant)
    record = await view.get_task(task_id)  # TaskNotFound (404) for another tenant's task
    if record.state.is_terminal:  # a replay: no long silence, no keep-alive needed
        return sse_response(finished_task_replay(hub, view, task_id, after), keepalive_seconds=None)
    return sse_response(task_stream(hub, view, task_id, after), keepalive_seconds=None)


def _hub(svc: ApiServices) -> EventHub:
    if svc.events is None:
        raise Problem(503, "unavailable", "this API process serves no event streams")
    return svc.events


def _resume_point(header: str | None, query: str | None) -> EventPosition | None:
    """The position to resume after: the header's (the newer: a browser sends it when it
    reconnects to the URL it first opened), else the query's; 422 if malformed."""
    for field, where, text in (
        ("Last-Event-ID", "header", header),
        ("last_event_id", "query", query),
    ):
        if text is None or not text.strip():
            continue
        try:
            return EventPosition.parse(text)
        except ValueError as exc:
            message = str(exc)
            raise Problem(
                422,
                "validation",
                f"{field}: {message}",
                errors=[{"field": field, "location": [where, field], "message": message}],
            ) from None
    return None
