"""Hooks on the gateway's call path: before an attempt is sent, after it settles, per chunk.

A plugin (metrics, tracing, a token relay) subclasses ``LLMHook`` and overrides what it
needs; ``Gateway(config, hooks=[...])`` takes them in order. In the spirit of httpx's
event hooks, the gateway knows nothing of what a hook does::

    class TraceHeader(LLMHook):
        async def before_attempt(self, attempt: AttemptInfo) -> None:
            attempt.headers["traceparent"] = current_traceparent()

The order: ``before_attempt`` runs first to last, ``after_attempt`` last to first (an onion:
the first hook opens first and closes last, as a span must), ``on_chunk`` first to last.
A hook that raises is logged (``llm_hook_failed``) and never fails the call: a plugin must
not be able to break what it observes. Only overridden methods are called, so a hook that
watches records costs streamed chunks nothing, and no hooks cost the path nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from conveyor.gateway.accounting.records import CallRecord
from conveyor.gateway.chat import ChatChunk
from conveyor.gateway.model_routes import Target
from conveyor.gateway.scope import CallScope

log = structlog.get_logger("conveyor.gateway")


@dataclass(slots=True, eq=False)
class AttemptInfo:
    """One attempt as hooks see it: the same object before it is sent, per chunk, after.

    ``headers`` are added to the HTTP request (``before_attempt`` may set them; the
    provider's own headers, its key among them, win on a clash). Compare attempts by
    identity (``is``, or as dict keys) to tie a ``before_attempt`` to its ``after_attempt``.
    """

    scope: CallScope
    """The task the call is for (tenant, task and group ids, queue, deadline)."""
    requested: str
    """The alias or ``provider/model`` the caller asked for."""
    target: Target
    """The provider and model this attempt goes to."""
    number: int
    """1-based attempt number at this target."""
    ordinal: int
    """1-based attempt number across the whole call (fallbacks included)."""
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)


class LLMHook:
    """A gateway plugin; override any of the three methods (the defaults do nothing)."""

    async def before_attempt(self, attempt: AttemptInfo) -> None:
        """Called when an attempt has passed its breaker and budget, just before sending."""

    async def after_attempt(self, record: CallRecord, attempt: AttemptInfo | None) -> None:
        """Called once per record the gateway makes, after the attempt settled.

        ``attempt`` is None for a record of something never sent: an open breaker, a
        budget refusal, a reply from the response cache.
        """

    def on_chunk(self, chunk: ChatChunk, attempt: AttemptInfo) -> None:
        """Called for each chunk of a stream as it is relayed to the caller (the last one
        carries the result). Synchronous and on the stream's path: hand I/O to a queue."""


def _overrides(hook: LLMHook, name: str) -> bool:
    return getattr(type(hook), name) is not getattr(LLMHook, name)


class HookChain:
    """A gateway's hooks, sorted by what each overrides; calls them in order, safely."""

    __slots__ = ("after", "before", "chunk", "hooks")

    def __init__(self, hooks: Sequence[LLMHook] = ()) -> None:
        self.hooks = tuple(hooks)
        for hook in self.hooks:
            if not isinstance(hook, LLMHook):
                raise TypeError(f"an LLM hook must subclass LLMHook, not {type(hook).__name__}")
        self.before = tuple(h for h in self.hooks if _overrides(h, "before_attempt"))
        self.after = tuple(h for h in reversed(self.hooks) if _overrides(h, "after_attempt"))
        self.chunk = tuple(h for h in self.hooks if _overrides(h, "on_chunk"))

    async def before_attempt(self, attempt: AttemptInfo) -> None:
        """Every ``before_attempt``, first to last."""
        for hook in self.before:
            try:
                await hook.before_attempt(attempt)
            except Exception:
                log.exception("llm_hook_failed", hook=type(hook).__name__, at="before_attempt")

    async def after_attempt(self, record: CallRecord, attempt: AttemptInfo | None) -> None:
        """Every ``after_attempt``, last to first."""
        for hook in self.after:
            try:
                await hook.after_attempt(record, attempt)
            except Exception:
                log.exception("llm_hook_failed", hook=type(hook).__name__, at="after_attempt")

    def on_chunk(self, chunk: ChatChunk, attempt: AttemptInfo) -> None:
        """Every ``on_chunk``, first to last."""
        for hook in self.chunk:
            try:
                hook.on_chunk(chunk, attempt)
            except Exception:
                log.exception("llm_hook_failed", hook=type(hook).__name__, at="on_chunk")
