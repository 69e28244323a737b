"""The webhook adapter's records and the port a worker needs for them. Driver-free, like
``records.py``: the worker and its ports name them without loading asyncpg."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CallbackGrant:
    """What a delivery's token admits: the task's attempt and the signal its result is."""

    tenant_id: str
    task_id: int
    attempt: int
    queue: str
    group_id: str | None
    signal: str
    timeout: float
    """Seconds from now to the callback deadline (what a heartbeat extends by, at most)."""
    max_wait: float
    """Seconds from now past which no heartbeat moves the deadline."""


@dataclass(frozen=True, slots=True)
class CallbackToken:
    """A stored token's grant and state, found by the token's hash."""

    tenant_id: str
    task_id: int
    attempt: int
    queue: str
    group_id: str | None
    signal: str
    timeout: float
    expires_at: datetime
    used: bool
    live: bool


class WebhookTokens(Protocol):
    """What the worker's webhook adapter does with the store (``store/webhooks.py``)."""

    async def issue_callback_token(self, token: str, grant: CallbackGrant) -> datetime | None:
        """Store the hash of a delivery's token; its deadline (None: already reported)."""
        ...

    async def webhook_overrides(self, queues: Sequence[str]) -> dict[tuple[str, str], str]:
        """Runtime URLs of tenants whose use of one of ``queues`` is a webhook."""
        ...
