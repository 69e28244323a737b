"""Server-Sent Events on the wire: frames, keep-alive comments, and the streaming response.

Any SSE route (the event log's, the live tokens') builds its frames with :func:`frame`,
hands an async iterator of them to :func:`sse_response`, and gets what every proxy and
browser needs: ``text/event-stream``, no caching, no proxy buffering (``X-Accel-Buffering``
for nginx), a ``retry:`` hint for ``EventSource``, and a ``: keep-alive`` comment whenever
the source is silent for ``keepalive_seconds`` (idle connections are cut by load balancers,
and a comment is how a server notices that a client has gone).

When the client disconnects, Starlette cancels the response's task: the source iterator
sees ``CancelledError`` at its ``await`` and its ``finally`` blocks run.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

EVENT_STREAM = "text/event-stream"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
"""SSE's line ends (and only them: a U+2028 in a token is text, not a new line)."""

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx (and others that honour it): pass each frame on now
}

KEEPALIVE = b": keep-alive\n\n"

RECONNECT_MS = 1000
"""The ``retry:`` hint: how long an ``EventSource`` waits before it reconnects."""


def frame(data: str, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One event: ``id:``, ``event:``, one ``data:`` line per line of ``data`` (a client
    joins them with ``\\n``), and the blank line that ends it."""
    lines = []
    if event_id is not None:
        _check_field("id", event_id)
        lines.append(f"id: {event_id}")
    if event is not None:
        _check_field("event", event)
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def comment(text: str) -> bytes:
    """A comment line (clients ignore it): ``: text``."""
    _check_field("comment", text)
    return f": {text}\n\n".encode()


def retry_hint(milliseconds: int = RECONNECT_MS) -> bytes:
    """The ``retry:`` field: the client's reconnection delay."""
    return f"retry: {int(milliseconds)}\n\n".encode()


async def with_keepalive(
    source: AsyncIterator[bytes], keepalive_seconds: float
) -> AsyncIterator[bytes]:
    """``source``'s frames, with :data:`KEEPALIVE` after each silence of
    ``keepalive_seconds``. The pending read is kept across a keep-alive (cancelling it
    would close ``source``), and cancelled if the stream ends early."""
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(_next(source))
            done, _ = await asyncio.wait({pending}, timeout=keepalive_seconds)
            if not done:
                yield KEEPALIVE
                continue
            finished, pending = pending, None
            try:
                chunk = finished.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        if pending is not None and not pending.done():
            # the source runs in that task: cancelling it ends the source there (its
            # finally blocks run); closing it from here too would race that task
            pending.cancel()
        else:
            closer = getattr(source, "aclose", None)
            if closer is not None:
                await closer()


def sse_response(
    source: AsyncIterator[bytes],
    *,
    keepalive_seconds: float | None,
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """A streaming ``text/event-stream`` response of ``source``'s frames, with keep-alive
    comments added (``keepalive_seconds`` None: ``source`` sends its own, cheaper)."""

    async def body() -> AsyncIterator[bytes]:
        yield retry_hint()
        frames = source if keepalive_seconds is None else with_keepalive(source, keepalive_seconds)
        async for chunk in frames:
            yield chunk

    return StreamingResponse(
        body(), media_type=EVENT_STREAM, headers={**SSE_HEADERS, **(headers or {})}
    )


def event_stream_responses(description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for an SSE route: its 200 is ``text/event-stream`` (in /openapi.json)."""
    return {
        200: {
            "description": description,
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
        }
    }


async def _next(source: AsyncIterator[bytes]) -> bytes:
    return await anext(source)


def _check_field(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {name} field holds no line break, got {value[:80]!r}")
