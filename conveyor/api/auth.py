"""Who is calling: API keys checked against their hashes, with a short cache.

``Authorization: Bearer cvk_<id>_<secret>``. A key seen once is kept in this process's
cache for ``cache_seconds`` (default 10), so the hot path costs no database round trip; a
revoked key therefore stops working within that bound on every API instance (documented in
docs/api.md). Unknown ids are cached too, so a client hammering with a bad key costs one
lookup per period. ``CONVEYOR_ADMIN_KEY``, when set, is an admin key that lives only in the
environment.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from conveyor.api.problems import Problem
from conveyor.core.api_keys import parse_token, secret_matches
from conveyor.store.records import KeyCredentials

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="conveyor"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a tenant, or an admin (``tenant_id`` None)."""

    key_id: str
    tenant_id: str | None

    @property
    def admin(self) -> bool:
        """True for an admin key."""
        return self.tenant_id is None


class KeyChecker:
    """Turns an Authorization header into a Principal, or a 401 problem."""

    def __init__(
        self,
        find_key: Callable[[str], Awaitable[KeyCredentials | None]],
        *,
        admin_key: str | None = None,
        cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self._find_key = find_key
        self._admin_key = admin_key
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._max_entries = max_entries
        self._cache: dict[str, tuple[float, KeyCredentials | None]] = {}

    async def principal(self, authorization: str | None) -> Principal:
        """The caller of a request with this header; Problem(401) when there is none."""
        token = _bearer(authorization)
        if self._admin_key and hmac.compare_digest(token.encode(), self._admin_key.encode()):
            return Principal("env", None)
        key = parse_token(token)
        if key is None:
            raise _unauthorized("the API key is malformed: expected cvk_<id>_<secret>")
        found = await self._credentials(key.key_id)
        if found is None or not secret_matches(key.secret, found.secret_hash):
            raise _unauthorized("the API key is not valid")
        if found.revoked:
            raise _unauthorized(f"the API key {found.id} was revoked")
        return Principal(found.id, found.tenant_id)

    async def _credentials(self, key_id: str) -> KeyCredentials | None:
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._find_key(key_id)
        if len(self._cache) >= self._max_entries:
            self._cache.clear()  # bounded: a flood of random ids cannot grow it forever
        self._cache[key_id] = (now + self._cache_seconds, found)
        return found


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise _unauthorized("no API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <key>'")
    return token.strip()


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers=_CHALLENGE)
