"""App: the registry of agents and schedules, the one object users build.

::

    app = App()

    @app.agent("copywriter", concurrency=4, timeout=120, max_attempts=3)
    async def write(ctx: TaskContext, payload: dict) -> dict:
        return {"text": ...}

    app.periodic("nightly-report", "0 2 * * *", queue="analyst")

Run it with ``conveyor worker --app mypkg.agents:app``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.core.backoff import RetryPolicy
from conveyor.core.cron import validate_cron
from conveyor.errors import ConfigurationError
from conveyor.store.params import PeriodicTask, validate_queue_name

if TYPE_CHECKING:
    from conveyor.worker.context import TaskContext

Handler = Callable[["TaskContext", dict[str, Any]], Awaitable[Any] | Any]
F = TypeVar("F", bound=Handler)


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """An agent role as registered: its handler and its limits."""

    name: str
    handler: Handler
    concurrency: int | None = None
    timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def is_async(self) -> bool:
        """False for a plain ``def`` handler, which runs in a thread, never on the loop."""
        return inspect.iscoroutinefunction(self.handler)


class App:
    """Agents and periodic schedules; workers run what an App registers."""

    def __init__(self, name: str = "conveyor") -> None:
        self.name = name
        self.agents: dict[str, AgentSpec] = {}
        self.schedules: list[PeriodicTask] = []

    def agent(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> Callable[[F], F]:
        """Register ``async def handler(ctx, payload)`` as the agent of queue ``name``.

        ``concurrency`` caps runs of this role per worker process; ``timeout`` bounds one
        run in seconds; ``retry`` (or just ``max_attempts``) sets the backoff policy.
        """
        validate_queue_name(name)
        if concurrency is not None and concurrency < 1:
            raise ConfigurationError(f"agent {name!r}: concurrency must be >= 1")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"agent {name!r}: timeout must be > 0 seconds")
        policy = retry or RetryPolicy()
        if max_attempts is not None:
            policy = RetryPolicy(max_attempts=max_attempts, base=policy.base, cap=policy.cap)

        def register(handler: F) -> F:
            if name in self.agents:
                raise ConfigurationError(f"agent {name!r} is registered twice")
            self.agents[name] = AgentSpec(name, handler, concurrency, timeout, policy)
            return handler

        return register

    def periodic(
        self,
        name: str,
        cron: str,
        *,
        queue: str,
        payload: dict[str, Any] | None = None,
        tenant_id: str = "default",
        priority: int = 5,
    ) -> PeriodicTask:
        """Enqueue a task on ``queue`` at every tick of ``cron``, once across all workers."""
        if any(s.name == name for s in self.schedules):
            raise ConfigurationError(f"periodic task {name!r} is registered twice")
        schedule = PeriodicTask(
            name=name,
            cron=validate_cron(cron),
            queue=validate_queue_name(queue),
            payload=payload or {},
            tenant_id=tenant_id,
            priority=priority,
        )
        self.schedules.append(schedule)
        return schedule
