"""API keys: their shape, and what is kept of them (a hash, never the key).

A key reads ``cvk_<id>_<secret>``: ``id`` (12 hex digits) is public, names the key in
listings and logs and finds its row; ``secret`` (43 URL-safe characters, 256 random bits)
is shown once, at creation, and only its SHA-256 is stored. A fast hash is right here: the
secret is random, not a password, so there is nothing to guess, and a check must cost
microseconds on every request. Comparison is in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

KEY_SCHEME = "cvk"
_TOKEN = re.compile(r"^cvk_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: its public id and its secret (the secret is never stored)."""

    key_id: str
    secret: str

    @property
    def token(self) -> str:
        """What the client sends: ``Authorization: Bearer <token>``."""
        return f"{KEY_SCHEME}_{self.key_id}_{self.secret}"

    @property
    def secret_hash(self) -> bytes:
        """What the database keeps."""
        return hash_secret(self.secret)


def new_key(random_bytes: Callable[[int], bytes]) -> IssuedKey:
    """A fresh key from ``random_bytes(n)`` (``secrets.token_bytes`` in production)."""
    key_id = random_bytes(6).hex()
    secret = base64.urlsafe_b64encode(random_bytes(32)).rstrip(b"=").decode()
    return IssuedKey(key_id, secret)


def parse_token(token: str) -> IssuedKey | None:
    """The id and secret of a well-formed token; None for anything else."""
    match = _TOKEN.match(token)
    return None if match is None else IssuedKey(match["id"], match["secret"])


def hash_secret(secret: str) -> bytes:
    """SHA-256 of the secret."""
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    """Whether ``secret`` is the one whose hash is stored, compared in constant time."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
