"""The webhook adapter's pure rules: signing a delivery, checking one on the runtime's side,
the operator's allow-list of outbound URLs, callback tokens, and what a runtime may report.

Signing follows Stripe / Standard Webhooks: the header ``Conveyor-Signature:
t=<unix seconds>,v1=<hex>`` carries HMAC-SHA256 over ``"<t>.<raw body>"`` with the shared
secret. The timestamp is inside the MAC, so a captured delivery cannot be re-dated, and a
runtime refuses one older than its tolerance (``verify_signature``): a replay is refused.

A callback token is a random secret handed to the runtime with the delivery; Conveyor keeps
only its SHA-256 (``token_hash``), so a leaked table cannot forge a callback. No I/O here:
the clock is a parameter, so hypothesis tests every rule.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from conveyor.core.waits import MAX_WAIT_SECONDS, check_wait_timeout
from conveyor.errors import ConfigurationError

SIGNATURE_HEADER = "Conveyor-Signature"
SIGNATURE_TOLERANCE = 300.0
"""Seconds a runtime accepts a delivery's timestamp away from its own clock (either way)."""
TOKEN_PREFIX = "cvt_"
ALLOWED_HOSTS_SETTING = "CONVEYOR_WEBHOOK_ALLOWED_HOSTS"
ADAPTER_PREFIX = "webhook:"
"""``tenant_agents.adapter_override`` of ``webhook:<url>`` serves that tenant's role there."""
PYTHON_ADAPTER = "python"
"""The adapter override that runs the role's own handler (clears a webhook override)."""


class SignatureInvalid(ValueError):
    """A delivery's signature header is missing, malformed, stale, or does not match."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Conveyor-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE,
) -> int:
    """The delivery's timestamp if ``header`` signs ``body`` with ``secret`` within
    ``tolerance`` seconds of ``now``; SignatureInvalid saying why otherwise.

    What a runtime runs on each delivery (see docs/agents.md for a copy without Conveyor).
    Several ``v1=`` entries are allowed (a secret being rotated): one match is enough.
    """
    if not header:
        raise SignatureInvalid(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureInvalid(f"{SIGNATURE_HEADER} must look like t=<unix seconds>,v1=<hex>")
    if not math.isfinite(now) or abs(now - timestamp) > tolerance:
        raise SignatureInvalid(
            f"the delivery's timestamp {timestamp} is more than {tolerance:g}s from now "
            "(a replay, or a clock out of step)"
        )
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureInvalid("the signature does not match the body (wrong secret, or altered)")
    return timestamp


class ReplayGuard:
    """The runtime's side of replay refusal: ``verify_signature`` plus a memory of the
    deliveries accepted within the tolerance, so the very same signed delivery sent twice is
    refused the second time (and an older one by its timestamp). One per runtime process."""

    def __init__(self, secret: str, tolerance: float = SIGNATURE_TOLERANCE) -> None:
        self._secret = secret
        self._tolerance = tolerance
        self._seen: dict[str, int] = {}

    def accept(self, header: str | None, body: bytes, now: float) -> int:
        """The delivery's timestamp if it is genuine, fresh and new; SignatureInvalid if not."""
        timestamp = verify_signature(self._secret, header, body, now, self._tolerance)
        horizon = now - self._tolerance
        for seen, at in list(self._seen.items()):
            if at < horizon:
                del self._seen[seen]
        key = sign(self._secret, timestamp, body)
        if key in self._seen:
            raise SignatureInvalid("this delivery was received before (a replay)")
        self._seen[key] = timestamp
        return timestamp


def new_token() -> str:
    """A fresh callback token: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What Conveyor stores and looks a callback token up by."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_allowed(text: str | None) -> tuple[str, ...]:
    """The allow-list setting as entries: comma- or space-separated hosts or URL prefixes."""
    if not text:
        return ()
    return tuple(p.strip() for p in text.replace(",", " ").split() if p.strip())


def url_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """True when ``url`` is http(s) and matches an entry of the allow-list.

    An entry with ``://`` is a URL prefix matched at a path boundary (``https://a.io/hooks``
    admits ``https://a.io/hooks/x``, not ``https://a.io/hooksmith``). Any other entry is a
    host name (case-insensitive, any port); ``*.example.com`` admits its subdomains only.
    A URL with credentials (``user@host``) is never admitted: it hides the real host.
    """
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host or "@" in parts.netloc:
        return False
    for entry in allowed:
        if "://" in entry:
            prefix = entry.rstrip("/")
            if url == prefix or url.startswith(prefix + "/") or url.startswith(prefix + "?"):
                return True
        elif entry.startswith("*."):
            if host.endswith(entry[1:].lower()) and host != entry[2:].lower():
                return True
        elif host == entry.lower():
            return True
    return False


def check_url(url: str, allowed: tuple[str, ...]) -> str:
    """``url`` if the operator's allow-list admits it, else ValueError naming the setting."""
    if url_allowed(url, allowed):
        return url
    listed = ", ".join(allowed) if allowed else "nothing (unset)"
    raise ValueError(
        f"the webhook URL {url!r} is not allowed: {ALLOWED_HOSTS_SETTING} admits {listed}; "
        "add its host or a URL prefix to that setting"
    )


def adapter_url(adapter_override: str | None) -> str | None:
    """The runtime URL of a ``webhook:<url>`` adapter override; None for any other value."""
    if adapter_override is None or not adapter_override.startswith(ADAPTER_PREFIX):
        return None
    return adapter_override[len(ADAPTER_PREFIX) :].strip() or None


def check_adapter_override(value: str) -> str:
    """``value`` if it is a valid adapter override, else ValueError saying what one looks
    like: ``webhook:http(s)://...`` (an external runtime) or ``python`` (the role's own
    handler: what clears a webhook override)."""
    if value == PYTHON_ADAPTER:
        return value
    url = adapter_url(value)
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.hostname:
            return value
    raise ValueError(
        f"adapter_override must be 'python' or 'webhook:' followed by an http(s) URL "
        f"(e.g. 'webhook:https://agents.example.com/run'), not {value!r}"
    )


@dataclass(frozen=True, slots=True)
class Report:
    """A runtime's result callback, checked: success with a result, or a failure."""

    succeeded: bool
    result: Any = None
    error: str = ""
    retryable: bool = False

    def as_signal(self) -> dict[str, Any]:
        """The payload stored as the task's callback signal."""
        if self.succeeded:
            return {"status": "succeeded", "result": self.result}
        return {"status": "failed", "error": self.error, "retryable": self.retryable}


MAX_ERROR_CHARS = 4000


def parse_report(body: Any) -> Report:
    """A result callback's JSON body as a Report, else ValueError saying what is wrong.

    ``{"status": "succeeded", "result": <any JSON>}`` or ``{"status": "failed", "error":
    "<message>", "retryable": false}`` (``retryable`` defaults to false).
    """
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object with a 'status'")
    status = body.get("status")
    if status == "succeeded":
        extra = set(body) - {"status", "result"}
        if extra:
            raise ValueError(f"unknown field(s) for a success: {', '.join(sorted(extra))}")
        return Report(True, result=body.get("result"))
    if status == "failed":
        extra = set(body) - {"status", "error", "retryable"}
        if extra:
            raise ValueError(f"unknown field(s) for a failure: {', '.join(sorted(extra))}")
        error, retryable = body.get("error"), body.get("retryable", False)
        if not isinstance(error, str) or not error.strip():
            raise ValueError("a failure needs 'error': a message saying what went wrong")
        if not isinstance(retryable, bool):
            raise ValueError("'retryable' must be true or false")
        return Report(False, error=error[:MAX_ERROR_CHARS], retryable=retryable)
    raise ValueError(f"'status' must be 'succeeded' or 'failed', not {status!r}")


def read_signal(payload: Any) -> Report:
    """The Report a callback signal holds (the inverse of ``Report.as_signal``)."""
    if isinstance(payload, dict) and payload.get("status") == "succeeded":
        return Report(True, result=payload.get("result"))
    if isinstance(payload, dict) and payload.get("status") == "failed":
        retryable = bool(payload.get("retryable"))
        return Report(False, error=str(payload.get("error")), retryable=retryable)
    raise ValueError(f"not a callback report: {payload!r}")


DEFAULT_CALLBACK_SECONDS = 300.0
"""How long a delivered task waits for its runtime's result when no ``timeout`` is given."""


@dataclass(frozen=True, slots=True)
class ExternalRuntime:
    """An external runtime that serves a role over the webhook adapter (docs/agents.md).

    ``url`` receives each task as a signed POST; ``timeout`` is the seconds the task then
    waits (holding no worker) for the result callback, which heartbeats extend up to
    ``max_wait`` seconds after the delivery (default: ten times ``timeout``, at most a year).
    """

    url: str
    timeout: float = DEFAULT_CALLBACK_SECONDS
    max_wait: float | None = None

    def __post_init__(self) -> None:
        try:
            check_adapter_override(ADAPTER_PREFIX + self.url)
            check_wait_timeout(self.timeout)
            if self.max_wait is not None:
                check_wait_timeout(self.max_wait)
        except ValueError as exc:
            raise ConfigurationError(f"external runtime {self.url!r}: {exc}") from None
        if self.max_wait is not None and self.max_wait < self.timeout:
            raise ConfigurationError(
                f"external runtime {self.url!r}: max_wait ({self.max_wait:g}s) must be at "
                f"least timeout ({self.timeout:g}s)"
            )

    @property
    def longest_wait(self) -> float:
        """Seconds after a delivery past which no heartbeat moves its deadline."""
        if self.max_wait is not None:
            return self.max_wait
        return min(self.timeout * 10, MAX_WAIT_SECONDS)
