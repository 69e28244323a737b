"""The API process's composition root: what each server process calls to build its app.

Settings come from the environment (the ``api`` command has put the resolved
``DATABASE_URL`` there); the store, the key checker and the limits are built here, once per
process, and handed to the app explicitly. Nothing is found through a global.

Metrics are attached here too: ``HttpMetrics`` wraps the app (RED metrics per route and
``GET /metrics``) and the load sampler reads the queues and the pool each period
(``conveyor/observability``); the API's own code never imports prometheus_client.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from conveyor.api.agent_definitions import AgentDefinitionCache
from conveyor.api.app import ApiApp, create_app
from conveyor.api.auth import KeyChecker
from conveyor.api.backpressure import DepthWatch
from conveyor.api.coalesce import SubmitCoalescer
from conveyor.api.declared import DeclaredQueues
from conveyor.api.events.running import HubConfig, running_hub
from conveyor.api.live_output import LiveOutputHub
from conveyor.api.rate_limit import KeyRateLimit
from conveyor.api.services import ApiServices
from conveyor.cli.agent_model_check import agent_model_check
from conveyor.cli.collector import tune_garbage_collector
from conveyor.gateway.budgets.bucket_store import bucket_store_from_env
from conveyor.observability.http_metrics import HttpMetrics, process_ended
from conveyor.observability.queue_metrics import LoadSampler
from conveyor.observability.redaction import remember_secrets
from conveyor.observability.request_tracing import ApiTracing
from conveyor.observability.tracing import tracing_from_env
from conveyor.settings import load_settings
from conveyor.store.database import open_store


def build_app() -> ApiApp:
    """The API app of one process, wired from the environment (uvicorn's factory).

    Tracing is set up here, per server process, from the ``OTEL_*`` variables (off when
    they ask for nothing): the batch exporter's thread belongs to the process that uses it.
    """
    settings = load_settings()
    remember_secrets([settings.admin_key])
    # Not installed as the global provider: FastAPI's own instrumentation (recent versions
    # span every dependency and endpoint) would then add a second server span per request.
    tracing = tracing_from_env(os.environ, "conveyor-api", install=False)
    api_tracing = None if tracing is None else ApiTracing(tracing.tracer)

    @asynccontextmanager
    async def open_services() -> AsyncIterator[ApiServices]:
        async with AsyncExitStack() as stack:
            if tracing is not None:  # closed last: exports the spans still buffered
                stack.push_async_callback(asyncio.to_thread, tracing.shutdown)
            store = await stack.enter_async_context(
                open_store(settings, wait_seconds=settings.database_wait_seconds)
            )
            keys = KeyChecker(
                store.find_api_key,
                admin_key=settings.admin_key,
                cache_seconds=settings.api_key_cache_seconds,
            )
            depth = await stack.enter_async_context(
                DepthWatch(store.queue_loads, period=settings.api_depth_seconds).running()
            )
            rate_limit = None
            if settings.api_key_rps > 0:
                # The gateway's shared buckets: Redis when REDIS_URL is set, else PostgreSQL.
                buckets = bucket_store_from_env(None, store)
                closer = getattr(buckets, "aclose", None) if buckets is not store else None
                if closer is not None:  # RedisBuckets: its connections
                    stack.push_async_callback(closer)
                rate_limit = KeyRateLimit(buckets, settings.api_key_rps)
            submits = SubmitCoalescer(
                lambda tenant, tasks: store.for_tenant(tenant).enqueue_batch(tasks),
                window=settings.api_coalesce_seconds,
            )
            declared = DeclaredQueues(store.require_declared_queues)
            agents = await stack.enter_async_context(
                AgentDefinitionCache(
                    store.latest_agent_definitions,
                    store.latest_agent_versions,
                    period=settings.agent_refresh_seconds,
                ).running()
            )
            # One listening connection per process (or, with REDIS_URL, one Redis
            # subscription): it wakes the event hub and the live-output hub alike.
            live = LiveOutputHub(store)
            live.start()
            stack.push_async_callback(live.stop)
            hub = await stack.enter_async_context(
                running_hub(
                    store,
                    HubConfig(
                        direct_dsn=store.direct_dsn,
                        redis_url=settings.redis_url,
                        redis_channel=settings.redis_events_channel,
                        poll_seconds=settings.event_poll_seconds,
                        buffer_bytes=settings.sse_buffer_bytes,
                        keepalive_seconds=settings.sse_keepalive_seconds,
                    ),
                    also_wake=live.wake,
                )
            )
            stack.callback(
                process_ended
            )  # once the sampler stopped: its live gauges leave the sums
            sampler = LoadSampler(
                store,
                period=settings.metrics_seconds,
                top_tenants=settings.metrics_top_tenants,
                queues=settings.metrics_queues,
            )
            await stack.enter_async_context(sampler.running())
            # what startup built is frozen: 10,000 streams made full collections pause
            # the process for a second and more (cli/collector.py says how)
            tune_garbage_collector()
            yield ApiServices(
                store=store,
                keys=keys,
                submits=submits,
                declared=declared,
                depth=depth,
                rate_limit=rate_limit,
                agents=agents,
                agent_model_check=agent_model_check(),
                live=live,
                events=hub,
                sse_keepalive_seconds=settings.sse_keepalive_seconds,
                tracing=api_tracing,
            )

    app = create_app(open_services, tracing=api_tracing)
    # outermost: a 413 of the body limit is counted too
    app.add_middleware(HttpMetrics, token=settings.metrics_token)
    return app
