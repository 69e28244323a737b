"""``ctx.llm``: the process's gateway with the running task's tenant and id filled in.

Every call it makes is accounted to the task's tenant (budgets, records), and every chunk
of a stream, like every finished chat, counts as the task's progress: a long streaming
agent keeps its lease and does not trip its ``stall_timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from conveyor.gateway.chat import ChatResult, Message
from conveyor.gateway.gateway import Gateway
from conveyor.gateway.streaming import ChatStream


class BoundLLM:
    """``chat`` and ``stream`` of a ``Gateway`` on behalf of one task."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        tenant_id: str | None,
        task_id: int | None,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.gateway = gateway
        self.tenant_id = tenant_id
        self.task_id = task_id
        self._on_progress = on_progress

    async def chat(
        self,
        *,
        model: str,
        messages: Sequence[Message],
        max_tokens: int | None = None,
        temperature: float | None = None,
        model_override: str | None = None,
    ) -> ChatResult:
        """A whole reply (see ``Gateway.chat``); reports progress when it arrives."""
        result = await self.gateway.chat(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            tenant_id=self.tenant_id,
            task_id=self.task_id,
            model_override=model_override,
        )
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
        model_override: str | None = None,
    ) -> ChatStream:
        """The reply chunk by chunk (see ``Gateway.stream``); each chunk reports progress."""
        return self.gateway.stream(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            tenant_id=self.tenant_id,
            task_id=self.task_id,
            model_override=model_override,
            on_chunk=self._on_progress,
        )
