"""Who a call is made for: the task's tenant, id, group and queue, and its deadline.

``ctx.llm`` fills it from the running task; code calling a ``Gateway`` directly passes one
(or none: a call outside any tenant, with no deadline). The tenant decides the budgets and
the model override, the task and group the accounting and the runaway guards (with the
role's caps), and the deadline how long a call may wait for a budget or a retry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from conveyor.core.llm_caps import LLMCaps


@dataclass(frozen=True, slots=True, weakref_slot=True)  # the token relay follows runs by it
class CallScope:
    """The task a call belongs to; ``deadline`` is a ``time.monotonic()`` instant;
    ``run_caps`` are the caps its role puts on each run (``@app.agent(..., caps=...)``)."""

    tenant_id: str | None = None
    task_id: int | None = None
    group_id: str | None = None
    queue: str | None = None
    deadline: float | None = None
    run: int | None = None
    """The run's lease token: it orders the runs of one task (a relay keys output by it)."""
    run_caps: LLMCaps | None = None

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative); None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()


NO_SCOPE = CallScope()
