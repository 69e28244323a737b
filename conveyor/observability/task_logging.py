"""Every line a task run logs names the task: its fields bound for the run, as a TaskHook.

``structlog``'s context variables hold ``tenant_id``, ``group_id``, ``task_id``, ``queue``,
``attempt`` and the stored ``trace_id`` for the length of the run, so a line from the
gateway, the store's retries or the agent's own ``structlog.get_logger()`` carries them as
``ctx.log`` does. Each run is its own asyncio task (a thread handler gets a copy of its
context), so one run's fields never reach another's lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from conveyor.app import CallNext, TaskHook
from conveyor.worker.context import trace_id_of

if TYPE_CHECKING:
    from conveyor.worker.context import TaskContext

__all__ = ["TaskLogContext"]


class TaskLogContext(TaskHook):
    """Binds the task's log fields around its run (``Worker(hooks=[...])``)."""

    async def around_task(self, ctx: TaskContext, call_next: CallNext) -> Any:
        """Run the task with its fields bound."""
        info = ctx.task
        structlog.contextvars.bind_contextvars(
            tenant_id=info.tenant_id,
            group_id=info.group_id,
            task_id=info.id,
            queue=info.queue,
            attempt=info.attempt,
            trace_id=trace_id_of(ctx.trace_context),
        )
        return await call_next()
