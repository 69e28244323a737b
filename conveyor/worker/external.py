"""The webhook adapter's run: deliver a task to its external runtime, then wait for the
result without holding a worker.

One run of an externally served task does, in order:

1. ``ctx.once`` (key per task and attempt): issue a callback token (only its hash is
   stored) and POST the task, signed, to the runtime. A rerun of the same attempt (after
   the result came, or after the wait timed out) finds the delivery recorded and does not
   send it again.
2. ``ctx.await_signal("conveyor:webhook:<attempt>", timeout)``: the durable-wait seam. No
   result yet: the run ends, the task is ``waiting`` with no lease and no slot. The result
   callback delivers that signal and the task runs again from step 1, where the signal is
   now found.
3. The result decides: success returns the runtime's result; a retryable failure raises
   ExternalTaskFailed and a permanent one ExternalTaskRejected; no result by the deadline
   (the wait timed out) raises CallbackTimedOut, which counts the attempt and is retried by
   the agent's RetryPolicy. The next attempt waits on a signal of its own name, so a late
   result of an earlier attempt can never answer it.

A tenant's ``adapter_override`` of ``webhook:<url>`` sends that tenant's tasks of a role to
``url`` the same way; overrides are read from the store every ``OVERRIDES_SECONDS``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from conveyor.app import AgentSpec
from conveyor.core.webhooks import ExternalRuntime, new_token, read_signal
from conveyor.errors import (
    CallbackTimedOut,
    ConveyorError,
    ExternalTaskFailed,
    ExternalTaskRejected,
    WaitTimedOut,
)
from conveyor.settings import load_settings
from conveyor.store.availability import retry_while_unavailable
from conveyor.store.records import ClaimedTask
from conveyor.store.webhook_records import CallbackGrant

if TYPE_CHECKING:
    from conveyor.gateway.webhooks import WebhookSender
    from conveyor.worker.context import TaskContext
    from conveyor.worker.ports import WorkerStore

log = structlog.get_logger("conveyor.webhooks")

SIGNAL_PREFIX = "conveyor:webhook:"
"""The reserved signal a delivery's result arrives as; the attempt number follows."""
OVERRIDES_SECONDS = 5.0
"""How often a worker reads which tenants' roles go to a webhook (adapter_override)."""


def callback_signal(attempt: int) -> str:
    """The signal name of attempt ``attempt``'s result."""
    return f"{SIGNAL_PREFIX}{attempt}"


class ExternalRuns:
    """The worker's webhook adapter: which runs go to an external runtime, and running them.

    ``sender`` is built from the environment's settings on first use when not given (a
    worker that serves no external role never loads httpx); ``close`` releases it.
    """

    def __init__(
        self,
        store: WorkerStore,
        queues: tuple[str, ...],
        *,
        sender: WebhookSender | None = None,
        database_retry_seconds: float = 30.0,
    ) -> None:
        self._store = store
        self._queues = queues
        self._sender = sender
        self._owns_sender = sender is None
        self._retry_seconds = database_retry_seconds
        self._overrides: dict[tuple[str, str], str] = {}
        self._overrides_read_at = -OVERRIDES_SECONDS

    @property
    def stale(self) -> bool:
        """True when the tenants' overrides are due to be read again (``refresh``)."""
        return time.monotonic() - self._overrides_read_at >= OVERRIDES_SECONDS

    def runtime_for(self, task: ClaimedTask, agent: AgentSpec) -> ExternalRuntime | None:
        """The external runtime serving this task (its role's, or its tenant's override)."""
        url = self._overrides.get((task.tenant_id, task.queue))
        if url is not None:
            base = agent.external or ExternalRuntime(url)
            return ExternalRuntime(url, base.timeout, base.max_wait)
        return agent.external

    async def refresh(self) -> None:
        """Read which tenants' roles go to a webhook (kept as they were if it fails)."""
        self._overrides_read_at = time.monotonic()
        try:
            self._overrides = await self._store.webhook_overrides(self._queues)
        except ConveyorError as exc:  # keep what was read last; the next period tries again
            log.warning("webhook_overrides_unread", error=str(exc))

    async def run(self, ctx: TaskContext, runtime: ExternalRuntime, task: ClaimedTask) -> Any:
        """Deliver (once per attempt), wait for the result, and return or raise by it."""
        attempt = ctx.task.attempt
        signal = callback_signal(attempt)

        async def deliver() -> dict[str, Any]:
            return await self._deliver(ctx, runtime, task, signal)

        await ctx.once(f"conveyor:webhook:{task.id}:{attempt}", deliver)
        try:
            payload = await ctx.await_signal(signal, runtime.timeout, reserved=True)
        except WaitTimedOut:
            raise CallbackTimedOut(
                f"no result from the external runtime at {runtime.url} for attempt {attempt} "
                "by its deadline (timeout, heartbeats included); retried by the agent's policy"
            ) from None
        report = read_signal(payload)
        if report.succeeded:
            return report.result
        message = f"the external runtime at {runtime.url} reported a failure: {report.error}"
        if report.retryable:
            raise ExternalTaskFailed(message)
        raise ExternalTaskRejected(message)

    async def _deliver(
        self, ctx: TaskContext, runtime: ExternalRuntime, task: ClaimedTask, signal: str
    ) -> dict[str, Any]:
        sender = self._sender_ready()
        sender.config.check(runtime.url)  # refused before a token is issued
        base = f"{sender.config.callback_base()}/v1/tasks/{task.id}"
        token = new_token()
        grant = CallbackGrant(
            task.tenant_id, task.id, ctx.task.attempt, task.queue, task.group_id, signal,
            runtime.timeout, runtime.longest_wait,
        )  # fmt: skip
        deadline = await retry_while_unavailable(
            lambda: self._store.issue_callback_token(token, grant),
            what="webhook",
            seconds=self._retry_seconds,
        )
        if deadline is None:  # this attempt's result came already (a rerun after a crash)
            return {"delivered": False}
        body = {
            "delivery_id": f"{task.id}.{ctx.task.attempt}",
            "task_id": task.id,
            "tenant_id": task.tenant_id,
            "queue": task.queue,
            "group_id": task.group_id,
            "attempt": ctx.task.attempt,
            "max_attempts": ctx.task.max_attempts,
            "payload": task.payload,
            "deadline": deadline.astimezone(UTC).isoformat(),
            "callback": {
                "token": token,
                "result_url": f"{base}/result",
                "progress_url": f"{base}/progress",
                "heartbeat_url": f"{base}/heartbeat",
            },
        }
        status = await sender.deliver(runtime.url, body)
        ctx.log.info("webhook_delivered", url=runtime.url, status=status, attempt=ctx.task.attempt)
        return {"delivered": True, "status": status, "at": datetime.now(UTC).isoformat()}

    def _sender_ready(self) -> WebhookSender:
        if self._sender is None:
            # Imported here: a worker that serves no external role never loads httpx.
            from conveyor.gateway.webhooks import WebhookConfig, WebhookSender

            self._sender = WebhookSender(WebhookConfig.from_settings(load_settings()))
        return self._sender

    async def close(self) -> None:
        """Close the HTTP client this built (one it was given is the caller's)."""
        if self._sender is not None and self._owns_sender:
            await self._sender.aclose()
            self._sender = None
