"""The gateway's budgets: what admits an attempt before it is sent, and settles after it.

``budget`` is the seam (``Budget``, ``BudgetAsk``, ``Reservation``) and the two budgets of
no store (``AdmitAllBudget``, ``CombinedBudget``). Built on it: ``spend`` (the tenant's
monthly tokens and money) and ``shared`` (the providers' and tenants' request and token
rates, as drip buckets every worker shares). The buckets live behind ``bucket_store``
(PostgreSQL, or ``redis_buckets``); ``coalescing`` sends one process's concurrent
reservations in one round trip and ``slot_leases`` books a provider's slots ahead of demand.
``tenant_policies`` caches each tenant's limits (and model override) from its plan.
"""
