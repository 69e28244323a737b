"""Declarative agents' definitions in the database: versioned, never updated in place.

A write takes the role's advisory lock, reads the latest version and inserts the next one.
With ``only_if_changed`` it adds nothing (and returns the latest) when the definition is
the latest's, or, for a file, the one the same source wrote last: a worker restarted with
an unchanged ``--agents`` file neither adds a version nor undoes a PUT made since; an
edited file does become the latest. The same transaction declares the role as a queue, so
tenants may submit to it before any worker has served it.

The documents are stored as given; what a valid definition is belongs to
``core/agent_definition.py``, which every writer checks before it calls here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.core.json_documents import fingerprint
from conveyor.store import declarations
from conveyor.store.connection import Conn
from conveyor.store.engine import PoolEngine
from conveyor.store.records import StoredAgentDefinition
from conveyor.store.sql import q

SOURCES = frozenset({"api", "file"})


def _record(row: Any, *, created: bool = False) -> StoredAgentDefinition:
    return StoredAgentDefinition(
        role=row["role"],
        version=row["version"],
        definition=row["definition"],
        digest=bytes(row["digest"]),
        source=row["source"],
        created_at=row["created_at"],
        created=created,
    )


async def put_definition(
    conn: Conn, role: str, definition: dict[str, Any], source: str, only_if_changed: bool
) -> StoredAgentDefinition:
    """Store ``definition`` as the role's next version (run inside a transaction)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}, not {source!r}")
    digest = fingerprint(definition)
    await conn.execute(q("lock_agent_role"), role)
    latest = await conn.fetchrow(q("latest_agent_definition"), role)
    if only_if_changed and latest is not None:
        if bytes(latest["digest"]) == digest:
            return _record(latest)
        if source == "file":
            last = await conn.fetchrow(q("latest_agent_definition_from"), role, source)
            if last is not None and bytes(last["digest"]) == digest:
                return _record(latest)  # the file did not change: what came since stands
    version = 1 if latest is None else latest["version"] + 1
    row = await conn.fetchrow(
        q("insert_agent_definition"), role, version, definition, digest, source
    )
    await declarations.declare_queues(conn, [role])
    return _record(row, created=True)


async def latest_definitions(
    conn: Conn, roles: Sequence[str] | None
) -> list[StoredAgentDefinition]:
    """The latest version of every role (or of ``roles``), by role."""
    rows = await conn.fetch(q("latest_agent_definitions"), None if roles is None else list(roles))
    return [_record(row) for row in rows]


async def latest_versions(conn: Conn, roles: Sequence[str] | None) -> dict[str, int]:
    """The latest version number of every role (or of ``roles``)."""
    rows = await conn.fetch(q("latest_agent_versions"), None if roles is None else list(roles))
    return {row["role"]: row["version"] for row in rows}


async def definition_version(conn: Conn, role: str, version: int) -> StoredAgentDefinition | None:
    """One version of a role's definition; None when there is no such version."""
    row = await conn.fetchrow(q("agent_definition_version"), role, version)
    return None if row is None else _record(row)


async def definition_history(conn: Conn, role: str) -> list[StoredAgentDefinition]:
    """Every version of a role, newest first (empty: the role has no definition)."""
    return [_record(row) for row in await conn.fetch(q("agent_definition_history"), role)]


class AgentDefinitionOperations(PoolEngine):
    """What the API's agent routes and the workers of declarative agents do with the store."""

    async def put_agent_definition(
        self,
        role: str,
        definition: dict[str, Any],
        *,
        source: str = "api",
        only_if_changed: bool = False,
    ) -> StoredAgentDefinition:
        """Store a new version of ``role``'s definition (and declare the role as a queue).

        With ``only_if_changed`` an unchanged definition adds no version: the latest is
        returned with ``created`` False. For ``source="file"`` unchanged also means "the
        same as the last version a file wrote", so a PUT made since stays the latest.
        """
        return await self._run_in_transaction(
            lambda c: put_definition(c, role, definition, source, only_if_changed)
        )

    async def latest_agent_definitions(
        self, roles: Sequence[str] | None = None
    ) -> list[StoredAgentDefinition]:
        """The latest version of each role's definition (all roles, or ``roles``)."""
        return await self._run(lambda c: latest_definitions(c, roles))

    async def latest_agent_versions(self, roles: Sequence[str] | None = None) -> dict[str, int]:
        """The latest version number of each role (all roles, or ``roles``): a cheap poll."""
        return await self._run(lambda c: latest_versions(c, roles))

    async def agent_definition(
        self, role: str, version: int | None = None
    ) -> StoredAgentDefinition | None:
        """A role's latest definition, or its ``version``; None when there is none."""
        if version is None:
            found = await self._run(lambda c: latest_definitions(c, [role]))
            return found[0] if found else None
        return await self._run(lambda c: definition_version(c, role, version))

    async def agent_definition_history(self, role: str) -> list[StoredAgentDefinition]:
        """Every version of ``role``'s definition, newest first."""
        return await self._run(lambda c: definition_history(c, role))
