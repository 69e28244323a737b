"""Plugins that carry a task's output out of the worker while it runs.

``token_relay.TokenRelay`` is an ``LLMHook``: every chunk of an agent's ``ctx.llm.stream``
is buffered and written in small batches to a ``ChunkSink`` (the store's ``task_chunks``
table by default, a Redis stream per task with ``REDIS_URL``), where the API's
``GET /v1/tasks/{id}/stream`` reads it. The worker and the gateway never import this
package: the worker's composition root attaches the relay as a hook.
"""
