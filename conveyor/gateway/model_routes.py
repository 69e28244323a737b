"""Which targets a requested model means: an alias's chain, or one ``provider/model``.

A tenant's ``model_override`` (an alias or ``provider/model``) replaces the model the
agent asked for, so an operator can move one tenant to another model without touching the
agent's code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from conveyor.errors import UnknownModel
from conveyor.gateway.config import GatewayConfig


@dataclass(frozen=True, slots=True)
class Target:
    """One (provider, model) to try."""

    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


class ModelRoutes:
    """The aliases of a config, resolved to chains of targets once."""

    def __init__(self, config: GatewayConfig) -> None:
        self.providers = frozenset(config.providers)
        self.aliases: Mapping[str, tuple[Target, ...]] = {
            alias: tuple(Target(t.provider, t.model) for t in chain)
            for alias, chain in config.aliases.items()
        }

    def resolve(
        self, model: str, model_override: str | None = None
    ) -> tuple[str, tuple[Target, ...]]:
        """The name asked for (after the override) and its chain, primary first.

        An alias wins over ``provider/model``; a name that is neither raises UnknownModel.
        """
        requested = model_override or model
        chain = self.aliases.get(requested)
        if chain is not None:
            return requested, chain
        provider, sep, name = requested.partition("/")
        if sep and name and provider in self.providers:
            return requested, (Target(provider, name),)
        raise UnknownModel(requested, self._names())

    def _names(self) -> Sequence[str]:
        return list(self.aliases)
