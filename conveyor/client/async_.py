"""``conveyor.AsyncClient``: the API from asyncio code; the same calls as ``Client``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from conveyor.client import calls
from conveyor.client.calls import Call, T
from conveyor.client.cap_models import CapLimits
from conveyor.client.exchange import (
    DEFAULT_TIMEOUT,
    RETRIED_TRANSPORT_ERRORS,
    STREAM_TIMEOUT,
    headers,
    no_answer,
    outcome,
    request_of,
    stream_pause,
    wait_before_retry,
)
from conveyor.client.models import (
    FollowUp,
    GroupView,
    SignalDelivered,
    TaskBatchCreated,
    TaskCreated,
    TaskPage,
    TaskSubmission,
    TaskView,
)
from conveyor.client.problems import api_error
from conveyor.client.retries import ClientRetries
from conveyor.client.sse import EventReader, TaskEventView, events_params
from conveyor.types import TaskState


class AsyncClient:
    """A tenant's (or an admin's) asyncio client of one Conveyor API; use it as an async
    context manager, or await ``aclose()``. Keep one per event loop (it pools connections).

    Errors are ``conveyor.ApiError`` subclasses (``ApiTaskNotFound`` is a ``TaskNotFound``);
    429/503 with ``Retry-After`` and lost connections are retried as ``retries`` says.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: ClientRetries | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retries = retries or ClientRetries()
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    # -- tasks --------------------------------------------------------------------------

    async def submit(
        self,
        queue: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: int = 5,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
        max_attempts: int | None = None,
        timeout_seconds: float | None = None,
        idempotency_key: str | None = None,
        group_id: str | None = None,
        caps: CapLimits | None = None,
        traceparent: str | None = None,
    ) -> TaskCreated:
        """Submit one task; ``created`` is False when ``idempotency_key`` found an older one.
        Without a key the client makes one, so its own retries never submit twice.
        ``caps=CapLimits(calls=..., tokens=..., cost=...)`` bound its LLM use."""
        task = calls.submission(
            queue,
            payload,
            priority=priority,
            run_at=run_at,
            delay_seconds=delay_seconds,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            idempotency_key=idempotency_key,
            group_id=group_id,
            caps=caps,
        )
        return await self.send(calls.submit(task, traceparent))

    async def submit_batch(
        self, tasks: Iterable[TaskSubmission], *, traceparent: str | None = None
    ) -> TaskBatchCreated:
        """Submit up to 10,000 tasks (``calls.submission(...)`` builds one), all or none."""
        return await self.send(calls.submit_batch(tasks, traceparent))

    async def get(self, task_id: int) -> TaskView:
        """A task of the key's tenant; ``ApiTaskNotFound`` for any other id."""
        return await self.send(calls.get(task_id))

    async def cancel(self, task_id: int) -> TaskView:
        """Cancel a task (at once if it waits; a running one's worker is asked to stop)."""
        return await self.send(calls.cancel(task_id))

    async def signal(self, task_id: int, name: str, payload: Any = None) -> SignalDelivered:
        """Deliver signal ``name`` (``payload``: any JSON) to a task of the key's tenant; a
        task waiting for it in ``ctx.wait_for(name)`` resumes. The same signal again is a
        ``duplicate``; another payload for the name, a finished task or a wait that timed
        out raise ``ApiSignalRefused`` (a ``SignalRefused``)."""
        return await self.send(calls.signal(task_id, name, payload))

    async def list_page(
        self,
        *,
        state: TaskState | str | None = None,
        queue: str | None = None,
        group_id: str | None = None,
        limit: int = 100,
        cursor: int | None = None,
    ) -> TaskPage:
        """One page of the tenant's tasks, newest first; pass ``next_cursor`` on."""
        call = calls.list_page(
            state=state, queue=queue, group_id=group_id, limit=limit, cursor=cursor
        )
        return await self.send(call)

    async def list(
        self,
        *,
        state: TaskState | str | None = None,
        queue: str | None = None,
        group_id: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[TaskView]:
        """Every matching task, newest first, fetched a page at a time as you iterate."""
        cursor: int | None = None
        while True:
            page = await self.list_page(
                state=state, queue=queue, group_id=group_id, limit=page_size, cursor=cursor
            )
            for task in page.tasks:
                yield task
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- groups -------------------------------------------------------------------------

    async def create_group(
        self,
        group_id: str,
        *,
        caps: CapLimits | None = None,
        on_complete: FollowUp | None = None,
    ) -> GroupView:
        """Register a campaign (tasks join it with ``group_id``), or replace the follow-up
        and caps of one; ``caps`` bound the LLM use of all its tasks together."""
        return await self.send(calls.create_group(group_id, caps=caps, on_complete=on_complete))

    async def get_group(self, group_id: str) -> GroupView:
        """A campaign: its tasks by state, its LLM usage, and its caps."""
        return await self.send(calls.get_group(group_id))

    # -- events -------------------------------------------------------------------------

    def events(
        self,
        *,
        group_id: str | None = None,
        queue: str | None = None,
        task_id: int | None = None,
        last_event_id: str | None = None,
        from_start: bool = False,
    ) -> AsyncIterator[TaskEventView]:
        """The tenant's events as they happen (narrowed by group, queue or task), without
        end. From now on, or after ``last_event_id``, or (``from_start``) from the log's
        beginning; a lost connection resumes where it stopped, nothing missed or twice."""
        params = events_params(
            group_id=group_id, queue=queue, task_id=task_id, from_start=from_start
        )
        return self._follow("/v1/events", params, EventReader(last_event_id, ends=False))

    def task_events(
        self, task_id: int, *, last_event_id: str | None = None
    ) -> AsyncIterator[TaskEventView]:
        """A task's events from its beginning (or after ``last_event_id``), ending after
        its final one; ``ApiTaskNotFound`` for another tenant's task."""
        path = f"/v1/tasks/{int(task_id)}/events"
        return self._follow(path, {}, EventReader(last_event_id, ends=True))

    async def _follow(
        self, path: str, params: Mapping[str, str | int], reader: EventReader
    ) -> AsyncIterator[TaskEventView]:
        failures = 0
        while not reader.done:
            request = self._http.build_request(
                "GET", path, params=dict(params), headers=reader.headers(), timeout=STREAM_TIMEOUT
            )
            received = 0
            try:
                response = await self._http.send(request, stream=True)
                try:
                    if not response.is_success:
                        await response.aread()
                        wait = wait_before_retry(self.retries, failures + 1, response)
                        if wait is None:
                            raise api_error(response, exhausted=True)
                        failures += 1
                        await asyncio.sleep(wait or 0)
                        continue
                    reader.reconnected()
                    async for line in response.aiter_lines():
                        event = reader.feed(line)
                        if event is not None:
                            received += 1
                            failures = 0
                            yield event
                        if reader.done:
                            return
                finally:
                    await response.aclose()
            except RETRIED_TRANSPORT_ERRORS as exc:
                failures += 1
                wait = wait_before_retry(self.retries, failures, None)
                if wait is None:
                    raise no_answer(exc, request) from exc
                await asyncio.sleep(wait)
                continue
            except httpx.TransportError as exc:
                raise no_answer(exc, request) from exc
            if not received:  # closed with nothing new: do not hammer the server
                failures += 1
                await asyncio.sleep(stream_pause(self.retries, failures))

    # -- the exchange -------------------------------------------------------------------

    async def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying as ``self.retries`` allows; its result, or its error."""
        request = request_of(self._http, call)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.send(request)
            except RETRIED_TRANSPORT_ERRORS as exc:
                wait = wait_before_retry(self.retries, attempt, None)
                if wait is None:
                    raise no_answer(exc, request) from exc
                await asyncio.sleep(wait)
                continue
            except httpx.TransportError as exc:  # a wrong URL or scheme: trying again won't help
                raise no_answer(exc, request) from exc
            wait = (
                None if response.is_success else wait_before_retry(self.retries, attempt, response)
            )
            if wait is None:
                return outcome(call, response, exhausted=attempt >= self.retries.attempts)
            await response.aclose()
            await asyncio.sleep(wait)
