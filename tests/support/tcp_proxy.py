"""A TCP proxy on loopback that a test can cut: every connection through it is reset, and
new ones are refused until it is restored.

It stands between Conveyor and a real PostgreSQL, so a test sees what a network fault or a
failover does to real connections (a reset socket mid-statement, refused reconnects),
without restarting the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit


class CuttableProxy:
    """Forwards 127.0.0.1:``port`` to a PostgreSQL server's TCP port or Unix socket."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        # a host that is a folder is a Unix socket folder (the embedded server's DSN form)
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.refusing = False
        self.port = 0
        self.accepted = 0
        """Connections forwarded so far."""

    @classmethod
    async def for_dsn(cls, dsn: str) -> tuple[CuttableProxy, str]:
        """A started proxy to the server of ``dsn``, and the DSN that goes through it."""
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        socket_dir = query.pop("host", [None])[0]
        proxy = cls(socket_dir or parts.hostname or "127.0.0.1", parts.port or 5432)
        await proxy.start()
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
        rest = urlencode({k: v[0] for k, v in query.items()})
        return proxy, urlunsplit(parts._replace(netloc=netloc, query=rest))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until ``restore``."""
        self.refusing = True
        for writer in list(self._links):
            _reset(writer)
        self._links.clear()

    def restore(self) -> None:
        """Accept connections again."""
        self.refusing = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            _reset(writer)
            return
        host, port = self._upstream
        try:
            if host.startswith("/"):
                up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            _reset(writer)
            return
        self.accepted += 1
        self._links |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(sink)
            _reset(sink)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (RST), as a dropped network path or a killed peer looks."""
    with contextlib.suppress(Exception):
        writer.transport.abort()
