"""Serving the app: uvicorn with uvloop and httptools, N worker processes.

Each uvicorn worker process builds its own app (and so its own store pool) from the factory
named by ``factory``; they share nothing but the database.
"""

from __future__ import annotations

import uvicorn


def serve(factory: str, *, host: str, port: int, workers: int) -> None:
    """Serve the app that ``factory`` (``module:function``) builds until SIGTERM/SIGINT."""
    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_config=None,  # the process's own logging (JSON lines), configured before
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
    )
