"""A declarative agent: a role defined as data, checked whole before anyone uses it.

The same JSON document comes from an ``--agents`` TOML file and from
``PUT /v1/agents/{role}``::

    {"model": "writer", "system_prompt": "You write ad copy.",
     "prompt_template": "Write a headline for {{ product }} aimed at {{ audience }}.",
     "temperature": 0.7, "max_tokens": 300,
     "output_schema": {"type": "object", "required": ["headline"], ...},
     "concurrency": 8, "timeout": 60, "max_attempts": 3}

``AgentDefinition.from_document`` refuses a wrong one with every problem named at once
(an unknown field, a template that does not compile, a schema that is not a JSON Schema, a
model the gateway does not know when the caller can tell). The worker renders it into
messages (``messages``), the API checks a payload against it at submit (``check_payload``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.core.prompt_template import PromptTemplate, TemplateProblem
from conveyor.core.reply_schema import OutputSchema, SchemaProblem, schema_instruction
from conveyor.errors import InvalidAgentDefinition

ModelCheck = Callable[[str], str | None]
"""Says why a model name is unknown (None: known); given where the gateway's config is."""

FIELDS: dict[str, str] = {
    "model": "gateway model alias or provider/model (required)",
    "prompt_template": "the user message: a Jinja2 template over the payload's fields (required)",
    "system_prompt": "the system message (default none)",
    "temperature": "0 to 2 (default: the provider's)",
    "max_tokens": "most tokens of one reply (default: the gateway's default_max_tokens)",
    "output_schema": "JSON Schema the reply must match (default none: the reply is text)",
    "concurrency": "most runs at once per worker process (default no cap)",
    "timeout": "seconds one run may take, repair included (default none)",
    "max_attempts": "runs allowed, the first included (default 5)",
    "description": "what the agent is for, for people",
}
"""Every field a definition may have, and what it means (unknown fields are refused)."""


@dataclass(frozen=True, slots=True)
class AgentDefinition:
    """A checked definition; ``document()`` gives back the JSON it was read from."""

    model: str
    prompt_template: str
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    output_schema: Mapping[str, Any] | bool | None = None
    concurrency: int | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    description: str = ""
    template: PromptTemplate = field(init=False, repr=False, compare=False)
    schema: OutputSchema | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # compiled once: every submit and every run reuses them
        object.__setattr__(self, "template", PromptTemplate(self.prompt_template))
        schema = None if self.output_schema is None else OutputSchema(self.output_schema)
        object.__setattr__(self, "schema", schema)

    @classmethod
    def from_document(
        cls, role: str, document: Any, *, model_check: ModelCheck | None = None
    ) -> AgentDefinition:
        """Read and check ``document``; InvalidAgentDefinition lists every problem."""
        if not isinstance(document, Mapping):
            raise InvalidAgentDefinition(role, ["the definition must be a JSON object"])
        problems = [_unknown(name) for name in document if name not in FIELDS]
        values: dict[str, Any] = {}
        for name, check in _CHECKS.items():
            if name not in document or document[name] is None:
                if name in ("model", "prompt_template"):
                    problems.append(f"{name}: required ({FIELDS[name]})")
                continue
            problem = check(document[name])
            if problem is None:
                values[name] = document[name]
            else:
                problems.append(f"{name}: {problem}")
        if "model" in values and model_check is not None:
            unknown = model_check(values["model"])
            if unknown is not None:
                problems.append(f"model: {unknown}")
        try:
            if "prompt_template" in values:
                PromptTemplate(values["prompt_template"])
        except TemplateProblem as exc:
            problems.append(f"prompt_template: {exc}")
        try:
            if "output_schema" in values:
                OutputSchema(values["output_schema"])
        except SchemaProblem as exc:
            problems.append(f"output_schema: {exc}")
        if problems:
            raise InvalidAgentDefinition(role, problems)
        return cls(**values)

    def document(self) -> dict[str, Any]:
        """The definition as JSON, fields at their defaults left out (what is stored)."""
        found: dict[str, Any] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is not None and value != "":
                found[name] = value
        return found

    @property
    def fields(self) -> tuple[str, ...]:
        """The payload fields the prompt template mentions."""
        return self.template.fields

    def system_message(self) -> str:
        """The system prompt, with the output schema's instruction when there is one."""
        parts = [self.system_prompt] if self.system_prompt else []
        if self.schema is not None:
            parts.append(schema_instruction(self.schema))
        return "\n\n".join(parts)

    def messages(self, payload: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages of one run; MissingField or TemplateProblem for a bad payload."""
        user = self.template.render(payload)
        system = self.system_message()
        head = [{"role": "system", "content": system}] if system else []
        return [*head, {"role": "user", "content": user}]

    def check_payload(self, payload: Mapping[str, Any]) -> None:
        """Raise MissingField (naming the field) or TemplateProblem if ``payload`` cannot
        be rendered: what the API answers 422 for at submit."""
        self.template.render(payload)


def _unknown(name: object) -> str:
    close = difflib.get_close_matches(str(name), list(FIELDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{name}: unknown field{hint}; the fields are {', '.join(FIELDS)}"


def _text(required: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        if required and not value.strip():
            return "must not be empty"
        if "\x00" in value:
            return "must not contain a NUL character"
        return None

    return check


def _number(low: float, high: float, *, low_open: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        if not math.isfinite(value):
            return "must be a finite number"
        if value < low or value > high or (low_open and value == low):
            opening = ">" if low_open else ">="
            return f"must be {opening} {low:g} and <= {high:g}"
        return None

    return check


def _whole(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        if not low <= value <= high:
            return f"must be from {low} to {high}"
        return None

    return check


def _schema(value: Any) -> str | None:
    if not isinstance(value, Mapping | bool):
        return "must be a JSON Schema (an object)"
    return None


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "model": _text(required=True),
    "prompt_template": _text(required=True),
    "system_prompt": _text(required=False),
    "temperature": _number(0.0, 2.0),
    "max_tokens": _whole(1, 1_000_000),
    "output_schema": _schema,
    "concurrency": _whole(1, 100_000),
    "timeout": _number(0.0, 7 * 86_400.0, low_open=True),
    "max_attempts": _whole(1, 1000),
    "description": _text(required=False),
}
