"""The chains of ``around_task`` and ``around_step`` hooks a worker runs each task through.

``TaskHook`` (the plugin's side) lives in ``conveyor/app.py``, where users register it; this
module only nests the hooks around a run or a step. A worker with no hooks never calls it:
the handler (or the step) is awaited directly, as before hooks existed.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.app import CallNext, StepInfo, TaskHook

if TYPE_CHECKING:
    from conveyor.worker.context import TaskContext


def around_hooks(hooks: Sequence[TaskHook]) -> tuple[TaskHook, ...]:
    """The hooks that do something, in order (a ``TaskHook`` that does not override
    ``around_task`` would only add a call); TypeError for anything that is not one."""
    kept = []
    for hook in hooks:
        if not isinstance(hook, TaskHook):
            raise TypeError(f"a task hook must subclass TaskHook, not {type(hook).__name__}")
        if type(hook).around_task is not TaskHook.around_task:
            kept.append(hook)
    return tuple(kept)


def step_hooks(hooks: Sequence[TaskHook]) -> tuple[TaskHook, ...]:
    """The hooks that override ``around_step``, in order (``around_hooks`` checked types)."""
    return tuple(h for h in hooks if type(h).around_step is not TaskHook.around_step)


def run_around(hooks: Sequence[TaskHook], ctx: TaskContext, run: CallNext) -> Awaitable[Any]:
    """``run()`` inside every hook's ``around_task``, the first hook outermost."""
    call = run
    for hook in reversed(hooks):
        call = functools.partial(hook.around_task, ctx, call)
    return call()


def run_step_around(
    hooks: Sequence[TaskHook], ctx: TaskContext, step: StepInfo, run: CallNext
) -> Awaitable[Any]:
    """``run()`` (one step or effect) inside every hook's ``around_step``, first outermost."""
    call = run
    for hook in reversed(hooks):
        call = functools.partial(hook.around_step, ctx, step, call)
    return call()
