"""Refuse a request body over its limit with 413, before it is read into memory.

A plain ASGI middleware: it checks ``Content-Length`` up front and counts the bytes of a
chunked body as they arrive, so neither form can make the process buffer more than the
limit. Batch submits get the larger limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Wraps an ASGI app; ``limit_for(path)`` gives each path's limit in bytes."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            # Read (and drop) a moderately large body before answering: a client still
            # writing it would otherwise see a reset instead of the 413.
            if int(declared) <= _DRAIN_AT_MOST:
                await _drain(receive)
            await _too_large(scope, send, limit)
            return
        seen = 0
        answered = False

        async def counted() -> Message:
            # The 413 is sent from here, the moment the limit is passed: an exception would
            # reach FastAPI's body reading, which turns it into a 400 of its own.
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request" and not answered:
                seen += len(message.get("body", b""))
                if seen > limit:
                    answered = True
                    if message.get("more_body", False):
                        await _drain(receive)
                    await _too_large(scope, send, limit)
                    return {"type": "http.disconnect"}  # the app stops reading
            return message

        async def unless_answered(message: Message) -> None:
            if not answered:
                await send(message)

        try:
            await self.app(scope, counted, unless_answered)
        except Exception:
            if not answered:
                raise  # after the 413, whatever the app made of the cut body is moot


_DRAIN_AT_MOST = 16 * 1_048_576


async def _drain(receive: Receive) -> None:
    """Read what is left of the body, up to _DRAIN_AT_MOST bytes (then the reset is fair)."""
    read = 0
    while read <= _DRAIN_AT_MOST:
        message = await receive()
        read += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "type": "urn:conveyor:problem:too-large",
            "title": "Content Too Large",
            "status": 413,
            "detail": f"the request body is over its limit of {limit} bytes; "
            "split a batch, or keep large inputs elsewhere and pass a reference",
            "instance": scope["path"],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
