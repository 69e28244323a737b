"""Lines and server-sent events from a streamed body, as the two stream formats need them.

Lines end in LF, CRLF or CR (what the SSE specification allows; NDJSON uses LF, and JSON
has no raw CR or LF inside a value, so the same splitter serves both). Not ``str.splitlines``
(which httpx's ``aiter_lines`` uses): it also breaks at U+2028 and other separators that a
model's text may contain unescaped inside a JSON string.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its ``event:`` name (``message`` by default) and joined data."""

    event: str
    data: str


async def split_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of a byte stream, without their line endings, decoded as UTF-8."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while True:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, lf if lf >= 0 else len(buffer))
            if cr >= 0:
                if cr == len(buffer) - 1:
                    break  # a CR at the end may be the first half of a CRLF: wait for more
                yield buffer[start:cr].decode("utf-8", "replace")
                start = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            elif lf >= 0:
                yield buffer[start:lf].decode("utf-8", "replace")
                start = lf + 1
            else:
                break
        buffer = buffer[start:]
    if buffer.endswith(b"\r"):  # the stream ended right after a CR: it ended a line
        yield buffer[:-1].decode("utf-8", "replace")
    elif buffer:
        yield buffer.decode("utf-8", "replace")


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """Events from SSE lines: ``event:`` and ``data:`` fields, dispatched at a blank line.

    Comments (``:``-lines, used as keep-alives) and other fields (``id``, ``retry``) are
    skipped; an event without data is not dispatched, as the specification says.
    """
    event = ""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield SSEEvent(event or "message", "\n".join(data))
