"""App: the registry of agents and schedules, the one object users build.

::

    app = App()

    @app.agent("copywriter", concurrency=4, timeout=120, max_attempts=3)
    async def write(ctx: TaskContext, payload: dict) -> dict:
        return {"text": ...}

    app.periodic("nightly-report", "0 2 * * *", queue="analyst")

Run it with ``conveyor worker --app mypkg.agents:app``.

Plugins go in ``App(hooks=[...])`` or ``app.hook(plugin)``: a ``TaskHook`` wraps every task
run (``around_task``), an ``LLMHook`` (``conveyor.gateway``) sees every LLM attempt and
streamed chunk of the worker's gateway; one object may be both.
"""

from __future__ import annotations

import inspect
import math
import sys
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from conveyor.core.backoff import RetryPolicy
from conveyor.core.cron import validate_cron
from conveyor.core.llm_caps import LLMCaps
from conveyor.errors import ConfigurationError
from conveyor.store.params import PeriodicTask, validate_queue_name

if TYPE_CHECKING:
    from conveyor.gateway.hooks import LLMHook
    from conveyor.worker.context import TaskContext

Handler = Callable[["TaskContext", dict[str, Any]], Awaitable[Any] | Any]
F = TypeVar("F", bound=Handler)
CallNext = Callable[[], Awaitable[Any]]
"""What ``around_task`` calls to run the rest of the chain and the handler; its result."""
P = TypeVar("P", bound="TaskHook | LLMHook")

Isolation = Literal["process"]

DEFAULT_MEMORY_LIMIT_MB = 512
"""Address-space cap of an isolated handler's process when ``memory_limit_mb`` is not given."""
MIN_MEMORY_LIMIT_MB = 64
"""The interpreter with Conveyor imported already maps about 55 MB; less cannot even start."""
DEFAULT_CPU_LIMIT_SECONDS = 60.0
"""CPU-time cap of an isolated handler without ``cpu_limit_seconds`` or a ``timeout``."""


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """An agent role as registered: its handler and its limits."""

    name: str
    handler: Handler
    concurrency: int | None = None
    timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    isolation: Isolation | None = None
    """``"process"``: each run happens in a child process under the two caps below."""
    memory_limit_mb: int | None = None
    """Address-space cap (RLIMIT_AS) of an isolated run; set exactly when isolated."""
    cpu_limit_seconds: float | None = None
    """CPU-time cap (RLIMIT_CPU) of an isolated run; set exactly when isolated."""
    stall_timeout: float | None = None
    """Seconds without progress after which a run fails as stalled (None: never)."""
    payload_model: type[BaseModel] | None = None
    """The pydantic model of the payload when the handler's second parameter is typed so;
    the worker validates each payload against it before calling the handler."""
    llm_cache: bool = False
    """Whether this agent's deterministic ``ctx.llm.chat`` calls (temperature 0) may be
    answered from the shared response cache."""
    caps: LLMCaps | None = None
    """Caps on each run's LLM calls, tokens and USD (all attempts of a task together)."""

    @property
    def is_async(self) -> bool:
        """False for a plain ``def`` handler, which runs in a thread, never on the loop."""
        return inspect.iscoroutinefunction(self.handler)

    @property
    def handler_reference(self) -> str:
        """``package.module:function``, how an isolated child process imports the handler."""
        return f"{self.handler.__module__}:{self.handler.__qualname__}"


class TaskHook:
    """A worker plugin around every task run, in the spirit of River's worker middleware.

    Override ``around_task``; it must call ``call_next()`` once and return its result (or
    a result of its own), and may raise to fail the run (the error steers the task like
    the handler's would). Hooks nest in the order given: the first is outermost. They run
    on the event loop inside the task's timeout, whether the handler itself runs on the
    loop, in a thread or in an isolated child::

        class Timing(TaskHook):
            async def around_task(self, ctx: TaskContext, call_next: CallNext) -> Any:
                started = time.perf_counter()
                try:
                    return await call_next()
                finally:
                    ctx.log.info("ran", seconds=time.perf_counter() - started)
    """

    async def around_task(self, ctx: TaskContext, call_next: CallNext) -> Any:
        """Run the task: ``return await call_next()`` plus whatever the plugin adds."""
        return await call_next()


class App:
    """Agents, periodic schedules and plugins; workers run what an App registers."""

    def __init__(self, name: str = "conveyor", *, hooks: Sequence[TaskHook | LLMHook] = ()) -> None:
        self.name = name
        self.agents: dict[str, AgentSpec] = {}
        self.schedules: list[PeriodicTask] = []
        self.hooks: list[TaskHook | LLMHook] = []
        """Plugins in registration order (``hook``): task hooks and LLM hooks."""
        for plugin in hooks:
            self.hook(plugin)

    def hook(self, plugin: P) -> P:
        """Register a ``TaskHook``, an ``LLMHook``, or an object that is both; returns it.

        Task hooks wrap every run of this App's agents; LLM hooks join the worker's
        gateway (after the worker's own, such as its metrics).
        """
        if not isinstance(plugin, TaskHook) and not _is_llm_hook(plugin):
            raise ConfigurationError(
                f"app.hook() takes a TaskHook or a conveyor.gateway.LLMHook, not "
                f"{type(plugin).__name__}"
            )
        self.hooks.append(plugin)
        return plugin

    @property
    def task_hooks(self) -> tuple[TaskHook, ...]:
        """The registered plugins that wrap task runs, in order."""
        return tuple(h for h in self.hooks if isinstance(h, TaskHook))

    def agent(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        isolation: Isolation | None = None,
        memory_limit_mb: int | None = None,
        cpu_limit_seconds: float | None = None,
        stall_timeout: float | None = None,
        llm_cache: bool = False,
        caps: LLMCaps | None = None,
    ) -> Callable[[F], F]:
        """Register ``async def handler(ctx, payload)`` as the agent of queue ``name``.

        ``concurrency`` caps runs of this role per worker process; ``timeout`` bounds one
        run in seconds; ``retry`` (or just ``max_attempts``) sets the backoff policy.

        ``isolation="process"`` runs each call in a child process capped at
        ``memory_limit_mb`` of address space (default 512) and ``cpu_limit_seconds`` of CPU
        time (default: ``timeout``, else 60); crossing a cap kills only that child and the
        task goes dead with :class:`~conveyor.errors.IsolationLimitExceeded`. The handler
        must be a module-level function, which the child imports by name.

        ``stall_timeout`` fails a run that shows no progress (``ctx.heartbeat()``, a step,
        an effect, each streamed chunk) for that many seconds, and retries it per policy: a
        hung call is caught long before a generous ``timeout``.

        ``llm_cache=True`` lets the agent's ``ctx.llm.chat`` calls with ``temperature=0``
        be answered from the response cache all workers share (per tenant; see
        docs/gateway.md): the same prompt to the same model is paid for once.

        ``caps=LLMCaps(calls=..., tokens=..., cost=Decimal(...))`` is the runaway guard of
        each run: the ``ctx.llm`` attempt that would take the task (all its attempts
        together) past one fails it for good with :class:`~conveyor.errors.LLMCapExceeded`
        (the tightest of these, the plan's and the submit's applies; docs/agents.md).
        """
        validate_queue_name(name)
        if caps is not None and not isinstance(caps, LLMCaps):
            raise ConfigurationError(
                f"agent {name!r}: caps must be an LLMCaps, not {type(caps).__name__}"
            )
        if concurrency is not None and concurrency < 1:
            raise ConfigurationError(f"agent {name!r}: concurrency must be >= 1")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"agent {name!r}: timeout must be > 0 seconds")
        if stall_timeout is not None and not (0 < stall_timeout < math.inf):
            raise ConfigurationError(f"agent {name!r}: stall_timeout must be > 0 seconds")
        if stall_timeout is not None and isolation is not None:
            raise ConfigurationError(
                f"agent {name!r}: stall_timeout needs progress reports, which an isolated "
                "child cannot send; use timeout/cpu_limit_seconds instead"
            )
        policy = retry or RetryPolicy()
        if max_attempts is not None:
            policy = RetryPolicy(max_attempts=max_attempts, base=policy.base, cap=policy.cap)
        memory, cpu = _process_limits(name, isolation, timeout, memory_limit_mb, cpu_limit_seconds)

        def register(handler: F) -> F:
            if name in self.agents:
                raise ConfigurationError(f"agent {name!r} is registered twice")
            spec = AgentSpec(
                name, handler, concurrency, timeout, policy, isolation, memory, cpu,
                payload_model=payload_model(handler), stall_timeout=stall_timeout,
                llm_cache=llm_cache, caps=None if caps is None or caps.empty else caps,
            )  # fmt: skip
            if isolation is not None:
                _check_importable(spec)
            self.agents[name] = spec
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


def _process_limits(
    name: str,
    isolation: Isolation | None,
    timeout: float | None,
    memory_limit_mb: int | None,
    cpu_limit_seconds: float | None,
) -> tuple[int | None, float | None]:
    """The validated (memory, cpu) caps of an agent, defaults filled in when isolated."""
    if isolation is None:
        if memory_limit_mb is not None or cpu_limit_seconds is not None:
            raise ConfigurationError(
                f"agent {name!r}: memory_limit_mb and cpu_limit_seconds apply only with "
                'isolation="process"'
            )
        return None, None
    if isolation != "process":
        raise ConfigurationError(
            f'agent {name!r}: isolation must be "process" or None, not {isolation!r}'
        )
    memory = DEFAULT_MEMORY_LIMIT_MB if memory_limit_mb is None else memory_limit_mb
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < MIN_MEMORY_LIMIT_MB:
        raise ConfigurationError(
            f"agent {name!r}: memory_limit_mb must be a whole number >= {MIN_MEMORY_LIMIT_MB} "
            f"(the interpreter alone maps about 55 MB), not {memory_limit_mb!r}"
        )
    cpu = cpu_limit_seconds if cpu_limit_seconds is not None else timeout
    cpu = DEFAULT_CPU_LIMIT_SECONDS if cpu is None else float(cpu)
    if not math.isfinite(cpu) or cpu <= 0:
        raise ConfigurationError(
            f"agent {name!r}: cpu_limit_seconds must be a finite number > 0, "
            f"not {cpu_limit_seconds!r}"
        )
    return memory, cpu


def _check_importable(spec: AgentSpec) -> None:
    """Refuse a handler that a child process could not import by module and name."""
    module = getattr(spec.handler, "__module__", None)
    qualname = getattr(spec.handler, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        raise ConfigurationError(
            f'agent {spec.name!r}: isolation="process" needs a module-level function, which '
            f"the child process imports by name; {spec.handler!r} is a lambda, a nested "
            "function, not a function, or defined in __main__"
        )


def _is_llm_hook(plugin: object) -> bool:
    # The gateway stays unimported in a worker whose agents never call a model: an LLMHook
    # instance exists only once its module is loaded, so an unloaded module means "no".
    module = sys.modules.get("conveyor.gateway.hooks")
    return module is not None and isinstance(plugin, module.LLMHook)


def payload_model(handler: Handler) -> type[BaseModel] | None:
    """The pydantic model annotating the handler's payload parameter, if there is one."""
    try:
        hints = typing.get_type_hints(handler)
        parameters = list(inspect.signature(handler).parameters)
    except (NameError, TypeError, ValueError):
        return None  # annotations that do not resolve are left to the handler
    if len(parameters) < 2:
        return None
    hint = hints.get(parameters[1])
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None
