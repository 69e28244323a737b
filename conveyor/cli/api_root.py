"""The API process's composition root: what each server process calls to build its app.

Settings come from the environment (the ``api`` command has put the resolved
``DATABASE_URL`` there); the store, the key checker and the limits are built here, once per
process, and handed to the app explicitly. Nothing is found through a global.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from conveyor.api.app import ApiApp, create_app
from conveyor.api.auth import KeyChecker
from conveyor.api.coalesce import SubmitCoalescer
from conveyor.api.services import ApiServices
from conveyor.settings import load_settings
from conveyor.store.database import open_store


def build_app() -> ApiApp:
    """The API app of one process, wired from the environment (uvicorn's factory)."""
    settings = load_settings()

    @asynccontextmanager
    async def open_services() -> AsyncIterator[ApiServices]:
        async with open_store(settings, wait_seconds=settings.database_wait_seconds) as store:
            keys = KeyChecker(
                store.find_api_key,
                admin_key=settings.admin_key,
                cache_seconds=settings.api_key_cache_seconds,
            )
            submits = SubmitCoalescer(
                lambda tenant, tasks: store.for_tenant(tenant).enqueue_batch(tasks),
                window=settings.api_coalesce_seconds,
            )
            yield ApiServices(store=store, keys=keys, submits=submits)

    return create_app(open_services)
