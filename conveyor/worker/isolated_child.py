"""The child side of ``isolation="process"``, run as ``python -m conveyor.cli.isolated_child``.

Reads one request from stdin (see :mod:`conveyor.worker.isolation`), caps its own address
space and CPU time, imports the handler, runs it once and writes one JSON reply line. The
reply goes to a private copy of stdout; the handler's own prints go to stderr, so nothing it
writes can corrupt the reply.

Inside the child the handler gets an :class:`IsolatedContext`: ``ctx.task``, ``ctx.log``
and ``ctx.heartbeat()`` work as in the worker, and ``ctx.llm`` (async handlers) calls
through a gateway built here from the config the worker handed over (see
:mod:`conveyor.worker.isolation` for what it does not enforce); ``ctx.once``, ``ctx.step``
and ``ctx.spawn`` need the worker's database connection and are not available. A handler whose
payload parameter is a pydantic model gets the payload as that model (validated in the worker
first, so a payload that does not fit fails before a child starts), and a model it returns is
stored as its JSON, as in the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import inspect
import json
import math
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from typing import IO, Any, NoReturn

import structlog
from pydantic import BaseModel

from conveyor.app import payload_model
from conveyor.errors import Cancel, ConfigurationError, PermanentError, Retry, Snooze
from conveyor.worker.context import TaskInfo
from conveyor.worker.outcomes import validated_payload

_PR_SET_PDEATHSIG = 1
_RESERVE_BYTES = 1 << 20
"""Set aside at start and freed on MemoryError, so the reply can still be written."""
_OUT_OF_MEMORY = json.dumps(
    {"error": {"type": "MemoryError", "message": "", "traceback": "", "permanent": True}}
)


class IsolatedContext:
    """What an isolated handler gets instead of a :class:`~conveyor.TaskContext`."""

    def __init__(self, task: TaskInfo, llm: Any = None) -> None:
        self.task = task
        self._llm = llm
        self.log: Any = structlog.get_logger("conveyor.task").bind(
            tenant_id=task.tenant_id,
            task_id=task.id,
            queue=task.queue,
            group_id=task.group_id,
            isolated=True,
        )

    def heartbeat(self) -> None:
        """Nothing to do: the worker renews the lease while the child process lives."""

    @property
    def llm(self) -> Any:
        """The child's gateway on behalf of this task (a ``BoundLLM``), as ``ctx.llm``."""
        if self._llm is None:
            raise ConfigurationError(
                "no LLM gateway in this isolated task: the worker has none (set "
                "CONVEYOR_LLM_CONFIG and restart it), or the handler is a plain def (only "
                "async handlers get ctx.llm)"
            )
        return self._llm

    def once(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not available in an isolated handler."""
        _unavailable("once")

    def step(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not available in an isolated handler."""
        _unavailable("step")

    def spawn(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not available in an isolated handler."""
        _unavailable("spawn")

    def wait_for(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not available in an isolated handler."""
        _unavailable("wait_for")


def _unavailable(name: str) -> NoReturn:
    raise PermanentError(
        f'ctx.{name} is not available in an isolated handler (isolation="process"): it needs '
        "the worker's database connection; run this agent without isolation"
    )


def main(configure_logging: Callable[[str], None]) -> int:
    """Serve one request; the exit status is 0 whenever a reply was written.

    ``configure_logging(level)`` sets up the child's logging: handed in by the process's
    entry point (``conveyor.cli.isolated_child``), which sits above observability.
    """
    request = json.loads(sys.stdin.buffer.read())
    reply_to = _take_stdout()
    _die_with_parent(int(request["parent_pid"]))
    _apply_limits(int(request["limits"]["memory_mb"]), float(request["limits"]["cpu_seconds"]))
    reserve = bytearray(_RESERVE_BYTES)
    try:
        line = _serve(request, configure_logging)
    except MemoryError:
        line = None
    if line is None:
        # Leaving the except clause dropped the traceback and with it the handler's frames;
        # the reserve makes room for the last few allocations.
        del reserve
        line = _OUT_OF_MEMORY
    reply_to.write(line + "\n")
    reply_to.flush()
    return 0


def _take_stdout() -> IO[str]:
    """A private handle on stdout for the reply; fd 1 (``print``) now goes to stderr."""
    reply_to = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return reply_to


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process if the worker dies (e.g. ``kill -9``)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the worker died before the request was read
        os._exit(1)


def _apply_limits(memory_mb: int, cpu_seconds: float) -> None:
    """Cap address space and CPU time, and write no core file when a cap kills us."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, memory_hard = resource.getrlimit(resource.RLIMIT_AS)
    memory = memory_mb * 1024 * 1024
    if memory_hard != resource.RLIM_INFINITY:
        memory = min(memory, memory_hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory_hard))
    # SIGXCPU (default action: terminate) comes at the soft limit; the hard limit one
    # second later is the kernel's SIGKILL for a handler that ignores SIGXCPU.
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    cpu = math.ceil(cpu_seconds)
    if cpu_hard != resource.RLIM_INFINITY:
        cpu = min(cpu, cpu_hard)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu_hard))
    else:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def _serve(request: dict[str, Any], configure_logging: Callable[[str], None]) -> str | None:
    """The reply line, or None when the run ran out of memory."""
    sys.path[:] = request["sys_path"]
    configure_logging(request["log_level"])
    calls: list[dict[str, Any]] = []
    try:
        handler = _resolve(request["handler"])
        task = TaskInfo(**request["task"])
        payload = request["payload"]
        model = payload_model(handler)  # typed handlers get their model, as in the worker
        if model is not None:
            payload = validated_payload(model, payload)
        if inspect.iscoroutinefunction(handler):
            result = asyncio.run(_run_async(handler, task, payload, request.get("llm"), calls))
        else:
            result = handler(IsolatedContext(task), payload)
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
    except MemoryError:
        return None
    except BaseException as exc:  # a handler's SystemExit is its error too
        return json.dumps({"error": _describe(exc), "llm_calls": calls})
    try:
        return json.dumps({"ok": result, "llm_calls": calls})
    except (TypeError, ValueError) as exc:
        problem = PermanentError(f"handler returned a result that is not JSON: {exc}")
        return json.dumps({"error": _describe(problem), "llm_calls": calls})


class _Records:
    """The child gateway's recorder: keeps each record for the reply."""

    def __init__(self, into: list[dict[str, Any]]) -> None:
        self.into = into

    async def record(self, record: Any) -> None:
        self.into.append(record.to_json())


async def _run_async(
    handler: Any,
    task: TaskInfo,
    payload: Any,
    llm_config: dict[str, Any] | None,
    calls: list[dict[str, Any]],
) -> Any:
    """Run an async handler, with a gateway of its own when the worker handed a config."""
    if llm_config is None:
        return await handler(IsolatedContext(task), payload)
    # Imported only here: an isolated task of a worker without a gateway never loads it.
    from conveyor.gateway.bound import BoundLLM
    from conveyor.gateway.config import load_gateway_config
    from conveyor.gateway.gateway import Gateway
    from conveyor.gateway.scope import CallScope

    scope = CallScope(
        tenant_id=task.tenant_id, task_id=task.id, group_id=task.group_id, queue=task.queue
    )
    async with Gateway(load_gateway_config(llm_config), recorder=_Records(calls)) as gateway:
        return await handler(IsolatedContext(task, BoundLLM(gateway, scope)), payload)


def _resolve(reference: str) -> Any:
    """The object named by ``package.module:qualified.name``."""
    module_name, _, qualname = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _describe(exc: BaseException) -> dict[str, Any]:
    outcome: str | None = None
    delay: float | None = None
    if isinstance(exc, Retry):
        outcome, delay = "retry", exc.after
    elif isinstance(exc, Snooze):
        outcome, delay = "snooze", exc.seconds
    elif isinstance(exc, Cancel):
        outcome = "cancel"
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "permanent": isinstance(exc, PermanentError),
        "outcome": outcome,
        "delay": delay,
    }
