"""The worker process's composition root: everything it runs with, built once, handed down.

``conveyor worker`` calls ``serve``. In order:

1. the LLM configuration is read (``CONVEYOR_LLM_CONFIG``) and its API keys looked up: a
   broken one stops the process here, before it waits for anything, with a message that
   names the setting; unset, the worker runs without a gateway and ``ctx.llm`` raises
   ConfigurationError naming it;
2. the metrics server starts (``--metrics-port``);
3. the store opens (waiting for the database, migrating when asked);
4. the gateway is built on that store with its plugins: ``GatewayMetrics`` first, then the
   live token relay (``streams/token_relay.py``), then the App's LLM hooks; the breaker
   gauge watches its breakers;
5. the ``Worker`` gets the store, the gateway (``llm=``, which each ``TaskContext`` gets)
   and the task hooks (``TaskMetrics`` when metrics are served, then the App's);
   maintenance runs alongside; the worker collector watches it, and the load sampler reads
   the queues and the pool each period (``CONVEYOR_METRICS_SECONDS``);
6. on the way out the gateway is closed (its call log written) before the store.

Nothing here is a process-global: a second root in the same process builds its own. It
sits in the cli layer because it wires every layer below it (store, gateway, worker,
observability); ``conveyor/worker/process.py`` keeps the process's signals and drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from conveyor.app import App
from conveyor.errors import ConfigurationError
from conveyor.observability.metrics import serve_metrics
from conveyor.observability.queue_metrics import LoadSampler
from conveyor.observability.task_metrics import TaskMetrics
from conveyor.observability.worker_metrics import unwatch_worker, watch_worker
from conveyor.settings import Settings
from conveyor.store.database import open_store
from conveyor.store.postgres import PostgresStore
from conveyor.streams.token_relay import TokenRelay
from conveyor.worker.maintenance import Maintenance, MaintenanceOptions
from conveyor.worker.options import WorkerOptions
from conveyor.worker.process import run_process, run_worker, tune_garbage_collector
from conveyor.worker.runtime import Worker
from conveyor.worker.signals import ShutdownSignals

if TYPE_CHECKING:
    from conveyor.gateway.config import GatewayConfig
    from conveyor.gateway.gateway import Gateway

# The gateway (and httpx with it) is imported only when CONVEYOR_LLM_CONFIG is set: a
# worker whose agents never call a model does not load it.
LLM_CONFIG_ENV = "CONVEYOR_LLM_CONFIG"


async def serve(
    app: App,
    settings: Settings,
    options: WorkerOptions,
    *,
    migrate: bool,
    maintenance: bool = True,
    signals: ShutdownSignals | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Run one worker process until a signal stops it; the recycle reason if it asked.

    Raises ConfigurationError naming CONVEYOR_LLM_CONFIG (or the provider's api_key_env)
    when the LLM configuration is broken, before anything starts.
    """
    env = os.environ if environ is None else environ
    llm_config = _llm_config(env)
    tune_garbage_collector()
    metrics = (
        None
        if options.metrics_port is None
        else serve_metrics(options.metrics_port, options.metrics_host)
    )
    try:
        start = functools.partial(
            _serve_worker, app, settings, options, llm_config, env, migrate, maintenance
        )
        return await run_process(start, signals)
    finally:
        if metrics is not None:
            await asyncio.to_thread(metrics.shutdown)  # waits out its poll, up to 0.5 s
            metrics.server_close()


def _llm_config(environ: Mapping[str, str]) -> GatewayConfig | None:
    """The gateway's config, keys checked; None when CONVEYOR_LLM_CONFIG is unset."""
    if not environ.get(LLM_CONFIG_ENV, "").strip():
        return None
    from conveyor.gateway.config import gateway_config_from_env

    try:
        config = gateway_config_from_env(environ)
        if config is not None:
            config.api_keys(environ)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"the worker does not start with a broken LLM configuration: {exc}. Fix it, or "
            f"unset {LLM_CONFIG_ENV} to run agents that do not call a model"
        ) from None
    return config


async def _serve_worker(
    app: App,
    settings: Settings,
    options: WorkerOptions,
    llm_config: GatewayConfig | None,
    environ: Mapping[str, str],
    migrate: bool,
    maintenance: bool,
    stop: asyncio.Event,
    started: asyncio.Event,
) -> str | None:
    # the pool must hold the claim loop, the flusher and the heartbeat at once
    pool_settings = settings.model_copy(update={"pool_max_size": max(settings.pool_max_size, 4)})
    async with open_store(
        pool_settings, auto_migrate=migrate, wait_seconds=settings.database_wait_seconds
    ) as store:
        relay = TokenRelay(store)
        gateway = (
            None if llm_config is None else build_gateway(llm_config, store, app, environ, relay)
        )
        try:
            metered = options.metrics_port is not None
            worker = Worker(
                app, store, options, llm=gateway, hooks=[TaskMetrics()] if metered else []
            )
            upkeep = None
            if maintenance:
                periods = MaintenanceOptions(
                    promote_seconds=settings.promote_seconds,
                    reaper_seconds=settings.reaper_seconds,
                    stream_retention_seconds=settings.stream_retention_seconds,
                )
                upkeep = Maintenance(store, app.schedules, periods)
            sampler = LoadSampler(
                store,
                period=settings.metrics_seconds,
                top_tenants=settings.metrics_top_tenants,
                queues=settings.metrics_queues,
            )
            watch_worker(worker)
            try:
                async with sampler.running() if metered else contextlib.nullcontext():
                    return await run_worker(worker, stop, started, upkeep)
            finally:
                unwatch_worker(worker)
        finally:
            if gateway is not None:
                await gateway.aclose()  # writes the call log while the store is open
            await relay.aclose()  # the last live output, while the store is open


def build_gateway(
    config: GatewayConfig,
    store: PostgresStore,
    app: App,
    environ: Mapping[str, str],
    relay: TokenRelay | None = None,
) -> Gateway:
    """The worker's gateway: budgets and accounting on ``store``, metrics, the live token
    relay, the App's hooks."""
    from conveyor.gateway.gateway import Gateway
    from conveyor.gateway.hooks import LLMHook
    from conveyor.observability.gateway_metrics import GatewayMetrics, watch_breakers

    relays = [] if relay is None else [relay]
    hooks = [GatewayMetrics(), *relays, *(h for h in app.hooks if isinstance(h, LLMHook))]
    gateway = Gateway.with_store(config, store, environ=environ, hooks=hooks)
    watch_breakers(gateway.breakers)
    return gateway
