"""Configuration, read from the environment in this one module and validated.

Every field reads ``CONVEYOR_<FIELD>`` (``DATABASE_URL`` and ``REDIS_URL`` keep their
conventional names). CLI flags override the environment. Secrets come only from the
environment and are never logged (``database_url`` is shown redacted).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor.core.durations import parse_duration
from conveyor.errors import ConfigurationError


class Settings(BaseSettings):
    """Conveyor's settings; the defaults suit one machine with the embedded server."""

    # allow_inf_nan=False: an infinite lease or period is never meant and breaks the SQL.
    model_config = SettingsConfigDict(
        env_prefix="CONVEYOR_", extra="ignore", frozen=True, allow_inf_nan=False
    )

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CONVEYOR_DATABASE_URL"),
        description="PostgreSQL DSN; unset starts the embedded server.",
    )
    direct_database_url: str | None = Field(
        default=None,
        description="DSN of a direct connection (not through a transaction-pooling PgBouncer) "
        "for LISTEN, migrations and session advisory locks; default: DATABASE_URL.",
    )
    embedded_dir: Path | None = Field(
        default=None, description="Data folder of the embedded server (default: state dir)."
    )
    pool_min_size: int = Field(default=1, ge=0, description="Pool connections kept open.")
    pool_max_size: int = Field(default=10, ge=1, description="Most pool connections.")
    statement_cache_size: int = Field(
        default=100, ge=0, description="Prepared statements per connection; 0 behind PgBouncer."
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, description="How long a claim holds a task without a heartbeat."
    )
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="How often a worker extends all its leases."
    )
    reaper_seconds: float = Field(
        default=2.0, gt=0, description="How often expired leases are returned to the queue."
    )
    promote_seconds: float = Field(
        default=0.5, gt=0, description="How often due scheduled tasks are made ready."
    )
    poll_seconds: float = Field(
        default=2.0, gt=0, description="Idle poll period, a fallback to LISTEN/NOTIFY."
    )
    database_wait_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a worker waits at start-up for an unreachable database.",
    )
    worker_stuck_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A worker holding tasks that recorded no outcome this long is stuck.",
    )
    admin_key: str | None = Field(
        default=None,
        repr=False,
        description="An admin API key that lives only in the environment (a secret).",
    )
    api_key_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long an API process trusts a key it has seen; revocation bound.",
    )
    api_key_rps: float = Field(
        default=100.0,
        ge=0,
        description="Requests per second per API key, shared by every API process (0: no limit).",
    )
    api_depth_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often an API process reads the depth of queues that shed.",
    )
    api_coalesce_seconds: float = Field(
        default=0.001,
        ge=0,
        le=1,
        description="Single submits of one tenant arriving within this window are written "
        "in one statement (one transaction, one commit); 0 writes each on its own.",
    )
    metrics_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="How often a worker or API process reads the queues' depth and age "
        "(one statement) and its pool's size for its metrics.",
    )
    metrics_queues: bool = Field(
        default=True,
        description="Export the queues' depth and age from this process (off: a process "
        "exports only its own metrics; another one exports the queues').",
    )
    metrics_token: str | None = Field(
        default=None,
        repr=False,
        min_length=16,
        description="When set, the API's GET /metrics needs `Authorization: Bearer <token>` "
        "(a secret; Prometheus sends it with `authorization: {credentials: ...}`).",
    )
    metrics_top_tenants: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Tenants named in the per-tenant queue metrics (those with the most tasks "
        'waiting); the others are summed as tenant="other".',
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL"),
        repr=False,
        description="Redis for shared rate buckets and event wake-ups (unset: PostgreSQL).",
    )
    redis_events_channel: str = Field(
        default="conveyor:events",
        min_length=1,
        max_length=200,
        description="The Redis channel API processes hear event wake-ups on.",
    )
    sse_keepalive_seconds: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="A silent event stream sends a ': keep-alive' comment after about this long.",
    )
    sse_buffer_bytes: int = Field(
        default=1_048_576,
        ge=65_536,
        description="Event frames buffered per stream; a client further behind is cut off "
        "(it resumes with Last-Event-ID).",
    )
    event_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="An API process reads the event log this often even without a wake-up.",
    )
    fairness: bool = Field(
        default=True, description="Fair dequeue between tenants (off: priority, then FIFO)."
    )
    agent_refresh_seconds: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="How often workers and API processes read the latest versions of "
        "declarative agents' definitions: a PUT /v1/agents/{role} is in force within this.",
    )
    retention: str = Field(default="90d", description="How long finished tasks are kept.")
    stream_retention_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How long a task's live LLM output stays replayable after the task ends "
        "(GET /v1/tasks/{id}/stream).",
    )
    webhook_secret: str | None = Field(
        default=None,
        repr=False,
        description="HMAC-SHA256 key that signs webhook deliveries to external runtimes "
        "(a secret, shared with the runtimes; never logged).",
    )
    webhook_allowed_hosts: str = Field(
        default="",
        description="Hosts (a.io, *.a.io) or URL prefixes (https://a.io/hooks) the webhook "
        "adapter may deliver to, comma- or space-separated; empty: none.",
    )
    webhook_callback_url: str | None = Field(
        default=None,
        description="The API's base URL as external runtimes reach it, for their callbacks "
        "(e.g. https://conveyor.example.com).",
    )
    webhook_request_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Timeout of one webhook delivery request."
    )
    webhook_delivery_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries of one delivery within a run (5xx, 429, timeouts) before the task "
        "is retried by its agent's policy.",
    )

    @field_validator("database_url", "direct_database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        return None if value is None else check_database_url(value)

    @field_validator("redis_url")
    @classmethod
    def _blank_redis_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("retention")
    @classmethod
    def _check_retention(cls, value: str) -> str:
        parse_duration(value)  # its ValueError shows an example of a valid duration
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        # These span two fields, so pydantic reports no location: name the variables here.
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"CONVEYOR_HEARTBEAT_SECONDS ({self.heartbeat_seconds}) must be at most half of "
                f"CONVEYOR_LEASE_SECONDS ({self.lease_seconds}), or live tasks lose their leases"
            )
        if self.direct_database_url is not None and self.database_url is None:
            raise ValueError(
                "CONVEYOR_DIRECT_DATABASE_URL is set without DATABASE_URL; the embedded server "
                "needs neither: set DATABASE_URL too, or unset both"
            )
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"CONVEYOR_POOL_MIN_SIZE ({self.pool_min_size}) must not exceed "
                f"CONVEYOR_POOL_MAX_SIZE ({self.pool_max_size})"
            )
        return self


_DSN_EXAMPLE = "postgresql://user:password@host:5432/dbname"
_PORT = re.compile(r"[0-9]{1,5}")
_VARIABLES = {
    "database_url": "DATABASE_URL",
    "DATABASE_URL": "DATABASE_URL",
    "REDIS_URL": "REDIS_URL",
}
"""Fields read from a variable without the CONVEYOR_ prefix, by error location."""


def check_database_url(url: str) -> str:
    """Return ``url`` or raise ValueError saying what is wrong with it (never its password).

    The driver parses the DSN only when it connects, and some mistakes reach it as a bare
    ``int()`` or ``urlsplit`` error; these are caught here, where the setting is read.
    """
    if not url.strip():
        # An empty variable is a mistake (a template or a shell expansion that found nothing),
        # never a choice: running on the embedded server instead would hide it.
        raise ValueError(
            "is set but empty; unset it to use the embedded server, or give a DSN such as "
            + _DSN_EXAMPLE
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(
            f"is not a valid URL ({exc}); an IPv6 host goes in brackets, "
            "e.g. postgresql://user@[::1]:5432/dbname"
        ) from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"must start with postgresql://, e.g. {_DSN_EXAMPLE}")
    hosts = parts.netloc.partition("@")[2] if "@" in parts.netloc else parts.netloc
    for spec in hosts.split(",") if hosts else []:
        _check_host(spec)
    for ports in parse_qs(parts.query).get("port", []):
        for port in ports.split(","):
            _check_port(port, f"?port={ports}")
    return url


def _check_host(spec: str) -> None:
    if not spec:
        raise ValueError("has an empty host in its host list")
    if spec.startswith("/"):  # a Unix socket folder
        return
    if spec.startswith("["):
        bracketed = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", spec)
        if bracketed is None:
            raise ValueError(
                f"has a malformed IPv6 host {spec!r}; write it as [address]:port, e.g. [::1]:5432"
            )
        port = bracketed.group(2)
    else:
        _host, colon, port = spec.partition(":")
        if ":" in port:
            raise ValueError(
                f"has the host {spec!r}: an IPv6 address goes in brackets, e.g. [::1]:5432"
            )
        if not colon:
            port = None
    if port is not None:
        _check_port(port, spec)


def _check_port(port: str, where: str) -> None:
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"has the port {port!r} in {where!r}; a port is a number from 1 to 65535")


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with ``overrides`` (CLI flags) on top.

    Raises ConfigurationError naming the offending variable instead of a validation dump.
    """
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            cause = error.get("ctx", {}).get("error")
            message = str(cause) if isinstance(cause, ValueError) else error["msg"]
            variable = _VARIABLES.get(where, f"CONVEYOR_{where.upper()}")
            problems.append(f"{variable}: {message}" if where else message)
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from exc
