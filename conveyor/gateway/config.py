"""The gateway's configuration: providers, model aliases and their fallback chains, timeouts,
retries and the breaker, as one typed object.

Loaded from a dict, a JSON or TOML file, or the file (or inline JSON) named by
``CONVEYOR_LLM_CONFIG``; ``docs/gateway.md`` shows a complete file. Unknown fields are
rejected, so a typo fails at start instead of silently doing nothing. API keys are read from
the environment variable a provider names (``api_key_env``), or given inline as a secret
that never appears in a repr or a log.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from conveyor.core.backoff import RetryPolicy
from conveyor.core.breaker import BreakerSettings
from conveyor.core.llm_errors import CallRetryPolicy
from conveyor.core.llm_timeouts import LayeredTimeouts
from conveyor.errors import ConfigurationError
from conveyor.gateway.providers import MaxTokensField

LLM_CONFIG_ENV = "CONVEYOR_LLM_CONFIG"

ProviderKind = Literal["openai", "anthropic", "ollama"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _core(build: Any, **fields: Any) -> Any:
    """Build a core settings object, its ConfigurationError as pydantic's ValueError."""
    try:
        return build(**fields)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


class TimeoutConfig(_Strict):
    """The layered timeouts of an attempt, in seconds (see ``LayeredTimeouts``)."""

    connect: float = Field(default=5.0, description="Opening the connection.")
    ttft: float = Field(default=60.0, description="Start of the attempt to the first token.")
    gap: float = Field(default=60.0, description="Longest silence between chunks.")
    total: float = Field(default=600.0, description="The whole attempt.")

    @model_validator(mode="after")
    def _nest(self) -> TimeoutConfig:
        self.layered()
        return self

    def layered(self) -> LayeredTimeouts:
        """The core object, validated: each > 0 and connect <= ttft <= gap <= total."""
        timeouts: LayeredTimeouts = _core(LayeredTimeouts, **self.model_dump())
        return timeouts


class RetryConfig(_Strict):
    """Retries of one target before the gateway moves on to the next."""

    max_attempts: int = Field(default=3, description="Attempts per target, the first included.")
    base: float = Field(default=0.5, description="Backoff ceiling of the first retry (s).")
    cap: float = Field(default=8.0, description="Largest backoff ceiling (s).")
    max_retry_after: float = Field(
        default=60.0, description="Longest Retry-After waited for; longer moves on."
    )

    @model_validator(mode="after")
    def _valid(self) -> RetryConfig:
        self.policy()
        return self

    def policy(self) -> CallRetryPolicy:
        """The core policy."""
        backoff = _core(RetryPolicy, max_attempts=self.max_attempts, base=self.base, cap=self.cap)
        policy: CallRetryPolicy = _core(
            CallRetryPolicy, backoff=backoff, max_retry_after=self.max_retry_after
        )
        return policy


class BreakerConfig(_Strict):
    """The circuit breaker of every (provider, model) (see ``BreakerSettings``)."""

    window: int = Field(default=20, description="Recent outcomes remembered.")
    min_calls: int = Field(default=10, description="Outcomes needed before it may open.")
    failure_rate: float = Field(default=0.5, description="Share of failures that opens it.")
    cool_down: float = Field(default=30.0, description="Seconds open before probing.")
    half_open_probes: int = Field(default=1, description="Probes that must all succeed.")
    count_rate_limits: bool = Field(default=False, description="Whether a 429 is a failure.")

    @model_validator(mode="after")
    def _valid(self) -> BreakerConfig:
        self.settings()
        return self

    def settings(self) -> BreakerSettings:
        """The core settings."""
        settings: BreakerSettings = _core(BreakerSettings, **self.model_dump())
        return settings


class ProviderConfig(_Strict):
    """One provider endpoint: its API, where it is, its key and how hard to use it."""

    kind: ProviderKind = Field(description="Which API it speaks: openai, anthropic, ollama.")
    base_url: str = Field(
        description="Everything before the API path, e.g. https://api.openai.com "
        "(the gateway appends /v1/chat/completions, /v1/messages or /api/chat)."
    )
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the API key."
    )
    api_key: SecretStr | None = Field(default=None, description="The key itself (prefer env).")
    max_concurrency: int = Field(
        default=16, ge=1, description="Requests in flight toward this host, and its pool size."
    )
    timeouts: TimeoutConfig | None = Field(
        default=None, description="This provider's timeouts; None: the gateway's."
    )
    max_tokens_field: MaxTokensField = Field(
        default="max_tokens", description="OpenAI kind only: the body field of the token cap."
    )
    requests_per_minute: int | None = Field(
        default=None,
        ge=2,
        description="The provider key's request budget, shared by every worker (PostgreSQL).",
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=2,
        description="The key's token budget (prompt estimate + max_tokens reserved, "
        "the unused part given back), shared by every worker.",
    )
    rate_window: float = Field(
        default=60.0,
        gt=0,
        description="Seconds the two budgets count over (60: per minute).",
    )
    budget_lease: float = Field(
        default=0.25,
        ge=0,
        le=5,
        description="Seconds a slot of the shared budget, booked ahead of demand so a call "
        "takes it without a round trip, may be used late (the budget's margin grows by as "
        "much; at most 1 % of rate_window is used); 0: every call books its own slot.",
    )

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        try:
            url = httpx.URL(self.base_url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"base_url {self.base_url!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        return self

    def resolve_api_key(self, name: str, environ: Mapping[str, str]) -> str | None:
        """The key from the config or the environment; ConfigurationError if the named
        variable is unset (a key that was asked for and is missing must not pass silently)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env is None:
            return None
        key = environ.get(self.api_key_env)
        if not key:
            raise ConfigurationError(
                f"LLM provider {name!r}: environment variable {self.api_key_env} "
                "(its api_key_env) is not set"
            )
        return key

    @property
    def origin(self) -> str:
        """``scheme://host:port``: providers with the same origin share one pool."""
        url = httpx.URL(self.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        return f"{url.scheme}://{url.host}:{port}"


class TargetConfig(_Strict):
    """One link of a chain: a provider and the model name it knows."""

    provider: str
    model: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # "provider/model" is the short form; model names may themselves hold "/" or ":".
        if isinstance(value, str):
            provider, sep, model = value.partition("/")
            if not sep or not provider or not model:
                raise ValueError(f"write a target as provider/model, got {value!r}")
            return {"provider": provider, "model": model}
        return value


class GatewayConfig(_Strict):
    """Everything the gateway needs; the defaults suit a hosted API behind a fair network."""

    providers: dict[str, ProviderConfig] = Field(description="Providers by name.")
    aliases: dict[str, list[TargetConfig]] = Field(
        default_factory=dict, description="Model aliases: the chain of targets, primary first."
    )
    default_max_tokens: int = Field(
        default=1024, ge=1, description="Token cap of a call that sets none."
    )
    cache_ttl: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds a reply stays in the response cache (agents opt in).",
    )
    timeouts: TimeoutConfig = Field(default_factory=TimeoutConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        for name in self.providers:
            if not name or "/" in name:
                raise ValueError(f"provider name {name!r} must be non-empty and have no '/'")
        for alias, chain in self.aliases.items():
            if not chain:
                raise ValueError(f"alias {alias!r} has an empty chain")
            for target in chain:
                if target.provider not in self.providers:
                    raise ValueError(
                        f"alias {alias!r} names provider {target.provider!r}, which is not "
                        f"under providers ({', '.join(sorted(self.providers)) or 'none'})"
                    )
        # One pool per host, so everyone sharing a host must agree on how big it is.
        sizes: dict[str, tuple[str, int]] = {}
        for name, provider in self.providers.items():
            first = sizes.setdefault(provider.origin, (name, provider.max_concurrency))
            if first[1] != provider.max_concurrency:
                raise ValueError(
                    f"providers {first[0]!r} and {name!r} share host {provider.origin} but set "
                    f"max_concurrency {first[1]} and {provider.max_concurrency}; one connection "
                    "pool serves a host, so give them the same value"
                )
        return self

    def api_keys(self, environ: Mapping[str, str]) -> dict[str, str | None]:
        """Each provider's key (None: it needs none); ConfigurationError naming the
        ``api_key_env`` of the first provider whose variable is unset."""
        return {name: p.resolve_api_key(name, environ) for name, p in self.providers.items()}

    def portable(self) -> dict[str, Any]:
        """The config as JSON data, keys in clear: what a worker hands an isolated child
        over its pipe to build the same gateway. Never log it."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude_unset=True)
        for name, provider in self.providers.items():
            if provider.api_key is not None:
                data["providers"][name]["api_key"] = provider.api_key.get_secret_value()
        return data


def load_gateway_config(source: GatewayConfig | Mapping[str, Any] | str | Path) -> GatewayConfig:
    """A validated config from an object, a mapping, a ``.json``/``.toml`` path, or JSON text.

    Raises ConfigurationError naming each bad field, e.g. ``timeouts: ttft (1s) must be at
    least connect (5s)...``.
    """
    if isinstance(source, GatewayConfig):
        return source
    where = "LLM gateway config"
    if isinstance(source, Mapping):
        fields: Any = dict(source)
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        fields = _parse(source, "json", f"{where} (inline JSON)")
    else:
        path = Path(source)
        where = f"LLM gateway config {path}"
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read {where}: {exc.strerror}") from None
        fields = _parse(text, "toml" if path.suffix.lower() == ".toml" else "json", where)
    try:
        return GatewayConfig.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {_message(e)}" for e in exc.errors()
        )
        raise ConfigurationError(f"invalid {where}: {problems}") from None


def gateway_config_from_env(environ: Mapping[str, str] | None = None) -> GatewayConfig | None:
    """The config named by ``CONVEYOR_LLM_CONFIG`` (a path or inline JSON); None if unset.

    A config that cannot be read or is invalid is a ConfigurationError that names the
    setting: ``CONVEYOR_LLM_CONFIG: cannot read LLM gateway config llm.toml: ...``.
    """
    value = (os.environ if environ is None else environ).get(LLM_CONFIG_ENV, "").strip()
    if not value:
        return None
    try:
        return load_gateway_config(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{LLM_CONFIG_ENV}: {exc}") from None


def _parse(text: str, kind: str, where: str) -> Any:
    try:
        return tomllib.loads(text) if kind == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{where} is not valid {kind.upper()}: {exc}") from None


def _message(error: Any) -> str:
    cause = error.get("ctx", {}).get("error")
    return str(cause) if isinstance(cause, ValueError) else str(error["msg"])
