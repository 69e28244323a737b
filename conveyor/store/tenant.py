"""TenantStore: the store as one tenant sees it (``store.for_tenant(tenant_id)``).

Every tenant-facing read and write goes through this view. Each operation passes the
view's tenant id to a statement that requires it (``tenant_id`` leads the key of every
tenant-owned table), so another tenant's task or group id behaves exactly like an id that
does not exist: ``TaskNotFound`` / ``GroupNotFound`` on get, cancel and group status, and
absent from lists. No operation takes a tenant id, so none can name another tenant.

Enqueueing binds the task to the view's tenant: a ``NewTask`` that names no tenant (left at
``DEFAULT_TENANT``) is enqueued for the view's tenant; one that names another tenant is
refused with ``InvalidTask``, since a caller that wrote a tenant id and got a different one
has a bug worth hearing about.

Driver-free: the view holds the engine only through the ``TenantScopedStore`` protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from conveyor.core.events import EventPosition
from conveyor.core.llm_caps import CapScope, LLMCaps
from conveyor.errors import InvalidTask
from conveyor.store.event_records import EventFilter, TaskEvent
from conveyor.store.params import DEFAULT_TENANT, NewTask, TaskListParams, validate_tenant_id
from conveyor.store.ports import TenantScopedStore
from conveyor.store.records import (
    CapCounter,
    EnqueueResult,
    GroupStatus,
    LLMUsage,
    SignalDelivery,
    TaskRecord,
)
from conveyor.types import TaskState


class TenantStore:
    """The store bound to one tenant; it cannot read or write another tenant's rows.

    Build it with ``PostgresStore.for_tenant(tenant_id)``; it satisfies ``TenantTasks``.
    """

    __slots__ = ("_store", "_tenant_id")

    def __init__(self, store: TenantScopedStore, tenant_id: str) -> None:
        self._store = store
        self._tenant_id = validate_tenant_id(tenant_id)

    def __repr__(self) -> str:
        return f"TenantStore(tenant_id={self._tenant_id!r})"

    @property
    def tenant_id(self) -> str:
        """The tenant every read and write is bound to."""
        return self._tenant_id

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A pooled connection inside a transaction: pass it to :meth:`enqueue` as
        ``connection`` and the tasks are queued exactly when the caller's writes commit."""
        return self._store.transaction()

    async def enqueue(self, task: NewTask, *, connection: Any = None) -> EnqueueResult:
        """Enqueue one task for this tenant (see :meth:`enqueue_batch`)."""
        return (await self.enqueue_batch([task], connection=connection))[0]

    async def enqueue_batch(
        self, tasks: Sequence[NewTask], *, connection: Any = None
    ) -> list[EnqueueResult]:
        """Enqueue tasks for this tenant in one statement (in ``connection``'s transaction
        when given); InvalidTask if one names another tenant (none is enqueued then)."""
        bound = [self._bind(task) for task in tasks]
        return await self._store.enqueue_batch(bound, connection=connection)

    async def enqueue_debounced(self, task: NewTask) -> EnqueueResult:
        """Add a debounced task for this tenant, or replace the payload of its waiting twin
        (same queue and ``debounce_key``): see ``store/debounce.py``."""
        return await self._store.enqueue_debounced(self._bind(task))

    async def get_task(self, task_id: int) -> TaskRecord:
        """This tenant's task, active or finished; TaskNotFound if absent or another's."""
        return await self._store.get_task(task_id, tenant_id=self._tenant_id)

    async def list_tasks(self, query: TaskListParams | None = None) -> list[TaskRecord]:
        """This tenant's tasks, newest first; page with ``TaskListParams.before_id``."""
        return await self._store.list_tasks(self._tenant_id, query or TaskListParams())

    async def cancel(self, task_id: int, *, reason: str = "cancelled") -> TaskState:
        """Cancel this tenant's task: CANCELLED if done now, RUNNING if its worker was asked
        to stop, else the terminal state it had reached; TaskNotFound if absent or another's."""
        return await self._store.cancel(task_id, tenant_id=self._tenant_id, reason=reason)

    async def signal(self, task_id: int, name: str, payload: Any = None) -> SignalDelivery:
        """Deliver signal ``name`` (any JSON ``payload``) to this tenant's task; a task
        waiting for it resumes. The first signal of a name holds: the same payload again is
        a duplicate, another is refused (SignalRefused), as is a signal to a finished task
        or after the wait timed out; TaskNotFound if absent or another's."""
        return await self._store.deliver_signal(task_id, name, payload, tenant_id=self._tenant_id)

    async def create_group(
        self, group_id: str, *, on_complete: NewTask | None = None, caps: LLMCaps | None = None
    ) -> None:
        """Register a campaign of this tenant; ``on_complete`` is enqueued (for this tenant)
        once when all its tasks finish; ``caps`` (given: set or replaced) bound the LLM
        calls, tokens and money of all its tasks together."""
        follow_up = None if on_complete is None else self._bind(on_complete)
        await self._store.create_group(self._tenant_id, group_id, on_complete=follow_up, caps=caps)

    async def llm_cap_counter(self, scope: CapScope, key: str) -> CapCounter | None:
        """This tenant's task's (``CapScope.RUN``, key its id) or group's own caps and LLM
        counters; None when nothing caps it (yet)."""
        return await self._store.llm_cap_counter(self._tenant_id, scope, key)

    async def group_status(self, group_id: str) -> GroupStatus:
        """Counts by state of this tenant's campaign; GroupNotFound if absent or another's."""
        return await self._store.group_status(self._tenant_id, group_id)

    async def usage(self, *, now: datetime | None = None) -> dict[str, int]:
        """Tasks this tenant submitted this month, per queue and in all (``"*"``)."""
        return await self._store.tenant_usage(self._tenant_id, now=now)

    async def llm_usage(
        self,
        since: datetime,
        *,
        group_id: str | None = None,
        task_id: int | None = None,
        until: datetime | None = None,
    ) -> list[LLMUsage]:
        """This tenant's LLM calls in [since, until) per (provider, model): tokens and cost."""
        return await self._store.llm_usage(
            self._tenant_id, since, group_id=group_id, task_id=task_id, until=until
        )

    async def task_counts(
        self, since: datetime, until: datetime
    ) -> dict[str, dict[TaskState, int]]:
        """This tenant's tasks created in [since, until), per queue and state."""
        return await self._store.task_counts(self._tenant_id, since, until)

    async def events(
        self, after: EventPosition, narrow: EventFilter | None = None, limit: int = 1000
    ) -> list[TaskEvent]:
        """This tenant's events after ``after`` (narrowed by group, queue or task), oldest
        first, up to the log's horizon (see ``store/events.py``)."""
        return await self._store.tenant_events(
            self._tenant_id, after, narrow or EventFilter(), limit
        )

    async def task_events(
        self, task_id: int, after: EventPosition, limit: int = 1000
    ) -> list[TaskEvent]:
        """The events of this tenant's task after ``after``; none for another's task."""
        return await self._store.task_events(self._tenant_id, task_id, after, limit)

    def _bind(self, task: NewTask) -> NewTask:
        if task.tenant_id == self._tenant_id:
            return task
        if task.tenant_id == DEFAULT_TENANT:
            return dataclasses.replace(task, tenant_id=self._tenant_id)
        raise InvalidTask(
            f"this store is bound to tenant {self._tenant_id!r}: a task for tenant "
            f"{task.tenant_id!r} cannot be enqueued through it (leave tenant_id unset)"
        )
