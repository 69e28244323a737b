"""The worker process's composition root: everything it runs with, built once, handed down.

``conveyor worker`` calls ``serve``. In order:

1. the LLM configuration is read (``CONVEYOR_LLM_CONFIG``) and its API keys looked up: a
   broken one stops the process here, before it waits for anything, with a message that
   names the setting; unset, the worker runs without a gateway and ``ctx.llm`` raises
   ConfigurationError naming it. The keys (and the admin key) join the log redaction;
2. tracing is set up from the ``OTEL_*`` variables (off when they ask for nothing), and
   the metrics server starts (``--metrics-port``);
3. the store opens (waiting for the database, migrating when asked);
4. the gateway is built on that store with its plugins: ``LLMTracing`` when tracing (first:
   its span opens before the others see the attempt and closes after them), then
   ``GatewayMetrics``, the live token relay (``streams/token_relay.py``), the App's LLM
   hooks; the breaker gauge watches its breakers; declarative agents (``--agents``,
   ``--stored-agent``) are stored, read and registered in the App, and their definitions
   are polled for new versions alongside the worker;
5. the ``Worker`` gets the store, the gateway (``llm=``, which each ``TaskContext`` gets),
   the task hooks of the process (``TaskTracing`` when tracing, ``TaskMetrics`` when
   metrics are served, ``TaskLogContext``) and the App's; maintenance runs alongside; the
   worker collector watches it, and the load sampler reads the queues and the pool each
   period (``CONVEYOR_METRICS_SECONDS``);
6. on the way out the gateway is closed (its call log written) before the store, and the
   spans still buffered are exported.

Nothing here is a process-global: a second root in the same process builds its own. It
sits in the cli layer because it wires every layer below it (store, gateway, worker,
observability); ``conveyor/worker/process.py`` keeps the process's signals and drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from conveyor.app import App, TaskHook
from conveyor.cli.collector import tune_garbage_collector
from conveyor.core.agent_definition import AgentDefinition, ModelCheck
from conveyor.errors import ConfigurationError
from conveyor.observability.metrics import serve_metrics
from conveyor.observability.queue_metrics import LoadSampler
from conveyor.observability.redaction import remember_secrets
from conveyor.observability.task_logging import TaskLogContext
from conveyor.observability.task_metrics import TaskMetrics
from conveyor.observability.tracing import Tracing, tracing_from_env
from conveyor.observability.worker_metrics import unwatch_worker, watch_worker
from conveyor.settings import Settings
from conveyor.store.database import open_store
from conveyor.store.postgres import PostgresStore
from conveyor.streams.token_relay import TokenRelay
from conveyor.worker.declarative_registry import DeclarativeAgents
from conveyor.worker.maintenance import Maintenance, MaintenanceOptions
from conveyor.worker.options import WorkerOptions
from conveyor.worker.process import run_process, run_worker
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
    agents: Mapping[str, AgentDefinition] | None = None,
    stored_agents: Sequence[str] = (),
) -> str | None:
    """Run one worker process until a signal stops it; the recycle reason if it asked.

    ``agents`` are declarative agents read from an ``--agents`` file, ``stored_agents``
    roles whose definitions are read from the database; both are served beside the App's.

    Raises ConfigurationError naming CONVEYOR_LLM_CONFIG (or the provider's api_key_env)
    when the LLM configuration is broken, or a declarative agent's model is unknown to it,
    before anything starts.
    """
    env = os.environ if environ is None else environ
    llm_config = _llm_config(env)
    remember_secrets([settings.admin_key])
    tracing = tracing_from_env(env, "conveyor-worker")
    declared = Declarative(dict(agents or {}), tuple(stored_agents), llm_config)
    tune_garbage_collector()
    metrics = (
        None
        if options.metrics_port is None
        else serve_metrics(options.metrics_port, options.metrics_host)
    )
    try:
        start = functools.partial(
            _serve_worker,
            app,
            settings,
            options,
            llm_config,
            env,
            migrate,
            maintenance,
            declared,
            tracing,
        )
        return await run_process(start, signals)
    finally:
        if metrics is not None:
            await asyncio.to_thread(metrics.shutdown)  # waits out its poll, up to 0.5 s
            metrics.server_close()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)  # exports what is still buffered


def _llm_config(environ: Mapping[str, str]) -> GatewayConfig | None:
    """The gateway's config, keys checked; None when CONVEYOR_LLM_CONFIG is unset."""
    if not environ.get(LLM_CONFIG_ENV, "").strip():
        return None
    from conveyor.gateway.config import gateway_config_from_env

    try:
        config = gateway_config_from_env(environ)
        if config is not None:
            remember_secrets(config.api_keys(environ).values())
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
    declared: Declarative,
    tracing: Tracing | None,
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
            None
            if llm_config is None
            else build_gateway(llm_config, store, app, environ, relay, tracing=tracing)
        )
        refresher: asyncio.Task[None] | None = None
        try:
            if declared.wanted:
                registry = DeclarativeAgents(
                    app,
                    store,
                    model_check=declared.model_check,
                    refresh_seconds=settings.agent_refresh_seconds,
                )
                await registry.install(declared.from_file, declared.stored_roles)
                refresher = asyncio.create_task(registry.run(), name="conveyor-agent-definitions")
            metered = options.metrics_port is not None
            hooks = task_hooks(tracing)
            if metered:  # inside the run's span: a histogram's exemplar carries its trace id
                hooks.insert(len(hooks) - 1, TaskMetrics())
            worker = Worker(app, store, options, llm=gateway, hooks=hooks)
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
            if refresher is not None:
                refresher.cancel()
            if gateway is not None:
                await gateway.aclose()  # writes the call log while the store is open
            await relay.aclose()  # the last live output, while the store is open


def task_hooks(tracing: Tracing | None) -> list[TaskHook]:
    """The process's own task hooks, outermost first: the run's span, then its log fields."""
    if tracing is None:
        return [TaskLogContext()]
    from conveyor.observability.task_tracing import TaskTracing

    return [TaskTracing(tracing.tracer), TaskLogContext()]


def build_gateway(
    config: GatewayConfig,
    store: PostgresStore,
    app: App,
    environ: Mapping[str, str],
    relay: TokenRelay | None = None,
    *,
    tracing: Tracing | None = None,
) -> Gateway:
    """The worker's gateway: budgets and accounting on ``store``, a span per attempt when
    ``tracing``, metrics, the live token relay, the App's hooks."""
    from conveyor.gateway.gateway import Gateway
    from conveyor.gateway.hooks import LLMHook
    from conveyor.observability.gateway_metrics import GatewayMetrics, watch_breakers

    hooks: list[LLMHook] = []
    if tracing is not None:
        from conveyor.observability.llm_tracing import LLMTracing

        hooks.append(LLMTracing(tracing.tracer))
    hooks.append(GatewayMetrics())
    if relay is not None:
        hooks.append(relay)
    hooks.extend(h for h in app.hooks if isinstance(h, LLMHook))
    gateway = Gateway.with_store(config, store, environ=environ, hooks=hooks)
    watch_breakers(gateway.breakers)
    return gateway


class Declarative:
    """The declarative agents a worker process was asked to serve, checked before start."""

    def __init__(
        self,
        from_file: dict[str, AgentDefinition],
        stored_roles: tuple[str, ...],
        llm_config: GatewayConfig | None,
    ) -> None:
        self.from_file = from_file
        self.stored_roles = stored_roles
        self.model_check: ModelCheck | None = None
        if not self.wanted:
            return
        if llm_config is None:
            raise ConfigurationError(
                f"declarative agents call a model: set {LLM_CONFIG_ENV} to the gateway's "
                "configuration (see docs/gateway.md)"
            )
        from conveyor.cli.agent_model_check import model_check

        check = self.model_check = model_check(llm_config)
        unknown = [
            f"agents.{role}.model: {problem}"
            for role, definition in from_file.items()
            if (problem := check(definition.model)) is not None
        ]
        if unknown:
            raise ConfigurationError("--agents: " + "; ".join(unknown))

    @property
    def wanted(self) -> bool:
        """Whether there is any declarative agent to serve."""
        return bool(self.from_file or self.stored_roles)
