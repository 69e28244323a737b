"""Whether a declarative agent's model is one the gateway's configuration knows.

The worker checks every definition it serves against its gateway (a definition naming an
unknown model is refused at start, or skipped when it arrives later). The API checks a PUT
the same way when its process has ``CONVEYOR_LLM_CONFIG`` too; without it the check is left
to the workers. Only the aliases and providers are read: the API never calls a provider, so
it needs none of their keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from conveyor.core.agent_definition import ModelCheck
from conveyor.errors import UnknownModel
from conveyor.gateway.config import LLM_CONFIG_ENV, GatewayConfig, gateway_config_from_env
from conveyor.gateway.model_routes import ModelRoutes


def model_check(config: GatewayConfig) -> ModelCheck:
    """A ModelCheck answering from ``config``'s aliases and providers."""
    routes = ModelRoutes(config)

    def check(model: str) -> str | None:
        try:
            routes.resolve(model)
        except UnknownModel as exc:
            return str(exc)
        return None

    return check


def agent_model_check(environ: Mapping[str, str] | None = None) -> ModelCheck | None:
    """The check of the configuration named by ``CONVEYOR_LLM_CONFIG``; None when unset.

    A set but broken configuration raises ConfigurationError naming the variable.
    """
    env = os.environ if environ is None else environ
    if not env.get(LLM_CONFIG_ENV, "").strip():
        return None
    config = gateway_config_from_env(env)
    return None if config is None else model_check(config)
