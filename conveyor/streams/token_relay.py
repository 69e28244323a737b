"""TokenRelay: an agent's streamed LLM output, from the worker to the live stream's readers.

``on_chunk`` runs on the stream's path, so it only appends to a buffer; a flusher writes the
buffer every ``interval`` seconds in one call to the sink. Consecutive deltas of one task
within a flush become one row, so a fast stream costs a row per task per flush, not per
token. Rows are numbered per run (``CallScope.run``, the lease token) from 0; a run that
streams several calls continues the count, and the end of each call is a row of kind "end".
A run's count is kept while its ``CallScope`` lives (the task's context holds it for the
whole run), however long the run pauses between calls: restarting it at 0 would collide
with rows already written, which the table then ignores (lost output).

Failures of the sink are logged and the batch dropped: live output is a view of the work,
never part of it (the task's result and events are durable elsewhere).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Protocol

import structlog

from conveyor.gateway.chat import ChatChunk
from conveyor.gateway.hooks import AttemptInfo, LLMHook
from conveyor.store.event_records import LiveChunk

log = structlog.get_logger("conveyor.streams")


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
        self._scopes: dict[tuple[int, int], set[int]] = {}
        """The ids of the live scopes of each counted run: the count goes with the last."""
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False

    def on_chunk(self, chunk: ChatChunk, attempt: AttemptInfo) -> None:
        scope = attempt.scope
        if scope.task_id is None or scope.run is None or scope.tenant_id is None:
            return  # a call outside a task: nobody can watch it
        self._track((scope.task_id, scope.run), scope)
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

    def _track(self, key: tuple[int, int], scope: object) -> None:
        scopes = self._scopes.setdefault(key, set())
        if id(scope) not in scopes:
            scopes.add(id(scope))
            weakref.finalize(scope, self._scope_gone, key, id(scope))

    def _scope_gone(self, key: tuple[int, int], scope_id: int) -> None:
        """The run's context is gone: no more output can come for it, forget its count."""
        scopes = self._scopes.get(key)
        if scopes is not None:
            scopes.discard(scope_id)
            if not scopes:
                del self._scopes[key]
                self._next_seq.pop(key, None)

    @property
    def runs_counted(self) -> int:
        """How many runs' counts are kept now (one per run whose scope still lives)."""
        return len(self._next_seq)

    async def aclose(self) -> None:
        """Write what is buffered (the worker calls this on its way out)."""
        self._closing = True
        if self._flusher is not None and not self._flusher.done():
            await self._flusher
        elif self._buffer:
            await self._flush_soon()
