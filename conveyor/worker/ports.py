"""What a worker process needs of the store: its leases and the gateway's ports.

The runtime and ``TaskContext`` type against this protocol, not the engine class; the
maintenance loop against ``store.ports.Maintenance``, the recorder against ``WorkerLeases``.
"""

from __future__ import annotations

from typing import Protocol

from conveyor.gateway.stores import GatewayStore
from conveyor.store.ports import WorkerLeases
from conveyor.store.webhook_records import WebhookTokens


class WorkerStore(WorkerLeases, GatewayStore, WebhookTokens, Protocol):
    """Claim, heartbeat, finish, effects and liveness, plus what ``ctx.llm`` and the
    webhook adapter need."""
