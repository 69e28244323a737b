"""The bodies of ``/v1/agents`` (declarative agents' definitions), shared by the server and
the Python client like ``models.py``. What each field means: ``core/agent_definition.py``
and docs/agents.md; the deeper checks (the template compiles, the schema is a JSON Schema)
run after these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from conveyor.client.models import Strict

TEXT_LIMIT = 200_000
"""Longest prompt or template accepted (characters)."""


class AgentDefinitionWrite(Strict):
    """A whole definition: a PUT replaces the role's definition with a new version."""

    model: str = Field(min_length=1, max_length=300, description="Alias or provider/model.")
    prompt_template: str = Field(
        min_length=1,
        max_length=TEXT_LIMIT,
        description="The user message: a Jinja2 template over the payload's fields.",
    )
    system_prompt: str | None = Field(None, max_length=TEXT_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    output_schema: dict[str, Any] | bool | None = Field(
        None, description="JSON Schema the reply must match; none: the reply is text."
    )
    concurrency: int | None = Field(None, ge=1, le=100_000, description="Per worker process.")
    timeout: float | None = Field(None, gt=0, le=7 * 86_400, description="Seconds per run.")
    max_attempts: int | None = Field(None, ge=1, le=1000)
    description: str | None = Field(None, max_length=2000)


class AgentDefinitionView(BaseModel):
    """One version of a role's definition."""

    role: str
    version: int
    source: str = Field(description="api (a PUT) or file (a worker's --agents file).")
    created_at: datetime
    definition: dict[str, Any]
    fields: list[str] = Field(description="The payload fields the prompt template mentions.")
    created: bool = Field(False, description="True when this request stored the version.")


class AgentDefinitionList(BaseModel):
    """Definitions, by role (the latest of each) or newest first (one role's versions)."""

    agents: list[AgentDefinitionView]
