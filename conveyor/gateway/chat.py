"""The common shape of a chat call, whatever the provider: request, result, stream chunks.

Messages are OpenAI-style ``{"role": ..., "content": ...}`` mappings with string content;
each provider module turns them into its own wire format (Anthropic's ``system`` field,
Ollama's ``options``) and its reply back into a ``ChatResult``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.errors import LLMPermanentError

ROLES = frozenset({"system", "user", "assistant"})

Message = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Prompt:
    """What a caller asks of a model: the arguments ``chat`` and ``stream`` share.

    ``model`` is an alias or ``provider/model``. ``max_tokens`` None is the config's
    ``default_max_tokens``; ``temperature`` None leaves it to the provider.
    """

    model: str
    messages: Sequence[Message]
    max_tokens: int | None = None
    temperature: float | None = None

    def checked_messages(self) -> tuple[Message, ...]:
        """The messages as a tuple, or LLMPermanentError naming what is malformed in them
        or in ``max_tokens``."""
        max_tokens = self.max_tokens
        if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens < 1):
            raise LLMPermanentError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        return checked_messages(self.messages)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One request to one provider's model, before it is put in the provider's format."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float | None = None
    stream: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    """HTTP headers added by hooks (``AttemptInfo.headers``); the provider's own win."""


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A finished reply.

    ``finish_reason`` is ``stop`` or ``length`` (Anthropic's ``end_turn`` and
    ``max_tokens`` are mapped to them; other reasons pass through). ``latency`` and
    ``ttft`` are seconds of the attempt that succeeded; ``attempts`` counts every attempt
    of the call, failed ones and fallbacks included. ``usage_estimated`` is True when the
    provider reported no usage and the counts are the gateway's estimate.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    provider: str
    model: str
    latency: float
    ttft: float
    attempts: int = 1
    usage_estimated: bool = False
    cached: bool = False
    """True when the reply came from the response cache, not a provider
    (``accounting/response_cache.py``)."""
    waited: float = 0.0
    """Seconds the call waited on purpose: for its budget slots and between retries."""
    sent: float = 0.0
    """Seconds inside its attempts, failed ones included. The gateway's own time is the
    call's wall time less ``sent`` and ``waited`` (set by ``chat``, not by streams)."""

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """A piece of a streamed reply: a text delta, or the last chunk carrying the result.

    The last chunk of a stream has ``text == ""`` and ``result`` set to the whole reply
    (its text is every delta joined), so a caller can read usage without adding it up.
    """

    text: str
    result: ChatResult | None = None

    @property
    def done(self) -> bool:
        """True on the last chunk."""
        return self.result is not None


def checked_messages(messages: Sequence[Message]) -> tuple[Message, ...]:
    """``messages`` as a tuple, or LLMPermanentError saying which one is malformed.

    Checked before anything is sent: a malformed message is the caller's bug, and every
    provider would refuse it with a 400 after a round trip.
    """
    if isinstance(messages, str | bytes) or not messages:
        raise LLMPermanentError("messages must be a non-empty list of {role, content} objects")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise LLMPermanentError(f"messages[{index}] must be a mapping, got {message!r:.80}")
        role = message.get("role")
        if role not in ROLES:
            raise LLMPermanentError(
                f"messages[{index}].role must be one of {sorted(ROLES)}, got {role!r}"
            )
        if not isinstance(message.get("content"), str):
            raise LLMPermanentError(f"messages[{index}].content must be a string")
    return tuple(messages)
