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
from conveyor.client.exchange import (
    DEFAULT_TIMEOUT,
    RETRIED_TRANSPORT_ERRORS,
    headers,
    no_answer,
    outcome,
    request_of,
    wait_before_retry,
)
from conveyor.client.models import (
    SignalDelivered,
    TaskBatchCreated,
    TaskCreated,
    TaskPage,
    TaskSubmission,
    TaskView,
)
from conveyor.client.retries import ClientRetries
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
        traceparent: str | None = None,
    ) -> TaskCreated:
        """Submit one task; ``created`` is False when ``idempotency_key`` found an older one.
        Without a key the client makes one, so its own retries never submit twice."""
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
