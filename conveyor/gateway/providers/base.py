"""What every provider's wire format offers the gateway, and the pieces it parses into.

A wire format only translates: a ``ChatRequest`` into a JSON body and headers, and the
provider's reply (a JSON object, or the lines of a stream) back. Sending, timing and error
mapping are the same for every provider and live in ``conveyor.gateway.endpoint``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from conveyor.gateway.chat import ChatRequest

# Stop reasons that mean "the model finished" or "it hit max_tokens", per provider.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
}


class BadReply(Exception):
    """The provider's reply does not parse, or the stream reported an error mid-way."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One parsed step of a stream: a text delta, a finish reason, usage, or several."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    """The model the provider says answered (it may name a dated version of the one asked)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole non-streamed reply; token counts are None when the provider sent none."""

    text: str
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None = None
    """The model the provider says answered, when it says."""


class WireFormat(Protocol):
    """One provider API's request and reply shapes."""

    kind: str
    path: str

    def headers(self, api_key: str | None) -> dict[str, str]:
        """Headers of every request: authentication, API version."""
        ...

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body of ``request``."""
        ...

    def parse_reply(self, payload: Any) -> Reply:
        """A whole reply from its JSON; raises BadReply."""
        ...

    def parse_stream(self, lines: AsyncIterator[str]) -> AsyncGenerator[Piece, None]:
        """The pieces of a streamed reply from its lines; raises BadReply."""
        ...

    def error_message(self, payload: Any) -> str | None:
        """The message in an error body, if it has one in the API's shape."""
        ...


def model_name(raw: object) -> str | None:
    """The model a reply names, when it names one."""
    return raw if isinstance(raw, str) and raw else None


def finish_reason(raw: object) -> str:
    """A provider's stop reason in the common vocabulary (``stop``, ``length``, ...)."""
    if not isinstance(raw, str) or not raw:
        return "stop"
    return _FINISH_REASONS.get(raw, raw)


def count(value: object) -> int | None:
    """A token count from a reply, or None when it is missing or not a count."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def field(payload: Any, *path: str | int) -> Any:
    """``payload[path[0]][path[1]]...``, or None where the shape does not match."""
    node = payload
    for key in path:
        if isinstance(key, int):
            if not isinstance(node, list) or len(node) <= key:
                return None
        elif not isinstance(node, dict):
            return None
        node = node[key] if isinstance(key, int) else node.get(key)
    return node
