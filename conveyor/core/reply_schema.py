"""A declarative agent's output: a JSON Schema its reply must match, and the words of a repair.

The schema is checked when a definition is stored (its own metaschema: Draft 2020-12 unless
it names another with ``$schema``), and every ``$ref`` must point inside it (``#/...``):
validation never fetches anything. A reply is read as JSON (one surrounding Markdown code
fence is forgiven, as models add them unasked) and validated; the problems come back as
short lines (``$.words: 'three' is not of type 'integer'``), which the repair request feeds
back to the model and the task's last error keeps when the repair fails too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError

MAX_PROBLEMS = 10
"""Most problems listed for one reply; the rest are counted."""
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(?P<body>.*?)\n?\s*```\s*$", re.DOTALL)


class SchemaProblem(ValueError):
    """The output schema is not a valid JSON Schema (or reaches outside itself)."""


class OutputSchema:
    """A checked JSON Schema; ``problems(text)`` lists what is wrong with a reply."""

    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        if not isinstance(schema, Mapping | bool):
            raise SchemaProblem("the output schema must be a JSON object (or true/false)")
        self.schema: Mapping[str, Any] | bool = schema
        document: Any = schema  # jsonschema's stubs say dict; any mapping (or bool) works
        if isinstance(schema, Mapping) and not isinstance(schema.get("$schema", ""), str):
            raise SchemaProblem("$.$schema: must be the URI of a metaschema (a string)")
        try:
            cls = validators.validator_for(document, default=Draft202012Validator)
            cls.check_schema(document)
        except SchemaError as exc:
            where = _pointer(exc.absolute_path)
            raise SchemaProblem(f"{where}: {exc.message}") from None
        except Exception as exc:  # jsonschema's own surprise on a strange document
            raise SchemaProblem(f"not a usable JSON Schema: {type(exc).__name__}: {exc}") from None
        for where, ref in _refs(schema, "$"):
            if not ref.startswith("#"):
                raise SchemaProblem(
                    f"{where}: $ref {ref!r} points outside the schema; only local references "
                    "(#/...) are allowed, nothing is fetched"
                )
        self._validator = cls(document, format_checker=cls.FORMAT_CHECKER)

    def as_text(self) -> str:
        """The schema as compact JSON, to show the model."""
        return json.dumps(self.schema, ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    def problems(self, reply: str) -> tuple[Any, list[str]]:
        """The reply read as JSON, and what is wrong with it (empty: it is valid)."""
        try:
            value = json.loads(_unfenced(reply))
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno} column {exc.colno}"
            return None, [f"the reply is not JSON: {exc.msg} at {where}"]
        try:
            errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        except Exception as exc:  # a schema that cannot be evaluated on this value
            return value, [f"the schema could not be evaluated: {type(exc).__name__}: {exc}"]
        found = [f"{_pointer(e.absolute_path)}: {e.message}" for e in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            found.append(f"... and {len(errors) - MAX_PROBLEMS} more")
        return value, found


def schema_instruction(schema: OutputSchema) -> str:
    """What the system prompt gains so the model knows the shape to answer in."""
    return (
        "Reply with only a JSON value, without prose or a code fence, that matches this "
        f"JSON Schema:\n{schema.as_text()}"
    )


REPAIR_HEADING = "Your previous reply was invalid:"
"""The first line of a repair request (tests and mock scripts recognise it by this)."""


def repair_request(problems: list[str], schema: OutputSchema) -> str:
    """The user message asking the model to answer again, with what was wrong."""
    listed = "\n".join(f"- {p}" for p in problems)
    return (
        f"{REPAIR_HEADING}\n{listed}\n"
        "Reply again with only the corrected JSON value, matching this JSON Schema:\n"
        f"{schema.as_text()}"
    )


def _unfenced(text: str) -> str:
    match = _FENCE.match(text)
    return match["body"] if match else text


def _pointer(path: Any) -> str:
    """``$.items[3].name`` for a jsonschema path."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _refs(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every ``$ref`` string in a schema, with where it is."""
    if isinstance(node, Mapping):
        for key, child in node.items():
            if key == "$ref" and isinstance(child, str):
                yield where, child
            else:
                yield from _refs(child, f"{where}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _refs(child, f"{where}[{index}]")
