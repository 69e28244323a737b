"""How a worker runs: its options, each documenting its default, validated on creation."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field

from conveyor.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker runs; each field documents its default."""

    queues: tuple[str, ...] | None = None
    """Queues to serve (default: every agent of the app)."""
    concurrency: int = 256
    """Tasks in flight at once in this process."""
    claim_batch: int = 100
    """Most tasks taken by one claim statement."""
    lease_seconds: float = 30.0
    """Lease length; a dead worker's tasks come back this long after its last heartbeat."""
    heartbeat_seconds: float = 5.0
    """How often all leases are extended (at most half the lease)."""
    claim_coalesce_seconds: float = 0.005
    """A busy worker woken with few free slots waits this long to claim more at once."""
    poll_seconds: float = 2.0
    """Idle poll period (jittered), the fallback when a notification is missed."""
    grace_seconds: float = 30.0
    """On shutdown, how long in-flight tasks may finish before they are released."""
    max_tasks_per_process: int | None = None
    """Recycle (drain and restart) the process after claiming this many tasks."""
    max_memory_mb: float | None = None
    """Recycle the process when its resident memory grows past this many MB."""
    sync_threads: int = 64
    """Threads for plain ``def`` handlers (each blocks one thread while it runs)."""
    loop_lag_warn_seconds: float = 0.25
    """Log a warning naming the task when the event loop is blocked this long."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port while the process runs (0: any free port)."""
    metrics_host: str = "0.0.0.0"
    """Address the metrics are served on: all interfaces, so Prometheus can scrape a pod's IP."""
    database_retry_seconds: float = 30.0
    """How long a store call of ``ctx`` (step, once, spawn) and the worker's own start and
    stop keep retrying while the database is unreachable, before giving up."""
    outcome_hold_seconds: float = 60.0
    """How long the leases of finished runs whose outcomes cannot be written are kept;
    after that they are left to expire, so other workers can take the tasks."""
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError("--concurrency must be >= 1")
        if self.claim_batch < 1:
            raise ConfigurationError("--claim-batch must be >= 1")
        if self.max_tasks_per_process is not None and self.max_tasks_per_process < 1:
            raise ConfigurationError("--max-tasks-per-process must be >= 1")
        if self.max_memory_mb is not None and self.max_memory_mb <= 0:
            raise ConfigurationError("--max-memory must be > 0 MB")
        if self.sync_threads < 1:
            raise ConfigurationError("--sync-threads must be >= 1")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigurationError("--metrics-port must be a TCP port (0 to 65535)")
        if self.database_retry_seconds < 0 or self.outcome_hold_seconds <= 0:
            raise ConfigurationError(
                "database_retry_seconds must be >= 0 and outcome_hold_seconds > 0"
            )
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ConfigurationError(
                "CONVEYOR_HEARTBEAT_SECONDS must be at most half of CONVEYOR_LEASE_SECONDS, "
                "or live tasks lose their leases"
            )
