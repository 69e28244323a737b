"""Connection strings, driver-free: the gateway logs a Redis DSN without importing asyncpg."""

from __future__ import annotations


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced, safe to log."""
    if "://" not in dsn or "@" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else dsn
