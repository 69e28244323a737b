"""The FastAPI application: routes, problem details, body limits. It validates, records and
reports; it never runs an agent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from conveyor.api.body_limit import BodyLimit
from conveyor.api.exit_signal import on_exit_signal
from conveyor.api.problems import install_problem_handlers
from conveyor.api.request_log import RequestLog
from conveyor.api.routes import (
    admin_dlq,
    admin_keys,
    admin_plans,
    admin_queues,
    admin_tenants,
    agents,
    callbacks,
    events,
    groups,
    health,
    task_stream,
    tasks,
    usage,
)
from conveyor.api.services import ApiLimits, ApiServices

if TYPE_CHECKING:
    from conveyor.observability.request_tracing import ApiTracing

ApiApp = FastAPI
"""The app type, for the composition root's annotations (only this layer imports FastAPI)."""

OpenServices = Callable[[], AbstractAsyncContextManager[ApiServices]]


def create_app(
    open_services: OpenServices,
    limits: ApiLimits | None = None,
    *,
    tracing: ApiTracing | None = None,
) -> ApiApp:
    """An app whose services ``open_services()`` opens at start-up and closes at shutdown
    (the process's composition root builds them: the store, the key checker). Every
    request gets an access line and its log context; ``tracing`` adds a server span."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services() as services:
            app.state.services = services
            # end the event and live-output streams as soon as the server is told to stop
            # (exit_signal.py)
            with on_exit_signal(lambda: _close_streams(services)):
                yield

    app = FastAPI(
        title="Conveyor",
        version=_version(),
        description="Submit, read and manage agent tasks. Errors are RFC 9457 problems.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(tasks.router)
    app.include_router(callbacks.router)
    app.include_router(task_stream.router)
    app.include_router(events.router)
    app.include_router(groups.router)
    app.include_router(usage.router)
    app.include_router(agents.router)
    for admin in (admin_tenants, admin_plans, admin_keys, admin_queues, admin_dlq):
        app.include_router(admin.router)
    limits = limits or ApiLimits()
    app.add_middleware(
        BodyLimit,
        limit_for=lambda path: (
            limits.max_batch_bytes if path.endswith("/batch") else limits.max_task_bytes
        ),
    )
    app.add_middleware(RequestLog, tracing=tracing)  # added last: the outermost
    return app


def _version() -> str:
    from conveyor import __version__

    return __version__


def _close_streams(services: ApiServices) -> None:
    if services.events is not None:
        services.events.close_streams()
    if services.live is not None:
        services.live.close_viewers()
