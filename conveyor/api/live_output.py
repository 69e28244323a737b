"""LiveOutputHub: every viewer of a running task's LLM output, served by one reader.

One per API process. Viewers register the task and where they are (``(run, seq)``, from
``Last-Event-ID``); the hub reads ``task_chunks`` for all of them in one statement per
wake-up (a ``conveyor_chunks`` notification on the process's listening connection, or the
poll that backs it up) and hands each viewer what lies after its own cursor. A new viewer
wakes the hub, so its backlog is read the same way: no per-client query, no per-client
connection.

A viewer whose buffer fills (a client that reads slower than the agent writes) is cut off:
its stream closes and the client resumes with ``Last-Event-ID``, reading from the table.
A task that has ended gets its stream closed once the hub has read past its last output
(after ``end_grace`` seconds, since the relay writes up to one flush after the run ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from conveyor.store.event_records import LiveChunk

log = structlog.get_logger("conveyor.api.live")

Cursor = tuple[int, int]


class LiveOutputStore(Protocol):
    """What the hub reads: ``PostgresStore`` (or a Redis-backed reader)."""

    async def chunks_after(
        self, watched: Sequence[tuple[str, int, Cursor]], limit: int = 5000
    ) -> list[LiveChunk]: ...
    async def tasks_ended(self, task_ids: Sequence[int]) -> set[int]: ...


class Closing:
    """Why a viewer's stream ends: its task ended, or it fell behind (resumable)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


ENDED = Closing("ended")
BEHIND = Closing("behind")


@dataclass(eq=False)
class LiveViewer:
    """One client's view of one task: a bounded queue of chunks, then a ``Closing``."""

    tenant_id: str
    task_id: int
    cursor: Cursor
    queue: asyncio.Queue[LiveChunk | Closing] = field(default_factory=asyncio.Queue)
    closed: bool = False


class LiveOutputHub:
    """Reads live output for every viewer of this process; see the module docstring."""

    def __init__(
        self,
        store: LiveOutputStore,
        *,
        poll_seconds: float = 1.0,
        end_grace: float = 1.0,
        viewer_buffer: int = 10_000,
    ) -> None:
        self._store = store
        self._poll_seconds = poll_seconds
        self._end_grace = end_grace
        self._viewer_buffer = viewer_buffer
        self._viewers: dict[int, set[LiveViewer]] = {}
        self._ended_since: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.cut_off = 0
        """Viewers closed for falling behind, since start."""

    @property
    def viewers(self) -> int:
        """How many viewers are registered now."""
        return sum(len(v) for v in self._viewers.values())

    def wake(self, _payload: str = "") -> None:
        """New output was written (a notification): read now."""
        self._wake.set()

    def start(self) -> None:
        """Start the reader (idempotent)."""
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read_forever())

    async def stop(self) -> None:
        """Stop the reader; viewers still registered are told to close (resumable)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self.close_viewers()

    def close_viewers(self) -> None:
        """End every viewer's stream now, resumably (the server is stopping: its clients
        reconnect with ``Last-Event-ID`` to another instance)."""
        # _close unwatches: iterate over copies, or the dict and sets change underfoot
        for viewers in list(self._viewers.values()):
            for viewer in list(viewers):
                self._close(viewer, BEHIND)

    def watch(self, tenant_id: str, task_id: int, cursor: Cursor) -> LiveViewer:
        """Register a viewer of ``task_id`` that has everything up to ``cursor``."""
        viewer = LiveViewer(tenant_id, task_id, cursor)
        self._viewers.setdefault(task_id, set()).add(viewer)
        self._wake.set()
        return viewer

    def unwatch(self, viewer: LiveViewer) -> None:
        """Forget ``viewer`` (its client went away or its stream ended)."""
        viewers = self._viewers.get(viewer.task_id)
        if viewers is not None:
            viewers.discard(viewer)
            if not viewers:
                del self._viewers[viewer.task_id]
                self._ended_since.pop(viewer.task_id, None)

    async def _read_forever(self) -> None:
        last_end_check = 0.0
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when a
            # cancel (stop) and a wake-up arrive together, and stop() then waits forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
            if not self._viewers:
                continue
            try:
                now = time.monotonic()
                if now - last_end_check >= self._poll_seconds / 2:
                    last_end_check = now
                    await self._note_ended()
                await self._read_once()
            except Exception as exc:  # the database is away: viewers wait, then resume
                log.warning("live_output_read_failed", error=str(exc))
                await asyncio.sleep(self._poll_seconds)

    async def _note_ended(self) -> None:
        ended = await self._store.tasks_ended(list(self._viewers))
        now = time.monotonic()
        for task_id in ended:
            self._ended_since.setdefault(task_id, now)

    async def _read_once(self) -> None:
        watched: dict[int, tuple[str, int, Cursor]] = {}
        for task_id, viewers in self._viewers.items():
            for viewer in viewers:
                known = watched.get(task_id)
                if known is None or viewer.cursor < known[2]:
                    watched[task_id] = (viewer.tenant_id, task_id, viewer.cursor)
        chunks = await self._store.chunks_after(list(watched.values()))
        by_task: dict[int, list[LiveChunk]] = {}
        for chunk in chunks:
            by_task.setdefault(chunk.task_id, []).append(chunk)
        now = time.monotonic()
        for task_id, viewers in list(self._viewers.items()):
            fresh = by_task.get(task_id, [])
            for viewer in list(viewers):
                self._deliver(viewer, fresh)
            ended_at = self._ended_since.get(task_id)
            if not fresh and ended_at is not None and now - ended_at >= self._end_grace:
                for viewer in list(viewers):
                    self._close(viewer, ENDED)
        if len(chunks) >= 5000:
            self._wake.set()  # a full page: there is more

    def _deliver(self, viewer: LiveViewer, chunks: list[LiveChunk]) -> None:
        if viewer.closed:
            return
        for chunk in chunks:
            if chunk.cursor <= viewer.cursor or chunk.tenant_id not in ("", viewer.tenant_id):
                continue
            if viewer.queue.qsize() >= self._viewer_buffer:
                self.cut_off += 1
                log.info(
                    "live_viewer_cut_off", task_id=viewer.task_id, buffered=self._viewer_buffer
                )
                self._close(viewer, BEHIND)
                return
            viewer.queue.put_nowait(chunk)
            viewer.cursor = chunk.cursor

    def _close(self, viewer: LiveViewer, why: Closing) -> None:
        if not viewer.closed:
            viewer.closed = True
            viewer.queue.put_nowait(why)
            self.unwatch(viewer)
