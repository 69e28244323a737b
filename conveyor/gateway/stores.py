"""Everything a full gateway needs of the store, as one protocol (PostgresStore has it)."""

from __future__ import annotations

from typing import Protocol

from conveyor.gateway.accounting import CallStore
from conveyor.gateway.bucket_backend import BucketStore
from conveyor.gateway.cache import CacheStore
from conveyor.gateway.policies import PolicyStore
from conveyor.gateway.spend_budget import SpendStore


class GatewayStore(BucketStore, SpendStore, PolicyStore, CallStore, CacheStore, Protocol):
    """Buckets, monthly spend, tenants' policies, the call log and the response cache."""
