"""API keys in the database: create, find by id, list, revoke. Only hashes are stored."""

from __future__ import annotations

import asyncpg

from conveyor.errors import UnknownTenant
from conveyor.store.connection import Conn
from conveyor.store.records import ApiKey, KeyCredentials
from conveyor.store.sql import q


async def create_key(
    conn: Conn, key_id: str, tenant_id: str | None, secret_hash: bytes, name: str
) -> ApiKey:
    """Store a new key (``tenant_id`` None: an admin key)."""
    try:
        row = await conn.fetchrow(q("create_api_key"), key_id, tenant_id, secret_hash, name)
    except asyncpg.ForeignKeyViolationError:
        raise UnknownTenant([tenant_id or ""]) from None
    assert row is not None
    return ApiKey(**dict(row))


async def find_key(conn: Conn, key_id: str) -> KeyCredentials | None:
    """The key with this id, revoked or not; None when there is none."""
    row = await conn.fetchrow(q("find_api_key"), key_id)
    if row is None:
        return None
    return KeyCredentials(
        row["id"], row["tenant_id"], bytes(row["secret_hash"]), row["revoked_at"] is not None
    )


async def list_keys(conn: Conn, tenant_id: str | None) -> list[ApiKey]:
    """Every key, or one tenant's, newest first."""
    return [ApiKey(**dict(row)) for row in await conn.fetch(q("list_api_keys"), tenant_id)]


async def revoke_key(conn: Conn, key_id: str) -> ApiKey | None:
    """Revoke a key (again is a no-op); None when there is no such key."""
    row = await conn.fetchrow(q("revoke_api_key"), key_id)
    return None if row is None else ApiKey(**dict(row))
