"""Run an ``isolation="process"`` handler in a child process under memory and CPU caps.

Each run starts ``python -m conveyor.cli.isolated_child`` (a fresh interpreter, never a
fork of the event loop), hands it one JSON request on stdin and reads one JSON reply from
its stdout. The child caps itself with RLIMIT_AS and RLIMIT_CPU before it imports the
handler, so crossing a cap ends only that child: the worker reports
:class:`~conveyor.errors.IsolationLimitExceeded` for the task and goes on serving.

The wire format, both ways one JSON document::

    request  {"handler": "pkg.mod:func", "payload": {...}, "task": {...TaskInfo},
              "limits": {"memory_mb": 512, "cpu_seconds": 60.0},
              "sys_path": [...], "parent_pid": 123, "log_level": "INFO",
              "llm": null | {...GatewayConfig with its keys}}
    reply    {"ok": <result>, "llm_calls": [...CallRecord]}
           | {"error": {"type", "message", "traceback", "permanent": bool,
                        "outcome": null | "retry" | "snooze" | "cancel", "delay": float|null},
              "llm_calls": [...]}

``outcome`` carries a ``Retry``, ``Snooze`` or ``Cancel`` raised in the child across, so
those steer the task exactly as they do in the worker.

A worker with a gateway hands the child its config (``llm``; the keys travel over the pipe,
never the command line or the environment), and the child builds a gateway of its own from
it for ``ctx.llm``: no global, no re-reading of ``CONVEYOR_LLM_CONFIG``. That gateway has no
database connection, so it enforces no rate budgets, monthly limits or model overrides; the
records of its attempts come back in the reply and go through the worker's gateway
(``Gateway.record``: ``llm_calls`` and the hooks, metrics among them). A child that is killed
takes its records with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    Cancel,
    IsolatedTaskError,
    IsolationLimitExceeded,
    PermanentError,
    Retry,
    Snooze,
)

if TYPE_CHECKING:
    from conveyor.app import AgentSpec
    from conveyor.gateway.gateway import Gateway
    from conveyor.worker.context import TaskInfo

CHILD_MODULE = "conveyor.cli.isolated_child"  # the entry; the child is worker/isolated_child.py


@dataclass(frozen=True, slots=True)
class ProcessLimits:
    """The caps of one isolated run."""

    memory_mb: int
    """Address space (RLIMIT_AS) of the whole child, interpreter included, in MiB."""
    cpu_seconds: float
    """CPU time (RLIMIT_CPU) of the whole child, start-up included; rounded up to seconds."""

    @classmethod
    def of(cls, agent: AgentSpec) -> ProcessLimits:
        """The limits an isolated agent was registered with."""
        if agent.memory_limit_mb is None or agent.cpu_limit_seconds is None:
            raise ValueError(f"agent {agent.name!r} is not registered with isolation")
        return cls(agent.memory_limit_mb, agent.cpu_limit_seconds)


class _ChildTraceback(Exception):
    """The child's formatted traceback, chained as the cause of the error raised here."""

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


async def run_isolated(
    agent: AgentSpec,
    task: TaskInfo,
    payload: dict[str, Any],
    limits: ProcessLimits | None = None,
    *,
    llm: Gateway | None = None,
) -> Any:
    """Run ``agent``'s handler on ``payload`` in a child process; return its result.

    Raises what the handler raised (``Retry``, ``Snooze``, ``Cancel``, ``PermanentError``
    as themselves, anything else as :class:`IsolatedTaskError`) or
    :class:`IsolationLimitExceeded` when the child crossed a cap. Cancelling the call
    (timeout, cancel request, shutdown) kills the child and its process group at once.
    With ``llm``, the child builds ``ctx.llm`` from its config and its calls are
    recorded through it.
    """
    limits = limits or ProcessLimits.of(agent)
    request = {
        "handler": agent.handler_reference,
        "payload": payload,
        "task": dataclasses.asdict(task),
        "limits": dataclasses.asdict(limits),
        "sys_path": sys.path,
        "parent_pid": os.getpid(),
        "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        "llm": None if llm is None else llm.config.portable(),
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        CHILD_MODULE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=_child_environment(),
        # A group of its own: a terminal's Ctrl-C reaches the worker, which decides when the
        # child ends, and a kill takes any grandchildren with it.
        start_new_session=True,
    )
    try:
        out, _ = await child.communicate(json.dumps(request).encode())
    except BaseException:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            await child.wait()
        raise
    assert child.returncode is not None  # communicate() returns after the child exited
    reply = _parse_reply(out)
    if llm is not None and reply is not None:
        await _account(llm, reply.get("llm_calls"))
    return _result(agent.name, limits, child.returncode, reply)


async def _account(llm: Gateway, calls: Any) -> None:
    """Hand the child's LLM records to the worker's gateway."""
    if not isinstance(calls, list):
        return
    from conveyor.gateway.accounting.records import CallRecord

    for data in calls:
        try:
            record = CallRecord.from_json(data)
        except (TypeError, ValueError, KeyError):
            continue  # a malformed record is the child's bug; the task's outcome stands
        await llm.record(record)


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    # glibc reserves 64 MB of address space per malloc arena (one per thread), which an
    # RLIMIT_AS cap counts in full; one arena keeps the cap about memory actually used.
    env.setdefault("MALLOC_ARENA_MAX", "1")
    return env


def _result(
    agent: str, limits: ProcessLimits, returncode: int, reply: dict[str, Any] | None
) -> Any:
    """Turn how the child ended into the handler's result or the exception to raise."""
    if returncode < 0:
        signum = -returncode
        name = _signal_name(signum)
        if signum == signal.SIGXCPU:
            raise _exceeded(agent, limits, "cpu", "killed by SIGXCPU")
        if signum == signal.SIGKILL:
            raise _exceeded(
                agent, limits, "memory", "killed by SIGKILL: the kernel's OOM killer or an operator"
            )
        raise IsolatedTaskError(
            name,
            f"the isolated task's process died from {name} (a crash in native code, or its "
            f"{limits.memory_mb} MB memory limit hit where Python could not raise MemoryError)",
        )
    if reply is None:
        raise IsolatedTaskError(
            "ChildExited",
            f"the isolated task's process exited with status {returncode} without a result; "
            "its output is in the worker's stderr",
        )
    if "ok" in reply:
        return reply["ok"]
    error = reply["error"]
    cause = _ChildTraceback(error.get("traceback", ""))
    error_type, message = str(error.get("type")), str(error.get("message", ""))
    if error_type == "MemoryError":
        raise _exceeded(agent, limits, "memory", "MemoryError") from None
    outcome, delay = error.get("outcome"), error.get("delay")
    if outcome == "retry":
        raise Retry(after=delay, reason=message) from cause
    if outcome == "snooze":
        raise Snooze(delay or 0.0) from cause
    if outcome == "cancel":
        raise Cancel(message) from cause
    if error.get("permanent"):
        raise PermanentError(message) from cause
    raise IsolatedTaskError(error_type, message, str(error.get("traceback", ""))) from cause


def _exceeded(agent: str, limits: ProcessLimits, limit: str, how: str) -> IsolationLimitExceeded:
    if limit == "cpu":
        cap, setting = f"CPU limit of {limits.cpu_seconds:g}s", "cpu_limit_seconds"
    else:
        cap, setting = f"memory limit of {limits.memory_mb} MB", "memory_limit_mb"
    return IsolationLimitExceeded(
        limit,
        f"isolated task exceeded its {cap} ({how}); "
        f"give agent {agent!r} a larger {setting} if it needs more",
    )


def _parse_reply(out: bytes) -> dict[str, Any] | None:
    lines = out.strip().splitlines()
    if not lines:
        return None
    try:
        reply = json.loads(lines[-1])
    except ValueError:
        return None
    if isinstance(reply, dict) and ("ok" in reply or isinstance(reply.get("error"), dict)):
        return reply
    return None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
