"""TokenRelay: an agent's streamed LLM output, from the worker to the live stream's readers.

``on_chunk`` runs on the stream's path, so it only appends to a buffer; a flusher writes the
buffer every ``interval`` seconds in one call to the sink. Consecutive deltas of one task
within a flush become one row, so a fast stream costs a row per task per flush, not per
token. Rows are numbered per run (``CallScope.run``, the lease token) from 0; a run that
streams several calls continues the count, and the end of each call is a row of kind "end".

Failures of the sink are logged and the batch dropped: live output is a view of the work,
never part of it (the task's result and events are durable elsewhere).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

import structlog

from conveyor.gateway.chat import ChatChunk
from conveyor.gateway.hooks import AttemptInfo, LLMHook
from conveyor.store.event_records import LiveChunk

log = structlog.get_logger("conveyor.streams")

FORGET_AFTER = 600.0
"""A run's counter is forgotten after this many idle seconds (its task is long done)."""


class ChunkSink(Protocol):
    """Where live output goes: ``PostgresStore`` (task_chunks) or a Redis stream per task."""

    async def append_chunks(self, new: Sequence[LiveChunk]) -> None: ...


class TokenRelay(LLMHook):
    """Relays every streamed chunk of every task to ``sink``, in order, in batches."""

    def __init__(self, sink: ChunkSink, *, interval: float = 0.05) -> None:
        self._sink = sink
        self._interval = interval
        self._buffer: list[LiveChunk] = []
        self._next_seq: dict[tuple[int, int], int] = {}
        self._last_used: dict[tuple[int, int], float] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False

    def on_chunk(self, chunk: ChatChunk, attempt: AttemptInfo) -> None:
        scope = attempt.scope
        if scope.task_id is None or scope.run is None or scope.tenant_id is None:
            return  # a call outside a task: nobody can watch it
        if chunk.text:
            self._add(scope.task_id, scope.run, scope.tenant_id, "chunk", chunk.text)
        if chunk.done:
            self._add(scope.task_id, scope.run, scope.tenant_id, "end", "")
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    def _add(self, task_id: int, run: int, tenant_id: str, kind: str, text: str) -> None:
        last = self._buffer[-1] if self._buffer else None
        if (
            kind == "chunk"
            and last is not None
            and last.kind == "chunk"
            and (last.task_id, last.run) == (task_id, run)
        ):
            merged = last.text + text
            self._buffer[-1] = LiveChunk(task_id, run, last.seq, "chunk", merged, tenant_id)
            return
        key = (task_id, run)
        seq = self._next_seq.get(key, 0)
        self._next_seq[key] = seq + 1
        self._last_used[key] = time.monotonic()
        self._buffer.append(LiveChunk(task_id, run, seq, kind, text, tenant_id))

    async def _flush_soon(self) -> None:
        while self._buffer:
            if not self._closing:
                await asyncio.sleep(self._interval)
            batch, self._buffer = self._buffer, []
            try:
                await self._sink.append_chunks(batch)
            except Exception as exc:  # a view of the work, never the work itself
                log.warning("live_output_dropped", chunks=len(batch), error=str(exc))
            self._forget_idle_runs()

    def _forget_idle_runs(self) -> None:
        horizon = time.monotonic() - FORGET_AFTER
        for key in [k for k, used in self._last_used.items() if used < horizon]:
            self._next_seq.pop(key, None)
            self._last_used.pop(key, None)

    async def aclose(self) -> None:
        """Write what is buffered (the worker calls this on its way out)."""
        self._closing = True
        if self._flusher is not None and not self._flusher.done():
            await self._flusher
        elif self._buffer:
            await self._flush_soon()
