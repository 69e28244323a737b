"""What the API's routes are handed: the store, the key checker, the limits. Built once per
process by the composition root (``conveyor/cli/api_root.py``) and held on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from conveyor.api.agent_definitions import AgentDefinitionCache
from conveyor.api.auth import KeyChecker
from conveyor.api.backpressure import DepthWatch
from conveyor.api.coalesce import SubmitCoalescer
from conveyor.api.declared import DeclaredQueues
from conveyor.api.events.hub import EventHub
from conveyor.api.live_output import LiveOutputHub
from conveyor.api.rate_limit import KeyRateLimit
from conveyor.core.agent_definition import ModelCheck
from conveyor.store.postgres import PostgresStore


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """Request limits; each field documents its default."""

    max_task_bytes: int = 1_048_576
    """Largest body of a single submit, and largest payload of a task in a batch (1 MiB)."""
    max_batch_bytes: int = 64 * 1_048_576
    """Largest body of a batch submit (64 MiB)."""


@dataclass(frozen=True, slots=True)
class ApiServices:
    """The parts every request may use."""

    store: PostgresStore
    keys: KeyChecker
    submits: SubmitCoalescer
    """Single submits go through it: a tenant's concurrent ones share one statement."""
    declared: DeclaredQueues
    """Which queues may take work, remembered (a submit costs no round trip for it)."""
    depth: DepthWatch | None = None
    """The queues that shed and their depth (None: no backpressure)."""
    rate_limit: KeyRateLimit | None = None
    """The per-key request rate limit (None: no limit)."""
    agents: AgentDefinitionCache | None = None
    """Declarative agents' latest definitions, to check submits against (None: unchecked)."""
    agent_model_check: ModelCheck | None = None
    """Checks a definition's model against the gateway's config (None: no config here)."""
    live: LiveOutputHub | None = None
    """The readers of running tasks' LLM output (None: not served here)."""
    events: EventHub | None = None
    """The process's one reader of the event log, feeding every SSE stream (None: the
    event routes answer 503)."""
    sse_keepalive_seconds: float = 15.0
    """A silent event stream sends a keep-alive comment this often."""


async def services(request: Request) -> ApiServices:
    """The process's services (a FastAPI dependency). ``async`` on purpose: FastAPI runs a
    plain ``def`` dependency in a worker thread, a thread hop on every request."""
    found: ApiServices = request.app.state.services
    return found
