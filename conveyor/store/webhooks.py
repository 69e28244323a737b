"""Callback tokens of the webhook adapter in PostgreSQL: issued with a delivery, checked by
the API's callback routes, used once for the result.

The result rides the durable-wait seam (``waits.py``): the worker's run suspends on a
reserved signal (``conveyor:webhook:<attempt>``), and a result callback delivers that signal
in the transaction that marks its token used. So a result that comes before the task has
even suspended is kept, a replayed result finds its token used, and a result after the
deadline finds the token expired (the wait's own timeout then retries the task).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from conveyor.core.webhooks import adapter_url, token_hash
from conveyor.errors import CallbackRefused
from conveyor.store.connection import Conn
from conveyor.store.engine import PoolEngine
from conveyor.store.event_records import NewEvent
from conveyor.store.events import append
from conveyor.store.records import SignalDelivery
from conveyor.store.sql import q
from conveyor.store.waits import deliver_signal
from conveyor.store.webhook_records import CallbackGrant, CallbackToken

PROGRESS_KIND = "progress"
"""The event kind a runtime's progress report is logged as."""


async def issue(conn: Conn, token: str, grant: CallbackGrant) -> datetime | None:
    """Store ``token``'s hash for the grant; its deadline (None: this attempt's result came
    already with an earlier token, so nothing was issued)."""
    return await conn.fetchval(  # type: ignore[no-any-return]
        q("issue_callback_token"),
        token_hash(token),
        grant.tenant_id,
        grant.task_id,
        grant.attempt,
        grant.queue,
        grant.group_id,
        grant.signal,
        grant.timeout,
        max(grant.max_wait, grant.timeout),
    )


async def check(conn: Conn, token: str, task_id: int, *, for_update: bool = False) -> CallbackToken:
    """The live, unused token ``token`` of task ``task_id``; CallbackRefused otherwise."""
    row = await conn.fetchrow(q("find_callback_token"), token_hash(token))
    if row is None or row["task_id"] != task_id:
        raise CallbackRefused(
            task_id,
            "invalid",
            f"the callback token is not one Conveyor issued for task {task_id}; use the "
            "callback_token of this task's latest delivery",
        )
    found = CallbackToken(
        row["tenant_id"], row["task_id"], row["attempt"], row["queue"], row["group_id"],
        row["signal"], row["timeout"], row["expires_at"], row["used_at"] is not None, row["live"],
    )  # fmt: skip
    if found.used:
        raise CallbackRefused(
            task_id,
            "used",
            f"the result of task {task_id} (attempt {found.attempt}) was already reported "
            "with this token; a token reports one result",
        )
    if not found.live:
        raise CallbackRefused(
            task_id,
            "expired",
            f"the callback deadline of task {task_id} (attempt {found.attempt}) passed at "
            f"{found.expires_at.isoformat()}; the task is retried or dead by its policy",
        )
    return found


async def report(
    conn: Conn, token: str, task_id: int, outcome: Any
) -> tuple[CallbackToken, SignalDelivery]:
    """Use the token and deliver ``outcome`` as the task's callback signal, atomically: a
    refused signal (the task finished, say) leaves the token unused."""
    async with conn.transaction():
        found = await check(conn, token, task_id)
        if await conn.fetchval(q("use_callback_token"), token_hash(token)) is None:
            await check(conn, token, task_id)  # used or expired in between: say which
        delivery = await deliver_signal(
            conn, task_id, found.signal, outcome, found.tenant_id, reserved=True
        )
        return found, delivery


async def heartbeat(conn: Conn, token: str, task_id: int, extend: float | None) -> datetime:
    """Move the callback deadline ``extend`` seconds (default: the agent's timeout) from now,
    bounded by the grant's longest wait; the new deadline."""
    found = await check(conn, token, task_id)
    seconds = found.timeout if extend is None else extend
    moved = await conn.fetchval(q("extend_callback_token"), token_hash(token), seconds)
    if moved is None:
        await check(conn, token, task_id)
        raise CallbackRefused(task_id, "expired", f"the callback deadline of task {task_id} passed")
    return moved  # type: ignore[no-any-return]


async def progress(conn: Conn, token: str, task_id: int, data: Any) -> CallbackToken:
    """Log a runtime's progress report as a ``progress`` event of the task."""
    found = await check(conn, token, task_id)
    event = NewEvent(
        found.tenant_id, task_id, found.queue, found.group_id, PROGRESS_KIND, found.attempt, data
    )
    await append(conn, [event])
    return found


async def overrides(conn: Conn, queues: Sequence[str]) -> dict[tuple[str, str], str]:
    """``{(tenant, queue): runtime URL}`` of tenants whose use of a role is a webhook."""
    rows = await conn.fetch(q("webhook_adapter_overrides"), list(queues))
    found = {}
    for row in rows:
        url = adapter_url(row["adapter_override"])
        if url is not None:
            found[(row["tenant_id"], row["queue"])] = url
    return found


class WebhookOperations(PoolEngine):
    """The engine's callback-token operations (``PostgresStore`` inherits them). Not
    tenant-bound: the token itself says whose task it is."""

    async def issue_callback_token(self, token: str, grant: CallbackGrant) -> datetime | None:
        """Store the hash of a delivery's token; its deadline (None: already reported)."""
        return await self._run(lambda c: issue(c, token, grant))

    async def report_callback(
        self, token: str, task_id: int, outcome: Any
    ) -> tuple[CallbackToken, SignalDelivery]:
        """A runtime's result: use the token and wake the task with ``outcome``."""
        found = await self._with_partitions(
            lambda: self._run(lambda c: report(c, token, task_id, outcome))
        )
        self._events_written()
        return found

    async def callback_heartbeat(self, token: str, task_id: int, extend: float | None) -> datetime:
        """A runtime's heartbeat: the task's new callback deadline."""
        return await self._run(lambda c: heartbeat(c, token, task_id, extend))

    async def callback_progress(self, token: str, task_id: int, data: Any) -> CallbackToken:
        """A runtime's progress report, logged as a ``progress`` event."""
        found = await self._with_partitions(
            lambda: self._run(lambda c: progress(c, token, task_id, data))
        )
        self._events_written()
        return found

    async def webhook_overrides(self, queues: Sequence[str]) -> dict[tuple[str, str], str]:
        """Runtime URLs of tenants whose use of one of ``queues`` is a webhook."""
        return await self._run(lambda c: overrides(c, queues))
