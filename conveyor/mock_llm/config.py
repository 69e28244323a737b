"""What the mock LLM does: timings, the reply, and which faults it injects, as one typed object.

Every duration is in seconds. The same object is built from Python, from the ``conveyor
mock-llm`` flags, and from the JSON of ``POST /mock/config``; unknown fields are rejected so a
typo in a test's fault setup fails loudly instead of silently testing nothing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from conveyor.errors import ConfigurationError


class Fault(StrEnum):
    """One outcome the mock can give a request instead of (or on the way to) a normal reply."""

    OK = "ok"
    BAD_REQUEST = "400"
    UNAUTHORIZED = "401"
    FORBIDDEN = "403"
    NOT_FOUND = "404"
    UNPROCESSABLE = "422"
    RATE_LIMITED = "429"
    INTERNAL = "500"
    BAD_GATEWAY = "502"
    UNAVAILABLE = "503"
    GATEWAY_TIMEOUT = "504"
    OVERLOADED = "529"
    RESET = "reset"
    STALL = "stall"
    SLOW_START = "slow_start"

    @property
    def status(self) -> int | None:
        """The HTTP status this fault answers with, or None when it is not an error status."""
        return int(self.value) if self.value.isdigit() else None


class ReplyRule(BaseModel):
    """A scripted reply: ``reply`` answers every request whose messages contain all of
    ``when`` (the system prompt included). Deterministic per request content, so tests that
    run many agents at once each get the reply meant for them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    when: tuple[str, ...] = Field(
        min_length=1, description="Texts that must all appear in the request's messages."
    )
    reply: str = Field(description="The reply text (streamed token by token like any reply).")


class MockConfig(BaseModel):
    """The mock's behaviour; the defaults answer at once with a short reply and never fail."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    latency: float | None = Field(
        default=None,
        ge=0,
        description="Total time of a non-streaming reply; None: ttft + tokens / tokens_per_second.",
    )
    ttft: float = Field(default=0.0, ge=0, description="Delay before the first streamed token.")
    tokens_per_second: float | None = Field(
        default=None, gt=0, description="Streaming pace after the first token; None: no delay."
    )
    response_text: str | None = Field(
        default=None, description="Fixed reply text; None: a reply derived from the prompt."
    )
    reply_rules: tuple[ReplyRule, ...] = Field(
        default=(),
        description="Scripted replies by request content; the first rule that matches wins, "
        "before response_text.",
    )
    reply_tokens: int = Field(
        default=16, ge=1, description="Length of the derived reply before max_tokens caps it."
    )
    fault_rates: dict[Fault, float] = Field(
        default_factory=dict,
        description="Probability of each fault per request (one draw; the rates sum to <= 1).",
    )
    script: tuple[Fault, ...] = Field(
        default=(),
        description="Outcomes consumed in order, one per request, before fault_rates apply.",
    )
    retry_after: float = Field(
        default=1.0, ge=0, description="Retry-After of an injected 429 (whole seconds on the wire)."
    )
    stall_after_tokens: int = Field(
        default=2, ge=0, description="Tokens a stalled stream sends before it goes silent."
    )
    stall_seconds: float | None = Field(
        default=None, ge=0, description="How long a stall lasts; None: until the client gives up."
    )
    slow_start_seconds: float = Field(
        default=5.0, ge=0, description="How long a slow_start delays the first byte."
    )
    rate_limit_rpm: int | None = Field(
        default=None,
        ge=1,
        description="Requests admitted per sliding minute; None: no limit. Excess gets 429.",
    )
    rate_limit_window: float = Field(
        default=60.0,
        gt=0,
        description="Length of the rate limit's sliding window in seconds (60: per minute).",
    )
    seed: int = Field(default=0, description="Seed of the fault_rates draws, for repeatable runs.")
    models: tuple[str, ...] = Field(
        default=("mock-gpt", "mock-claude", "mock-llama"),
        description="Models listed by /v1/models and /api/tags (any model name is accepted).",
    )

    @model_validator(mode="after")
    def _check_rates(self) -> MockConfig:
        if Fault.OK in self.fault_rates:
            raise ValueError("fault_rates: 'ok' is what remains; list only faults")
        bad = {f.value: r for f, r in self.fault_rates.items() if not 0 <= r <= 1}
        if bad:
            raise ValueError(f"fault_rates: each rate must be between 0 and 1, got {bad}")
        total = sum(self.fault_rates.values())
        if total > 1 + 1e-9:
            raise ValueError(f"fault_rates: the rates sum to {total:g}; they must sum to <= 1")
        return self

    def reply_for(self, message_texts: tuple[str, ...]) -> str | None:
        """The fixed reply to a request with these messages: the first matching rule's,
        else ``response_text`` (None: a reply derived from the prompt)."""
        if self.reply_rules:
            conversation = "\n".join(message_texts)
            for rule in self.reply_rules:
                if all(text in conversation for text in rule.when):
                    return rule.reply
        return self.response_text

    def updated(self, changes: dict[str, Any]) -> MockConfig:
        """A copy with ``changes`` applied and validated; ConfigurationError names the field."""
        return build_config({**self.model_dump(), **changes})


def build_config(fields: dict[str, Any]) -> MockConfig:
    """Validate ``fields`` into a MockConfig, turning pydantic's error into one readable line."""
    try:
        return MockConfig.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"invalid mock LLM config: {problems}") from None


def parse_fault(text: str) -> Fault:
    """A fault from its name (``429``, ``reset``, ``slow_start``...); ValueError lists them."""
    try:
        return Fault(text.strip().lower())
    except ValueError:
        names = ", ".join(f.value for f in Fault)
        raise ValueError(f"unknown fault {text!r}; use one of {names}") from None


def parse_fault_rates(text: str) -> dict[Fault, float]:
    """``"429=0.1,503=0.02"`` as a rate per fault; ValueError says which part is wrong."""
    rates: dict[Fault, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, rate = part.partition("=")
        if not sep:
            raise ValueError(f"invalid fault rate {part!r}: write FAULT=RATE, e.g. 429=0.1")
        try:
            rates[parse_fault(name)] = float(rate)
        except ValueError as exc:
            raise ValueError(f"invalid fault rate {part!r}: {exc}") from None
    return rates


def parse_script(text: str) -> tuple[Fault, ...]:
    """``"429,ok,503,reset"`` as a script of outcomes, in order."""
    return tuple(parse_fault(p) for p in text.split(",") if p.strip())
