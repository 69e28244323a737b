"""``ctx.llm``: the process's gateway on behalf of the running task.

Every call it makes carries the task's scope: its tenant (budgets, spend, model override),
its id and group (accounting), and its deadline (no wait for a budget or a retry outlasts
the task). Every chunk of a stream, like every finished chat, counts as the task's
progress: a long streaming agent keeps its lease and does not trip its ``stall_timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from conveyor.gateway.chat import ChatResult, Message, Prompt
from conveyor.gateway.gateway import Gateway
from conveyor.gateway.scope import CallScope
from conveyor.gateway.streaming import ChatStream


class BoundLLM:
    """``chat`` and ``stream`` of a ``Gateway`` on behalf of one task."""

    def __init__(
        self,
        gateway: Gateway,
        scope: CallScope,
        *,
        on_progress: Callable[[], None] | None = None,
        cache: bool = False,
    ) -> None:
        self.gateway = gateway
        self.scope = scope
        self.cache = cache
        """The agent opted in to the response cache (``@app.agent(..., llm_cache=True)``)."""
        self._on_progress = on_progress

    async def chat(
        self,
        *,
        model: str,
        messages: Sequence[Message],
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatResult:
        """A whole reply (see ``Gateway.chat``); reports progress when it arrives."""
        prompt = Prompt(model, messages, max_tokens, temperature)
        result = await self.gateway.chat_prompt(prompt, self.scope, cache=self.cache)
        if self._on_progress is not None:
            self._on_progress()
        return result

    def stream(
        self,
        *,
        model: str,
        messages: Sequence[Message],
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatStream:
        """The reply chunk by chunk (see ``Gateway.stream``); each chunk reports progress."""
        prompt = Prompt(model, messages, max_tokens, temperature)
        return self.gateway.stream_prompt(prompt, self.scope, on_chunk=self._on_progress)
