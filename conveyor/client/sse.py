"""Reading Server-Sent Events: lines in, events out (the WHATWG parsing rules), no I/O.

Both clients feed the lines of a streamed response to an ``SSEDecoder``; the event model
and the resume rule (send the last ``id`` back as ``Last-Event-ID``) live here too, so the
sync and async iterators differ only in how they wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from conveyor.core.events import FINAL_KINDS


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: ``event`` defaults to ``"message"``; ``id`` is the last id
    seen on the stream (it carries over to later events that set none)."""

    event: str
    data: str
    id: str | None
    retry: int | None = None


class SSEDecoder:
    """Turns a stream's lines (without their line ends) into events, one ``feed`` at a time."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._retry: int | None = None

    @property
    def last_id(self) -> str | None:
        """The last event id the stream set: where a reconnect resumes."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The reconnection delay the server asked for, in milliseconds."""
        return self._retry

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line; the event it completes (a blank line ends an event), if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(
            self._event or "message", "\n".join(self._data), self._last_id, self._retry
        )
        self._event, self._data = "", []
        return event


class TaskEventView(BaseModel):
    """One event of a task's log, as the event streams send it (docs/events.md)."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The event's position in the log: send it back as ``Last-Event-ID`` to resume."""
    task_id: int
    kind: str
    """``created``, ``started``, ..., ``succeeded``, ``dead``, ``cancelled``, or an
    agent's own kind (``ctx.emit``)."""
    at: datetime
    queue: str
    group_id: str | None = None
    attempt: int | None = None
    data: Any = None

    @property
    def final(self) -> bool:
        """Whether this is the last event of its task's log."""
        return self.kind in FINAL_KINDS


def task_event(sse: ServerSentEvent) -> TaskEventView:
    """The log event a frame carries."""
    return TaskEventView.model_validate_json(sse.data)


def events_params(
    *,
    group_id: str | None,
    queue: str | None,
    task_id: int | None,
    from_start: bool,
) -> dict[str, str | int]:
    """The query of ``GET /v1/events``."""
    params: dict[str, str | int] = {}
    if group_id is not None:
        params["group_id"] = group_id
    if queue is not None:
        params["queue"] = queue
    if task_id is not None:
        params["task_id"] = int(task_id)
    if from_start:
        params["from"] = "start"
    return params


END_EVENT = "end"
"""The frame a task's stream ends with (no ``id``): the task is finished, do not resume."""


class EventReader:
    """One logical event stream across reconnects: decodes lines into log events, keeps
    the id to resume after, and says when the stream is over (``done``)."""

    def __init__(self, last_event_id: str | None, *, ends: bool) -> None:
        self.last_event_id = last_event_id
        self.done = False
        self._ends = ends
        self._decoder = SSEDecoder()

    def headers(self) -> dict[str, str]:
        """The headers of the next (re)connection."""
        sent = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id:
            sent["Last-Event-ID"] = self.last_event_id
        return sent

    def feed(self, line: str) -> TaskEventView | None:
        """Take one line; the log event it completes, if any."""
        sse = self._decoder.feed(line)
        if sse is None:
            return None
        if sse.event == END_EVENT:
            self.done = True
            return None
        event = task_event(sse)
        self.last_event_id = event.id
        if self._ends and event.final:
            self.done = True
        return event

    def reconnected(self) -> None:
        """A new connection starts: a half-read frame of the old one is dropped."""
        self._decoder = SSEDecoder()
