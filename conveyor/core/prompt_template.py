"""A declarative agent's user prompt: a Jinja2 template over the payload's fields.

Templates come from operators but are rendered over payloads from tenants, on every submit
(the API checks them) and every run (the worker sends them), so they run in Jinja2's
immutable sandbox: no attribute of Python internals, no method that changes a value, no
range past 100,000 items. Every missing field is an error, never an empty string
(``StrictUndefined``): a prompt that silently lost its topic is worse than a refused submit.
The error names the field by its path in the payload (``payload.brief.title``), so the 422
of a submit says what to send.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

MAX_PROMPT_CHARS = 1_000_000
"""The longest rendered prompt (characters): a loop over a large payload stops here."""


class TemplateProblem(ValueError):
    """The template cannot be compiled (bad syntax), or failed while rendering a payload."""


class MissingField(TemplateProblem):
    """The payload lacks a field the template uses; ``field`` is its path
    (``payload.topic``, ``payload.brief.title``, ``payload.items[3]``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# The payload being rendered, so that a missing value can name its path in it.
_PAYLOAD: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "conveyor_prompt_payload", default=None
)


class _Missing(StrictUndefined):
    """StrictUndefined whose error names the path of what is missing."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:  # the sandbox's refusal, or another explained failure
            return self._undefined_hint
        return _MissingMessage.describe(self._undefined_obj, self._undefined_name)


class _MissingMessage:
    """Builds the message (``field|text``) that ``render`` turns into a MissingField."""

    SEPARATOR = "\x1f"

    @classmethod
    def describe(cls, parent: Any, name: Any) -> str:
        if parent is missing:
            field = f"payload.{name}"
            text = f"the payload has no field {name!r}"
        else:
            where = _path_in(_PAYLOAD.get(), parent)
            key = f"[{name}]" if isinstance(name, int) else f".{name}"
            if where is None:
                field, text = "payload", f"{name!r} is missing from a value the template uses"
            else:
                field = f"{where}{key}"
                text = f"{where} has no {'item' if isinstance(name, int) else 'key'} {name!r}"
        return f"{field}{cls.SEPARATOR}{text}"


def _path_in(root: Any, target: Any) -> str | None:
    """Where ``target`` (by identity) sits inside ``root``: ``payload.brief``; None if not."""
    stack: list[tuple[Any, str]] = [(root, "payload")]
    while stack:
        value, path = stack.pop()
        if value is target:
            return path
        if isinstance(value, Mapping):
            stack.extend((child, f"{path}.{key}") for key, child in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(value))
    return None


_ENVIRONMENT = ImmutableSandboxedEnvironment(
    undefined=_Missing, autoescape=False, keep_trailing_newline=True
)


class PromptTemplate:
    """A compiled template; ``render(payload)`` is the prompt for that payload."""

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TemplateProblem("the template must be a string")
        self.source = source
        try:
            parsed = _ENVIRONMENT.parse(source)
            self._template = _ENVIRONMENT.from_string(source)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"line {exc.lineno}: {exc.message}") from None
        except TemplateError as exc:  # pragma: no cover - parse raises only syntax errors
            raise TemplateProblem(str(exc)) from None
        self.fields = tuple(sorted(meta.find_undeclared_variables(parsed)))
        """The top-level payload fields the template mentions (some may be optional)."""

    def render(self, payload: Mapping[str, Any]) -> str:
        """The prompt for ``payload``; MissingField or TemplateProblem when it cannot be."""
        token = _PAYLOAD.set(payload)
        parts: list[str] = []
        size = 0
        try:
            # piece by piece, so a loop that writes without end stops at the cap
            for piece in self._template.generate(payload):
                size += len(piece)
                if size > MAX_PROMPT_CHARS:
                    raise TemplateProblem(
                        f"the rendered prompt is longer than {MAX_PROMPT_CHARS:,} characters"
                    )
                parts.append(piece)
        except TemplateProblem:
            raise
        except UndefinedError as exc:
            field, _, message = str(exc).partition(_MissingMessage.SEPARATOR)
            if not message:  # raised by something other than a missing value
                raise TemplateProblem(str(exc)) from None
            raise MissingField(field, message) from None
        except Exception as exc:  # a filter on the wrong type, a sandbox refusal, ...
            raise TemplateProblem(f"{type(exc).__name__}: {exc}") from None
        finally:
            _PAYLOAD.reset(token)
        return "".join(parts)
