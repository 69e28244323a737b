"""``CallLog``: every call record into ``llm_calls``, in batches off the call's path.

A record costs the call an append to a list. A background flusher writes what has
gathered every ``interval`` seconds (or as soon as ``batch`` records wait) in one
statement, which prices each row from ``llm_prices``. Records still buffered when the
process dies are lost, so totals may miss the last fraction of a second of a killed
worker; ``aclose`` (the worker's shutdown) writes the rest. A failed write is logged and
its records dropped: accounting never blocks or fails the calls it accounts for, and a
database that is down must not grow the buffer without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from conveyor.gateway.accounting.records import CallRecord

log = structlog.get_logger("conveyor.gateway")

DEFAULT_INTERVAL = 0.2
DEFAULT_BATCH = 500
MAX_BUFFER = 50_000
MAX_ERROR_CHARS = 1000


class CallStore(Protocol):
    """What the log writes to (PostgresStore has it)."""

    async def record_llm_calls(self, rows: Sequence[dict[str, Any]]) -> None: ...


def call_row(record: CallRecord) -> dict[str, Any]:
    """The ``llm_calls`` columns of a record (cost is the database's to compute)."""
    return {
        "created_at": record.at.isoformat(),
        "tenant_id": record.tenant_id or "",
        "task_id": record.task_id,
        "group_id": record.group_id,
        "requested": record.requested,
        "provider": record.provider,
        "model": record.model,
        "attempt": record.attempt,
        "outcome": record.outcome.value,
        "stream": record.stream,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "usage_estimated": record.usage_estimated,
        "latency_ms": round(record.latency * 1000, 3),
        "ttft_ms": None if record.ttft is None else round(record.ttft * 1000, 3),
        "status": record.status,
        "error": None if record.error is None else record.error[:MAX_ERROR_CHARS],
    }


class CallLog:
    """A ``CallRecorder`` that writes ``llm_calls`` rows in batches."""

    def __init__(
        self,
        store: CallStore,
        *,
        interval: float = DEFAULT_INTERVAL,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self._store = store
        self._interval = interval
        self._batch = batch
        self._buffer: list[dict[str, Any]] = []
        self._full = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self.written = 0
        self.dropped = 0

    async def record(self, record: CallRecord) -> None:
        """Buffer the record; the flusher writes it within ``interval`` seconds."""
        if self._closed:
            return
        if len(self._buffer) >= MAX_BUFFER:
            self.dropped += 1
            return
        self._buffer.append(call_row(record))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="conveyor-llm-calls")
        if len(self._buffer) >= self._batch:
            self._full.set()

    async def flush(self) -> None:
        """Write everything buffered now."""
        while self._buffer:
            rows, self._buffer = self._buffer[: self._batch], self._buffer[self._batch :]
            try:
                await self._store.record_llm_calls(rows)
                self.written += len(rows)
            except asyncio.CancelledError:
                self._buffer[:0] = rows  # aclose() writes them
                raise
            except Exception:
                self.dropped += len(rows)
                log.exception("llm_calls_write_failed", rows=len(rows))

    async def aclose(self) -> None:
        """Stop the flusher and write what is left."""
        self._closed = True
        self._full.set()
        if self._flusher is not None:
            await self._flusher  # it writes what it holds and stops: nothing written twice
            self._flusher = None
        await self.flush()

    async def _flush_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._interval)
            self._full.clear()
            await self.flush()
