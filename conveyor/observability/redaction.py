"""Secrets never reach a log line: a structlog processor that masks them wherever they are.

It masks, in every string of an event (nested dicts and lists too, a formatted traceback
included):

- Conveyor API keys: ``cvk_<id>_<secret>`` keeps its public id, ``cvk_<id>_[redacted]``;
- bearer tokens: ``Bearer <token>``;
- passwords in connection strings: ``postgresql://user:***@host/db`` (any scheme), and
  ``password=...`` in a keyword DSN;
- provider key shapes: ``sk-...`` (OpenAI, Anthropic), ``AIza...`` (Google), ``gsk_...``;
- every secret the process registered with ``remember_secrets``: the LLM configuration's
  API keys and the admin key, looked up by the composition roots;

and the whole value of a field whose name says it is a secret (``authorization``,
``api_key``, ``password``, ``token``, ``*_secret``, ...). Spans' error texts go through
``redact_text`` too. A mask costs a regular expression over each string of a line, which
only lines actually written pay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

__all__ = ["REDACTED", "redact_event", "redact_text", "redact_value", "remember_secrets"]

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 8
"""Registered secrets shorter than this are not masked: masking "k" would mask every k."""

_SHAPES = re.compile(
    r"(?P<cvk>\bcvk_(?P<key_id>[0-9a-f]{12})_)[A-Za-z0-9_-]+"
    r"|(?P<loose_cvk>\bcvk_)[A-Za-z0-9_-]{8,}"
    r"|(?P<scheme>\b(?:[Bb]earer|BEARER)\s+)[A-Za-z0-9._~+/=-]{6,}"
    r"|(?P<dsn>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(?=@)"
    r"|(?P<keyword>\bpassword\s*=\s*)[^\s'\"]+"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\bAIza[0-9A-Za-z_-]{30,}"
    r"|\bgsk_[A-Za-z0-9]{20,}"
)
_SECRET_FIELDS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api_key",
        "apikey",
        "api-key",
        "x-api-key",
        "admin_key",
        "password",
        "passwd",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "client_secret",
        "secret_key",
    }
)
_SECRET_SUFFIXES = ("_password", "_secret", "_api_key", "_token")

_remembered: set[str] = set()
_remembered_pattern: re.Pattern[str] | None = None


def remember_secrets(secrets: Iterable[str | None]) -> None:
    """Mask these values (API keys read from the environment) wherever they appear."""
    global _remembered_pattern
    fresh = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH} - _remembered
    if not fresh:
        return
    _remembered.update(fresh)
    longest_first = sorted(_remembered, key=len, reverse=True)
    _remembered_pattern = re.compile("|".join(re.escape(s) for s in longest_first))


def _replace(match: re.Match[str]) -> str:
    if match.group("cvk") is not None:
        return f"{match.group('cvk')}{REDACTED}"
    for prefix in ("loose_cvk", "scheme", "dsn", "keyword"):
        kept = match.group(prefix)
        if kept is not None:
            return f"{kept}{REDACTED}" if prefix != "dsn" else f"{kept}***"
    return REDACTED


def redact_text(text: str) -> str:
    """``text`` with every secret it holds masked."""
    if _remembered_pattern is not None:
        text = _remembered_pattern.sub(REDACTED, text)
    return _SHAPES.sub(_replace, text)


def _secret_field(name: object) -> bool:
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    return lowered in _SECRET_FIELDS or lowered.endswith(_SECRET_SUFFIXES)


def redact_value(value: Any) -> Any:
    """``value`` (a string, or dicts and lists of them) with its secrets masked."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if _secret_field(k) and v else redact_value(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def redact_event(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor: ``event`` with its secrets masked (runs last before render)."""
    for name, value in event.items():
        if _secret_field(name) and value:
            event[name] = REDACTED
        elif isinstance(value, str | Mapping | list | tuple):
            event[name] = redact_value(value)
    return event
