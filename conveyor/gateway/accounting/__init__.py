"""The gateway's accounting: a record of every attempt, where the records go, and the cache.

``records`` is the seam: the ``CallRecord`` of each attempt, the ``CallRecorder`` that takes
it, and ``CallCounters`` (the in-process default). ``call_log`` writes the records to
``llm_calls`` in batches; ``response_cache`` serves a deterministic call's earlier reply
again, per tenant, and a hit is recorded like any attempt.
"""
