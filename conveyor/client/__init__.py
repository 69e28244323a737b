"""The HTTP client of Conveyor's API, and the models it shares with the server.

``Client`` (synchronous) and ``AsyncClient`` (asyncio) make the same calls; ``calls``
describes each route once for both. Import them from ``conveyor``.
"""

from conveyor.client.async_ import AsyncClient
from conveyor.client.calls import submission
from conveyor.client.retries import ClientRetries
from conveyor.client.sync import Client

__all__ = ["AsyncClient", "Client", "ClientRetries", "submission"]
