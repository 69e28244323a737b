"""The declarative roles a worker serves: registered in its App at start, kept current after.

At start (``install``) the roles of an ``--agents`` file are stored as a new version when
the file changed (an unchanged file adds nothing and does not undo a PUT made since), then
the latest version of each role, from the file's or ``--stored-agent``, is read and becomes
an agent of the App whose handler is a ``DeclarativeAgent``. Then ``run`` polls the latest
versions every ``refresh_seconds``: a newer one replaces the runner's definition and the
App's limits (concurrency, timeout, attempts), so a ``PUT /v1/agents/{role}`` is in force on
every worker within that period, without a restart. Runs already going finish on their
version.

A stored version this worker cannot use (a model its gateway does not know) is logged and
skipped: the worker keeps serving the version it has, and takes the next good one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from conveyor.app import App
from conveyor.core.agent_definition import AgentDefinition, ModelCheck
from conveyor.core.backoff import RetryPolicy
from conveyor.errors import ConfigurationError, ConveyorError, InvalidAgentDefinition
from conveyor.store.records import StoredAgentDefinition
from conveyor.worker.declarative import DeclarativeAgent, Version

log = structlog.get_logger("conveyor.worker")


class DefinitionStore(Protocol):
    """What the registry needs of the store."""

    async def put_agent_definition(
        self,
        role: str,
        definition: dict[str, Any],
        *,
        source: str = "api",
        only_if_changed: bool = False,
    ) -> StoredAgentDefinition: ...

    async def latest_agent_definitions(
        self, roles: Sequence[str] | None = None
    ) -> list[StoredAgentDefinition]: ...

    async def latest_agent_versions(self, roles: Sequence[str] | None = None) -> dict[str, int]: ...


class DeclarativeAgents:
    """Declarative roles of one worker process, each a ``DeclarativeAgent`` in ``app``."""

    def __init__(
        self,
        app: App,
        store: DefinitionStore,
        *,
        model_check: ModelCheck | None = None,
        refresh_seconds: float = 2.0,
    ) -> None:
        self.app = app
        self.store = store
        self.model_check = model_check
        self.refresh_seconds = refresh_seconds
        self.agents: dict[str, DeclarativeAgent] = {}
        self._skipped: dict[str, int] = {}

    async def install(
        self, from_file: Mapping[str, AgentDefinition], stored_roles: Sequence[str] = ()
    ) -> None:
        """Store the file's definitions (when changed), read the stored roles, register all.

        ConfigurationError names a role the App already has, or a stored role without a
        definition (or with one this worker cannot use).
        """
        roles = [*from_file, *(r for r in stored_roles if r not in from_file)]
        taken = sorted(r for r in roles if r in self.app.agents)
        if taken:
            raise ConfigurationError(
                f"agent(s) {', '.join(taken)} are defined both by --app and as declarative agents"
            )
        for role, definition in from_file.items():
            stored = await self.store.put_agent_definition(
                role, definition.document(), source="file", only_if_changed=True
            )
            if stored.created:
                log.info("agent_definition_stored", role=role, version=stored.version)
        found = {s.role: s for s in await self.store.latest_agent_definitions(roles)}
        missing = [r for r in roles if r not in found]
        if missing:
            raise ConfigurationError(
                f"--stored-agent: no definition is stored for {', '.join(missing)}; define it "
                "with PUT /v1/agents/{role} (or an --agents file) first"
            )
        versions = {role: Version(found[role].version, self._read(found[role])) for role in roles}
        for role, version in versions.items():
            agent = DeclarativeAgent(role, version)
            definition = version.definition
            self.app.agent(
                role,
                concurrency=definition.concurrency,
                timeout=definition.timeout,
                max_attempts=definition.max_attempts,
            )(agent.run)
            self.agents[role] = agent

    async def refresh(self) -> list[str]:
        """Take every newer stored version of the served roles; the roles that changed."""
        if not self.agents:
            return []
        versions = await self.store.latest_agent_versions(list(self.agents))
        moved = [
            role
            for role, version in versions.items()
            if version > max(self.agents[role].current.number, self._skipped.get(role, 0))
        ]
        if not moved:
            return []  # the usual case: one small statement, no definition read
        changed = []
        for stored in await self.store.latest_agent_definitions(moved):
            agent = self.agents[stored.role]
            try:
                definition = self._read(stored)
            except InvalidAgentDefinition as exc:
                log.error(
                    "agent_definition_skipped",
                    role=stored.role,
                    version=stored.version,
                    kept=agent.current.number,
                    error=str(exc),
                )
                self._skipped[stored.role] = stored.version  # logged once, not every period
                continue
            agent.current = Version(stored.version, definition)
            spec = self.app.agents[stored.role]
            self.app.agents[stored.role] = dataclasses.replace(
                spec,
                concurrency=definition.concurrency,
                timeout=definition.timeout,
                retry=RetryPolicy(
                    max_attempts=definition.max_attempts or RetryPolicy().max_attempts,
                    base=spec.retry.base,
                    cap=spec.retry.cap,
                ),
            )
            log.info("agent_definition_loaded", role=stored.role, version=stored.version)
            changed.append(stored.role)
        return changed

    async def run(self) -> None:
        """Refresh every ``refresh_seconds`` until cancelled; a failed read is tried again."""
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except ConveyorError as exc:
                log.warning("agent_definitions_refresh_failed", error=str(exc))

    def _read(self, stored: StoredAgentDefinition) -> AgentDefinition:
        return AgentDefinition.from_document(
            stored.role, stored.definition, model_check=self.model_check
        )
