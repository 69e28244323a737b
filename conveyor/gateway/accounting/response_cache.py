"""The response cache every worker shares: a deterministic call's reply, served again.

A call is cacheable when its temperature is exactly 0 (``None`` leaves it to the provider's
default, which is not deterministic). Its key is the SHA-256 of a canonical JSON of the
format tag, the model or alias the caller asked for, the messages, ``max_tokens`` and the
temperature; the reply is stored per tenant (``''`` for calls without one) in the store's
``llm_cache`` table for ``ttl`` seconds, so one tenant never gets another's reply.

A cached result keeps the original's text, finish reason, provider, model and token counts
(``usage_estimated`` too); it has ``latency == ttft == 0.0``, ``attempts == 0`` (nothing was
sent) and ``cached=True``. Only replies that finished with ``stop`` or ``length`` are stored;
both are what the same request would produce again. The cache never fails a call: a store
error is logged and is a miss (``get``) or a skipped write (``put``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from conveyor.errors import ConfigurationError, StoreError
from conveyor.gateway.chat import ChatResult, Message

log = structlog.get_logger("conveyor.gateway")

CACHE_FORMAT = "conveyor.llm_cache/1"
"""Leads every key; change it when the key's inputs or the stored reply's shape change."""

CACHED_FINISH_REASONS = frozenset({"stop", "length"})
"""Finish reasons whose replies are stored; others (a content filter, ...) are not."""

_TEXT_FIELDS = ("text", "finish_reason", "provider", "model")
_COUNT_FIELDS = ("prompt_tokens", "completion_tokens")


class CacheStore(Protocol):
    """What the response cache needs of the store (PostgresStore has it)."""

    async def llm_cache_get(self, tenant_id: str, key: bytes) -> dict[str, Any] | None: ...

    async def llm_cache_put(
        self, tenant_id: str, key: bytes, reply: dict[str, Any], ttl_seconds: float
    ) -> None: ...


class ResponseCache:
    """Cached replies of deterministic calls, per tenant, kept ``ttl`` seconds."""

    def __init__(self, store: CacheStore, ttl: float = 86400) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
            raise ConfigurationError(f"cache ttl must be a number of seconds, got {ttl!r}")
        if ttl <= 0:
            raise ConfigurationError(f"cache ttl must be > 0 seconds, got {ttl!r}")
        self._store = store
        self.ttl = float(ttl)

    @staticmethod
    def key(
        requested: str,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float | None,
    ) -> bytes | None:
        """The cache key of a call, or None when the call is not cacheable.

        Not cacheable: a temperature other than exactly 0 (None included), or messages
        that are not plain JSON (a NaN, an object JSON cannot encode). The order of keys
        inside a message does not matter; the order of the messages does.
        """
        if temperature is None or isinstance(temperature, bool) or temperature != 0:
            return None
        # 0, 0.0 and -0.0 are the same request: write the temperature as one value.
        canonical = [CACHE_FORMAT, requested, [dict(m) for m in messages], max_tokens, 0.0]
        try:
            text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            return None
        return hashlib.sha256(text.encode("utf-8")).digest()

    async def get(self, tenant_id: str | None, key: bytes) -> ChatResult | None:
        """The cached reply of ``key`` for the tenant, or None (a miss, or the store failed)."""
        try:
            reply = await self._store.llm_cache_get(tenant_id or "", key)
        except StoreError as exc:
            log.warning("llm_cache_get_failed", tenant_id=tenant_id, error=str(exc))
            return None
        except Exception:
            log.exception("llm_cache_get_failed", tenant_id=tenant_id)
            return None
        if reply is None:
            return None
        result = _result_of(reply)
        if result is None:
            log.warning("llm_cache_reply_malformed", tenant_id=tenant_id, key=key.hex())
        return result

    async def put(self, tenant_id: str | None, key: bytes, result: ChatResult) -> None:
        """Store ``result`` under ``key`` for the tenant; a store failure is only logged.

        Skipped for a result that is itself cached, or that finished other than with
        ``stop`` or ``length``.
        """
        if result.cached or result.finish_reason not in CACHED_FINISH_REASONS:
            return
        try:
            await self._store.llm_cache_put(tenant_id or "", key, _reply_of(result), self.ttl)
        except StoreError as exc:
            log.warning("llm_cache_put_failed", tenant_id=tenant_id, error=str(exc))
        except Exception:
            log.exception("llm_cache_put_failed", tenant_id=tenant_id)


def _reply_of(result: ChatResult) -> dict[str, Any]:
    return {
        "text": result.text,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "provider": result.provider,
        "model": result.model,
        "usage_estimated": result.usage_estimated,
    }


def _result_of(reply: dict[str, Any]) -> ChatResult | None:
    """The cached ChatResult of a stored reply; None if the row is not one we wrote."""
    if not isinstance(reply, dict):
        return None
    if not all(isinstance(reply.get(name), str) for name in _TEXT_FIELDS):
        return None
    counts = [reply.get(name) for name in _COUNT_FIELDS]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return None
    estimated = reply.get("usage_estimated", False)
    if not isinstance(estimated, bool):
        return None
    return ChatResult(
        text=reply["text"],
        finish_reason=reply["finish_reason"],
        prompt_tokens=reply["prompt_tokens"],
        completion_tokens=reply["completion_tokens"],
        provider=reply["provider"],
        model=reply["model"],
        latency=0.0,
        ttft=0.0,
        attempts=0,
        usage_estimated=estimated,
        cached=True,
    )
