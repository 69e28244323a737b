"""The latest definition of every declarative agent, held in memory to check submits against.

A submit to a declarative role has its payload rendered into the role's prompt template
before anything is stored: a field the template uses and the payload lacks is a 422 naming
it (``payload.topic``), instead of a task that dies in a worker. The definitions are read
once per ``CONVEYOR_AGENT_REFRESH_SECONDS`` in the background (one small statement for the
version numbers of all roles; a definition is read only when its number moved),
and a PUT through this process takes effect here at once; other API processes see it within
that period. A submit to a queue without a definition costs one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from conveyor.api.problems import Problem
from conveyor.core.agent_definition import AgentDefinition
from conveyor.core.prompt_template import MissingField, TemplateProblem
from conveyor.errors import InvalidAgentDefinition
from conveyor.store.records import StoredAgentDefinition

log = structlog.get_logger("conveyor.api")

ReadLatest = Callable[[Sequence[str] | None], Awaitable[list[StoredAgentDefinition]]]
ReadVersions = Callable[[], Awaitable[dict[str, int]]]


@dataclass(frozen=True, slots=True)
class KnownDefinition:
    """A role's latest definition as this process knows it."""

    version: int
    definition: AgentDefinition


class AgentDefinitionCache:
    """Role -> latest definition, refreshed in the background (``running``)."""

    def __init__(
        self, read_latest: ReadLatest, read_versions: ReadVersions, *, period: float = 2.0
    ) -> None:
        self._read_latest = read_latest
        self._read_versions = read_versions
        self._period = period
        self._known: dict[str, KnownDefinition] = {}
        self._unreadable: dict[str, int] = {}

    def learn(self, stored: StoredAgentDefinition, definition: AgentDefinition) -> None:
        """Take a version written by this process (a PUT) without waiting for the refresh."""
        known = self._known.get(stored.role)
        if known is None or known.version < stored.version:
            self._known[stored.role] = KnownDefinition(stored.version, definition)

    def _version_of(self, role: str) -> int:
        known = self._known.get(role)
        return 0 if known is None else known.version

    def get(self, role: str) -> KnownDefinition | None:
        """The latest definition of ``role`` this process knows; None: not declarative."""
        return self._known.get(role)

    async def refresh(self) -> None:
        """Read every role's latest version number; read and compile only the definitions
        whose number moved."""
        versions = await self._read_versions()
        moved = [
            role
            for role, version in versions.items()
            if version > max(self._version_of(role), self._unreadable.get(role, 0))
        ]
        if not moved:
            return
        for stored in await self._read_latest(moved):
            try:
                definition = AgentDefinition.from_document(stored.role, stored.definition)
            except InvalidAgentDefinition as exc:  # stored by a newer release, say
                log.error("agent_definition_unreadable", role=stored.role, error=str(exc))
                self._unreadable[stored.role] = stored.version  # logged once, not every period
                continue
            self._known[stored.role] = KnownDefinition(stored.version, definition)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AgentDefinitionCache]:
        """Refresh in the background while the context is open."""
        await self.refresh()
        task = asyncio.create_task(self._loop(), name="conveyor-agent-definitions")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                await self.refresh()
            except Exception as exc:  # the database away, or a bug: keep what we know
                log.warning("agent_definitions_refresh_failed", error=str(exc))

    def check(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Raise a 422 naming every (field prefix, queue, payload) whose payload does not
        render into its role's prompt; nothing when all do (or no role is declarative)."""
        if not self._known:
            return
        errors: list[dict[str, Any]] = []
        for prefix, queue, payload in items:
            known = self._known.get(queue)
            if known is None:
                continue
            try:
                known.definition.check_payload(payload)
            except MissingField as exc:
                field = prefix + exc.field
                message = (
                    f"{exc}, which the prompt template of agent {queue!r} "
                    f"(version {known.version}) uses"
                )
                errors.append({"field": field, "location": _location(field), "message": message})
            except TemplateProblem as exc:
                field = prefix + "payload"
                message = (
                    f"the payload does not render into the prompt of agent {queue!r} "
                    f"(version {known.version}): {exc}"
                )
                errors.append({"field": field, "location": _location(field), "message": message})
        if errors:
            detail = f"{errors[0]['field']}: {errors[0]['message']}"
            if len(errors) > 1:
                detail += f" (and {len(errors) - 1} more)"
            raise Problem(422, "validation", detail, errors=errors)


def _location(field: str) -> list[str | int]:
    """``["body", "tasks", 3, "payload", "topic"]`` for ``tasks.3.payload.topic``."""
    parts: list[str | int] = ["body"]
    for piece in field.replace("[", ".").replace("]", "").split("."):
        if piece:
            parts.append(int(piece) if piece.isdigit() else piece)
    return parts
