"""What a worker process needs of the store: its leases and the gateway's ports.

The runtime and ``TaskContext`` type against this protocol, not the engine class; the
maintenance loop against ``store.ports.Maintenance``, the recorder against ``WorkerLeases``.
"""

from __future__ import annotations

from typing import Protocol

from conveyor.gateway.stores import GatewayStore
from conveyor.store.ports import WorkerLeases


class WorkerStore(WorkerLeases, GatewayStore, Protocol):
    """Claim, heartbeat, finish, effects and liveness, plus what ``ctx.llm`` needs."""
