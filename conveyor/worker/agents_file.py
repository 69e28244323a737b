"""``--agents agents.toml``: declarative agents defined in a file, one table per role.

::

    [agents.headline-writer]
    model = "writer"
    system_prompt = "You write short, concrete ad headlines."
    prompt_template = "A headline for {{ product }}, for {{ audience }}."
    temperature = 0.7
    max_tokens = 200
    timeout = 60
    output_schema = '''{"type": "object", "required": ["headline"],
                        "properties": {"headline": {"type": "string"}}}'''

``output_schema`` may be a TOML table or a string of JSON (often easier to copy). The file
is read and every definition checked when the worker starts; a mistake stops it with a
message naming the file, the role and the field.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from conveyor.core.agent_definition import AgentDefinition, ModelCheck
from conveyor.errors import ConfigurationError, InvalidAgentDefinition, InvalidTask
from conveyor.store.params import validate_queue_name


def load_agents_file(
    path: str | Path, *, model_check: ModelCheck | None = None
) -> dict[str, AgentDefinition]:
    """Every role of the file, checked; ConfigurationError names what is wrong where."""
    where = Path(path)
    try:
        document = tomllib.loads(where.read_text("utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{where}: not valid TOML: {exc}") from None
    return read_agents(document, str(where), model_check=model_check)


def read_agents(
    document: dict[str, Any], where: str, *, model_check: ModelCheck | None = None
) -> dict[str, AgentDefinition]:
    """The ``[agents.ROLE]`` tables of a parsed file, each checked."""
    extra = sorted(set(document) - {"agents"})
    if extra:
        raise ConfigurationError(
            f"{where}: unknown top-level key(s) {', '.join(extra)}; define each role as a "
            "table agents.ROLE"
        )
    agents = document.get("agents")
    if not isinstance(agents, dict) or not agents:
        raise ConfigurationError(f"{where}: defines no agents; add a table agents.ROLE")
    found: dict[str, AgentDefinition] = {}
    problems: list[str] = []
    for role, table in agents.items():
        try:
            validate_queue_name(role)
        except InvalidTask as exc:
            problems.append(f"agents.{role}: {exc}")
            continue
        if not isinstance(table, dict):
            problems.append(f"agents.{role}: must be a table of fields")
            continue
        fields = dict(table)
        schema = fields.get("output_schema")
        if isinstance(schema, str):
            try:
                fields["output_schema"] = json.loads(schema)
            except json.JSONDecodeError as exc:
                problems.append(f"agents.{role}.output_schema: not valid JSON: {exc}")
                continue
        try:
            found[role] = AgentDefinition.from_document(role, fields, model_check=model_check)
        except InvalidAgentDefinition as exc:
            problems.extend(f"agents.{role}.{problem}" for problem in exc.problems)
    if problems:
        raise ConfigurationError(f"{where}: " + "; ".join(problems))
    return found
