"""Server-Sent Events framing and the response that carries them.

A frame is ``id:``, ``event:`` and ``data:`` lines and a blank line (the WHATWG HTML
standard's event stream format); ``data`` is one line of JSON, so it never needs splitting.
The response sets the headers that stop proxies from buffering or caching the stream, and a
comment line every ``keep_alive`` seconds keeps idle connections from being timed out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each frame on at once
    "Connection": "keep-alive",
}
MEDIA_TYPE = "text/event-stream"


def frame(event: str, data: Any, event_id: str | None = None, retry_ms: int | None = None) -> str:
    """One event, ready to send."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'), allow_nan=False)}")
    return "\n".join(lines) + "\n\n"


KEEP_ALIVE = ": keep-alive\n\n"


async def with_keep_alive(frames: AsyncIterator[str], keep_alive: float) -> AsyncIterator[str]:
    """``frames``, with a comment whenever none came for ``keep_alive`` seconds."""
    iterator = frames.__aiter__()
    pending: asyncio.Task[str] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=keep_alive)
            if not done:
                yield KEEP_ALIVE
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


def event_stream(frames: AsyncIterator[str], keep_alive: float = 15.0) -> StreamingResponse:
    """The streaming response of ``frames``, with keep-alive comments and SSE headers."""
    return StreamingResponse(
        with_keep_alive(frames, keep_alive), media_type=MEDIA_TYPE, headers=HEADERS
    )
