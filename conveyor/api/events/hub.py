"""The event hub: one reader of the event log per API process, fanning out to every stream.

However many SSE clients a process serves, it reads the log with one query per wake-up:
the hub holds the position it has read up to, and on a wake-up (a notification that events
were written: PostgreSQL NOTIFY or Redis, see ``wake.py``) reads the log's tail after it,
page by page, and hands each event to the subscribers that want it, in memory. Nothing is
queried per client per event.

Wake-ups are hints. The hub also reads every ``poll_seconds`` (a transaction that held the
log's horizon back may end without notifying anyone, and a lost listener misses
notifications), and again soon after a read that saw events waiting behind the horizon.

Keep-alives come from the hub too: every half ``keepalive_seconds`` it looks at every
subscription, and one that was handed nothing for two looks in a row is woken with nothing,
the stream's cue to send a keep-alive comment. A stream waits on its subscription alone,
with no timer of its own: at 10,000 streams, a timer per wait made objects that lived a
second each, and the collector's full passes over them paused the process for a second and
more (measured with ``benchmarks/sse.py``).

Each subscriber has a bounded buffer (bytes of frames). One that does not keep up (more
than the limit still unsent when the next batch arrives) is cut: its buffer is dropped and
its stream ends cleanly, so the client reconnects with ``Last-Event-ID`` and catches up
from the log. Memory never grows with a slow client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain

import structlog

from conveyor.api import sse
from conveyor.core.events import EventPosition
from conveyor.store.event_records import EventFilter, TaskEvent
from conveyor.store.events import READ_LIMIT
from conveyor.store.ports import EventLog

log = structlog.get_logger("conveyor.api.events")

FIRST_RETRY = 0.005
"""Seconds before reading again when events wait behind the horizon; doubles up to the poll."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event and its SSE frame (encoded once, shared by every subscriber)."""

    event: TaskEvent
    frame: bytes


def delivery(event: TaskEvent) -> Delivery:
    """``event`` with its frame: ``id: <position>``, ``event: <kind>``, ``data: <json>``."""
    data = json.dumps(event.to_json(), separators=(",", ":"))
    return Delivery(event, sse.frame(data, event=event.kind, event_id=str(event.position)))


class StreamCut(Exception):
    """The subscriber fell too far behind (or the hub stopped): end the stream; the client
    resumes with ``Last-Event-ID``."""


class Subscription:
    """What one stream receives from the hub: a tenant's events passing ``narrow``."""

    __slots__ = (
        "_batch",
        "_bytes",
        "_items",
        "_keepalive_due",
        "_limit",
        "_quiet_looks",
        "_ready",
        "cut",
        "narrow",
        "tenant_id",
    )

    def __init__(self, tenant_id: str, narrow: EventFilter, limit_bytes: int) -> None:
        self.tenant_id = tenant_id
        self.narrow = narrow
        self.cut = False
        """True once the buffer overflowed (or the hub stopped): nothing more arrives."""
        self._limit = limit_bytes
        self._items: deque[Delivery] = deque()
        self._bytes = 0
        self._batch = -1
        self._ready = asyncio.Event()
        self._quiet_looks = 0
        self._keepalive_due = False

    def offer(self, item: Delivery, batch: int) -> bool:
        """Buffer ``item`` of fan-out ``batch``; False when the subscription was cut for it.

        The limit is checked at the first item of each batch: a burst (a page of up to
        1,000 events) is always taken whole, and a stream is cut when more than the limit
        is still unsent from earlier batches as the next one arrives. A stream's memory is
        at most the limit plus one page.
        """
        if self.cut:
            return True
        if batch != self._batch:
            self._batch = batch
            if self._bytes > self._limit:
                self.close()
                return False
        self._items.append(item)
        self._bytes += len(item.frame)
        self._quiet_looks = 0
        self._ready.set()
        return True

    def look(self) -> None:
        """The hub's keep-alive look: the second in a row that finds the stream handed
        nothing wakes it with nothing (a keep-alive is due)."""
        self._quiet_looks += 1
        if self._quiet_looks >= 2:
            self._quiet_looks = 0
            self._keepalive_due = True
            self._ready.set()

    def close(self) -> None:
        """Cut the subscription: drop what is buffered and wake the stream to end it."""
        self.cut = True
        self._items.clear()
        self._bytes = 0
        self._ready.set()

    async def take(self) -> list[Delivery]:
        """Everything buffered, oldest first, waiting for at least one; ``[]`` when a
        keep-alive is due (see :meth:`look`); StreamCut once cut."""
        while not self._items:
            if self.cut:
                raise StreamCut
            if self._keepalive_due:
                self._keepalive_due = False
                return []
            self._ready.clear()
            await self._ready.wait()
        if self.cut:
            raise StreamCut
        taken = list(self._items)
        self._items.clear()
        self._bytes = 0
        self._keepalive_due = False
        return taken


class EventHub:
    """Reads the log once for all the process's streams; see the module docstring."""

    def __init__(
        self,
        log_reader: EventLog,
        *,
        poll_seconds: float = 1.0,
        buffer_bytes: int = 1_048_576,
        page: int = READ_LIMIT,
        keepalive_seconds: float = 15.0,
    ) -> None:
        self.log = log_reader
        self._poll = poll_seconds
        self._keepalive = keepalive_seconds
        self._buffer_bytes = buffer_bytes
        self._page = page
        self._cursor: EventPosition | None = None
        self._woken = asyncio.Event()
        self._by_tenant: dict[str, set[Subscription]] = {}
        self._by_task: dict[tuple[str, int], set[Subscription]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._looker: asyncio.Task[None] | None = None
        self._closing = False
        self._batches = 0
        self._idle_head_at = -math.inf
        self.head_reads = 0
        """Reads of the head alone while nobody listened, since start."""
        self.cutoffs = 0
        """Subscribers cut off for falling behind, since start."""
        self.reads = 0
        """Reads of the log's tail, since start (one per wake-up or poll, plus pages)."""

    @property
    def subscribers(self) -> int:
        """How many streams the hub feeds now."""
        return sum(len(s) for s in chain(self._by_tenant.values(), self._by_task.values()))

    @property
    def cursor(self) -> EventPosition | None:
        """The position the hub has read and fanned out up to (None before its first read)."""
        return self._cursor

    async def start(self) -> None:
        """Start reading (from the log's head: a hub has no past subscribers to serve)."""
        if self._reader is None:
            with contextlib.suppress(Exception):  # the reader retries until the log answers
                self._cursor = await self.log.event_head()
            self._reader = asyncio.create_task(self._read_forever(), name="conveyor-event-hub")
            self._looker = asyncio.create_task(self._look_forever(), name="conveyor-keepalive")

    async def stop(self) -> None:
        """Stop reading and end every stream (their clients resume elsewhere)."""
        for task in (self._reader, self._looker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._looker = None
        self.close_streams()

    @property
    def closing(self) -> bool:
        """True once the process is stopping: streams end, new subscriptions come cut."""
        return self._closing

    def close_streams(self) -> None:
        """End every stream now and every later one at once (the process is stopping:
        their clients resume on another instance). The reader keeps reading."""
        self._closing = True
        for sub in list(self._all()):
            sub.close()

    def wake(self) -> None:
        """Events were written: read soon (calls while a read runs coalesce into one more)."""
        self._woken.set()

    def subscribe(self, tenant_id: str, narrow: EventFilter | None = None) -> Subscription:
        """A subscription to the events fanned out from now on; ``unsubscribe`` it after."""
        sub = Subscription(tenant_id, narrow or EventFilter(), self._buffer_bytes)
        if self._closing:
            sub.close()
        if sub.narrow.task_id is not None:
            self._by_task.setdefault((tenant_id, sub.narrow.task_id), set()).add(sub)
        else:
            self._by_tenant.setdefault(tenant_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop feeding ``sub`` (safe twice)."""
        if sub.narrow.task_id is not None:
            key = (sub.tenant_id, sub.narrow.task_id)
            by_task = self._by_task.get(key)
            if by_task is not None:
                by_task.discard(sub)
                if not by_task:
                    del self._by_task[key]
            return
        by_tenant = self._by_tenant.get(sub.tenant_id)
        if by_tenant is not None:
            by_tenant.discard(sub)
            if not by_tenant:
                del self._by_tenant[sub.tenant_id]

    def fan_out(self, events: Iterable[TaskEvent]) -> None:
        """Hand each event to the subscribers it passes, in order, and advance the cursor."""
        self._batches += 1
        batch = self._batches
        for event in events:
            item: Delivery | None = None
            for sub in _targets(self._by_task, self._by_tenant, event):
                if not sub.narrow.matches(event):
                    continue
                item = item or delivery(event)
                if not sub.offer(item, batch):
                    self.cutoffs += 1
                    log.warning(
                        "event_stream_cut",
                        tenant_id=sub.tenant_id,
                        task_id=sub.narrow.task_id,
                        buffer_bytes=self._buffer_bytes,
                        cutoffs=self.cutoffs,
                        reason="slow client: more than its buffer unsent; it resumes from the log",
                    )
            self._cursor = event.position

    async def read(self) -> bool:
        """Read the tail after the cursor and fan it out; whether events wait behind the
        horizon (read again soon)."""
        if self._cursor is None:  # the log was away at start: begin at its head now
            self._cursor = await self.log.event_head()
            for sub in list(self._all()):  # their catch-up may have stopped short of it
                sub.close()
            return False
        if not (self._by_tenant or self._by_task):
            # Nobody listens: move to the head without reading rows (one small query), and
            # at most twice a poll period: an API process with no stream open would
            # otherwise ask the database for the head on every wake-up, hundreds a second
            # on a busy cluster. A stream that subscribes meanwhile gets everything after
            # the (at most a period) older cursor.
            now = asyncio.get_running_loop().time()
            if now - self._idle_head_at < self._poll / 2:
                return False
            self._idle_head_at = now
            self.head_reads += 1
            head = await self.log.event_head()
            if not (self._by_tenant or self._by_task):
                self._cursor = max(self._cursor, head)
                return False
        while True:
            self.reads += 1
            batch = await self.log.event_tail(self._cursor, self._page)
            self.fan_out(batch)
            if len(batch) < self._page:
                break
        return await self.log.event_pending(self._cursor)

    async def _read_forever(self) -> None:
        delay, retry = self._poll, FIRST_RETRY
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when a
            # cancel (stop) and a wake-up arrive together, and stop() then waits forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._woken.wait()
            self._woken.clear()
            try:
                waiting = await self.read()
            except Exception as exc:  # the database is away: the next poll tries again
                log.warning("event_hub_read_failed", error=f"{type(exc).__name__}: {exc}")
                waiting = False
            if waiting:  # soon, then less often while the horizon stays held back
                delay, retry = retry, min(retry * 2, self._poll)
            else:
                delay, retry = self._poll, FIRST_RETRY

    async def _look_forever(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive / 2)
            for sub in self._all():  # never awaits: nobody (un)subscribes meanwhile
                sub.look()

    def _all(self) -> Iterable[Subscription]:
        return chain.from_iterable(chain(self._by_tenant.values(), self._by_task.values()))


def _targets(
    by_task: dict[tuple[str, int], set[Subscription]],
    by_tenant: dict[str, set[Subscription]],
    event: TaskEvent,
) -> Iterable[Subscription]:
    # Two lookups, whatever the number of subscribers: fan-out costs per event and match.
    # No copies: fan_out never awaits, so no stream can (un)subscribe meanwhile.
    return chain(
        by_task.get((event.tenant_id, event.task_id), ()),
        by_tenant.get(event.tenant_id, ()),
    )
