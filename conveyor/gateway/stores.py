"""Everything a full gateway needs of the store, as one protocol (PostgresStore has it)."""

from __future__ import annotations

from typing import Protocol

from conveyor.gateway.accounting.call_log import CallStore
from conveyor.gateway.accounting.response_cache import CacheStore
from conveyor.gateway.budgets.bucket_store import BucketStore
from conveyor.gateway.budgets.caps import CapStore
from conveyor.gateway.budgets.spend import SpendStore
from conveyor.gateway.budgets.tenant_policies import PolicyStore


class GatewayStore(BucketStore, SpendStore, CapStore, PolicyStore, CallStore, CacheStore, Protocol):
    """Buckets, monthly spend, run and group caps, tenants' policies, the call log and the
    response cache."""
