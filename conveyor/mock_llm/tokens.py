"""A deterministic tokenizer, prompt token counts, and the reply the mock generates.

Real tokenizers are model-specific and heavy; tests need counts that are stable and easy to
predict. A token here is a word (a run of non-space characters, with the spaces before it);
a word longer than 8 characters counts one token per 8 characters. Each message costs 3
tokens of framing and every prompt 3 more for the reply, as OpenAI documents for its models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import cycle, islice

MAX_TOKEN_CHARS = 8
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
_TOKEN = re.compile(rf"\s*\S{{1,{MAX_TOKEN_CHARS}}}")


def tokenize(text: str) -> list[str]:
    """``text`` cut into tokens whose concatenation is ``text`` again (streaming relies on it)."""
    tokens = _TOKEN.findall(text)
    tail = text[sum(map(len, tokens)) :]  # only trailing whitespace is left unmatched
    if tail:
        if tokens:
            tokens[-1] += tail
        else:
            tokens.append(tail)
    return tokens


def count_tokens(text: str) -> int:
    """How many tokens ``text`` is; the same as ``len(tokenize(text))``."""
    return len(tokenize(text))


def text_of(content: object) -> str:
    """The text in a message's content, in any of the APIs' shapes.

    A plain string; a list of parts (``{"type": "text", "text": ...}``, tool results with
    nested ``content``); images and other non-text parts count nothing.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(filter(None, (text_of(part) for part in content)))
    if isinstance(content, dict):
        text = content.get("text")
        if isinstance(text, str):
            return text
        return text_of(content.get("content"))
    return ""


def count_prompt_tokens(message_texts: Iterable[str]) -> int:
    """Prompt tokens of a conversation given each message's text (system prompt included)."""
    return TOKENS_PER_REPLY + sum(count_tokens(t) + TOKENS_PER_MESSAGE for t in message_texts)


@dataclass(frozen=True)
class Completion:
    """What the mock generates for one request: its tokens, and whether max_tokens cut it."""

    tokens: tuple[str, ...]
    truncated: bool

    @property
    def text(self) -> str:
        """The whole reply."""
        return "".join(self.tokens)


def derived_reply(prompt: str, length: int) -> str:
    """A reply of ``length`` tokens made from the prompt's words: same prompt, same reply.

    It echoes the words of the last user message so a test can tell which request a reply
    belongs to.
    """
    words = prompt.split() or ["(empty)"]
    text = "Mock reply: " + " ".join(islice(cycle(words), length))
    return "".join(tokenize(text)[:length])


def generate(
    prompt: str, *, length: int, fixed_text: str | None, max_tokens: int | None
) -> Completion:
    """The completion for ``prompt``: ``fixed_text`` or a derived reply, capped at max_tokens."""
    if fixed_text is not None:
        tokens = tokenize(fixed_text)
    else:
        tokens = tokenize(derived_reply(prompt, length))
    truncated = max_tokens is not None and len(tokens) > max_tokens
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    return Completion(tokens=tuple(tokens), truncated=truncated)
