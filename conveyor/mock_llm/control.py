"""The routes beside the chat endpoints: model lists, and ``/mock/*`` to watch and steer a run.

``GET /mock/stats`` returns the counters; ``GET /mock/config`` the config;
``POST /mock/config`` takes a JSON object of fields to change (400 names a bad field);
``POST /mock/reset`` zeroes the counters and restarts the script and the rate-limit window.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from conveyor.errors import ConfigurationError
from conveyor.mock_llm import anthropic_api, ollama_api, openai_api
from conveyor.mock_llm.config import MockConfig
from conveyor.mock_llm.state import MockState


def config_json(config: MockConfig) -> dict[str, Any]:
    """The config as JSON, in the shape ``POST /mock/config`` accepts back."""
    return config.model_dump(mode="json")


class ControlRoutes:
    """The handlers of the non-chat routes of one server."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.started = time.time()

    def routes(self) -> list[web.RouteDef]:
        """Every route this class serves."""
        return [
            web.get("/v1/models", self.models),
            web.get("/api/tags", self.tags),
            web.get("/mock/stats", self.stats),
            web.get("/mock/config", self.get_config),
            web.post("/mock/config", self.set_config),
            web.post("/mock/reset", self.reset),
        ]

    async def models(self, request: web.Request) -> web.Response:
        """The model list, in Anthropic's shape when the caller speaks Anthropic's API."""
        models = self.state.config.models
        if "anthropic-version" in request.headers:
            created = datetime.fromtimestamp(self.started, UTC).isoformat()
            return web.json_response(anthropic_api.models_list(models, created))
        return web.json_response(openai_api.models_list(models, int(self.started)))

    async def tags(self, request: web.Request) -> web.Response:
        """Ollama's list of local models."""
        return web.json_response(ollama_api.tags_list(self.state.config.models))

    async def stats(self, request: web.Request) -> web.Response:
        """The counters since start or the last reset."""
        return web.json_response(self.state.as_json())

    async def get_config(self, request: web.Request) -> web.Response:
        """The config in force."""
        return web.json_response(config_json(self.state.config))

    async def set_config(self, request: web.Request) -> web.Response:
        """Change the fields in the JSON body; answer with the whole new config."""
        try:
            changes = json.loads(await request.read())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return web.json_response({"error": f"not valid JSON: {exc}"}, status=400)
        if not isinstance(changes, dict):
            return web.json_response({"error": "send a JSON object of fields"}, status=400)
        try:
            config = self.state.configure(changes)
        except ConfigurationError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(config_json(config))

    async def reset(self, request: web.Request) -> web.Response:
        """Zero the counters; restart the script, the rate-limit window and the fault draws."""
        self.state.reset()
        return web.json_response(self.state.as_json())
