"""One SSE stream of the event log: catch up from the log, then follow the hub.

A stream that resumes after position P (``Last-Event-ID``) must send every later event
once, in order. It does so in three steps:

1. **Subscribe first.** From now on the hub hands the stream every event it fans out, that
   is every event after the hub's cursor C at this moment (the hub reads the log in order
   and moves C only together with a fan-out, which never awaits).
2. **Read the backlog** after P from the log through the tenant's view, page by page, until
   a short page. Every event at or before C is in it: the hub read those below the horizon
   of its own read, and the store never reads below a horizon it has seen (the database's
   can move back, see queries/events.sql), so the backlog's later reads return each.
   Nothing after P and before C is missed.
3. **Drain the subscription**, skipping positions at or before the last one sent: the
   events after C that the backlog already carried. Positions only grow, so nothing is
   sent twice and the order is the log's.

If the subscription overflows during step 2 (a long catch-up while the tenant is busy), it
is dropped and the three steps start again from the last position sent. If it overflows in
step 3, the client is too slow: the stream ends (a resumable close; the client reconnects
with ``Last-Event-ID``). A task's stream ends after the task's final event (and the
events that committed before it but sit after it, see ``settle_after_final``), with an
``end`` frame that tells a client not to reconnect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from conveyor.api import sse
from conveyor.api.events.hub import EventHub, StreamCut, delivery
from conveyor.core.events import EventPosition, is_final
from conveyor.store.event_records import EventFilter, TaskEvent
from conveyor.store.ports import TenantTasks

PAGE = 1000
"""Events per backlog read."""

SETTLE_SECONDS = 0.02
"""How often a finished task's replay looks whether its log is complete yet."""

END_EVENT = "end"
"""The last frame of a task's stream (no ``id:``, so a resume point stays the final event):
the task is finished; a client stops here instead of reconnecting (``EventSource`` would)."""

ReadAfter = Callable[[EventPosition], Awaitable[list[TaskEvent]]]


def end_frame(task_id: int) -> bytes:
    """The ``end`` frame of task ``task_id``'s stream."""
    return sse.frame(json.dumps({"task_id": task_id}), event=END_EVENT)


async def follow(
    hub: EventHub,
    tenant_id: str,
    narrow: EventFilter,
    after: EventPosition | None,
    read: ReadAfter,
    *,
    until_final: bool = False,
) -> AsyncIterator[bytes]:
    """Frames of the events after ``after`` (None: from now on) that ``narrow`` passes,
    read by ``read`` from the log then from the hub; ends after a final event when
    ``until_final``, and when the subscription is cut. While following, the hub's
    keep-alive cue yields a keep-alive comment (no timer per stream: see hub.py)."""
    last = after
    from_now = after is None
    while True:
        sub = hub.subscribe(tenant_id, narrow)
        try:
            if from_now:
                # From the log's head as it is now, not from the hub's cursor: that may lag
                # behind it (it moves seldom while nobody listens).
                from_now = False
                last = await hub.log.event_head()
            elif last is not None:
                while True:
                    batch = await read(last)
                    for event in batch:
                        yield delivery(event).frame
                        last = event.position
                        if until_final and is_final(event.kind):
                            async for frame in settle_after_final(hub, read, last):
                                yield frame
                            yield end_frame(event.task_id)
                            return
                    if len(batch) < PAGE:
                        break
                if sub.cut:  # overflowed while catching up: subscribe afresh, read on
                    if hub.closing:  # ... unless the process is stopping
                        return
                    continue
            while True:
                taken = await sub.take()
                if not taken:
                    yield sse.KEEPALIVE
                    continue
                for item in taken:
                    if last is not None and item.event.position <= last:
                        continue
                    yield item.frame
                    last = item.event.position
                    if until_final and is_final(item.event.kind):
                        async for frame in settle_after_final(hub, read, last):
                            yield frame
                        yield end_frame(item.event.task_id)
                        return
        except StreamCut:
            return
        finally:
            hub.unsubscribe(sub)


async def settle_after_final(
    hub: EventHub, read: ReadAfter, last: EventPosition
) -> AsyncIterator[bytes]:
    """The task's events positioned after its final one ``last`` that had committed when
    it was read, then nothing more.

    Positions follow transaction ids, not commits: a statement that took its id before
    waiting for the task's row (a batched finish blocked behind a signal's delivery) logs
    the final event below an event that committed before it. Once the horizon passes
    every transaction committed by now, one more read returns each of those.
    """
    mark = await hub.log.event_horizon()
    while True:
        settled = (await hub.log.event_horizon()).covers(mark)
        batch = await read(last)
        for event in batch:
            yield delivery(event).frame
            last = event.position
        if len(batch) == PAGE:
            continue
        if settled:
            return
        await asyncio.sleep(SETTLE_SECONDS)


def tenant_stream(
    hub: EventHub,
    view: TenantTasks,
    narrow: EventFilter,
    after: EventPosition | None,
) -> AsyncIterator[bytes]:
    """The tenant's events passing ``narrow`` after ``after`` (None: from now on)."""
    return follow(
        hub,
        view.tenant_id,
        narrow,
        after,
        lambda last: view.events(last, narrow, PAGE),
    )


def task_stream(
    hub: EventHub,
    view: TenantTasks,
    task_id: int,
    after: EventPosition,
) -> AsyncIterator[bytes]:
    """A running (or waiting) task's events after ``after``, ending after its final one."""
    return follow(
        hub,
        view.tenant_id,
        EventFilter(task_id=task_id),
        after,
        lambda last: view.task_events(task_id, last, PAGE),
        until_final=True,
    )


async def finished_task_replay(
    hub: EventHub, view: TenantTasks, task_id: int, after: EventPosition
) -> AsyncIterator[bytes]:
    """A finished task's events after ``after``, from the log alone, then the end.

    The task was seen finished before this starts, so its last event's transaction has
    committed; it may still wait behind the horizon. The replay ends after a final event,
    or (a queue with lifecycle events off writes none) once the horizon has passed every
    transaction committed before it began and a read after that found no more.
    """
    mark = await hub.log.event_horizon()
    last, settled = after, False

    async def read(position: EventPosition) -> list[TaskEvent]:
        return await view.task_events(task_id, position, PAGE)

    while True:
        settled = settled or (await hub.log.event_horizon()).covers(mark)
        batch = await read(last)
        for event in batch:
            yield delivery(event).frame
            last = event.position
            if is_final(event.kind):
                async for frame in settle_after_final(hub, read, last):
                    yield frame
                yield end_frame(task_id)
                return
        if len(batch) == PAGE:
            continue
        if settled:
            yield end_frame(task_id)
            return
        await asyncio.sleep(SETTLE_SECONDS)
