"""The mock LLM server: start it on loopback from a test, or run it from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from conveyor.errors import ConfigurationError
from conveyor.mock_llm.anthropic_api import AnthropicMessages
from conveyor.mock_llm.config import MockConfig
from conveyor.mock_llm.control import ControlRoutes
from conveyor.mock_llm.exchange import CHAT_REQUEST, chat_handler
from conveyor.mock_llm.ollama_api import OllamaChat
from conveyor.mock_llm.openai_api import OpenAIChat
from conveyor.mock_llm.state import MockState
from conveyor.mock_llm.stats import MockStats

# Prompts of agents are long; aiohttp's default cap of 1 MiB per body would refuse some.
MAX_BODY_BYTES = 64 * 1024 * 1024
# stop() cuts chat requests off at once; this bounds the wait for any other request.
SHUTDOWN_GRACE_SECONDS = 1.0


class MockLLM:
    """An OpenAI, Anthropic and Ollama look-alike serving real HTTP in the current event loop.

    ::

        async with MockLLM(MockConfig(script=("429", "ok"))) as mock:
            client = AsyncOpenAI(base_url=mock.url + "/v1", api_key="test")

    ``port=0`` (the default) takes a free ephemeral port; ``url`` tells which.
    """

    def __init__(
        self, config: MockConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = MockState(config or MockConfig())
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    def build_app(self) -> web.Application:
        """The aiohttp application: chat endpoints of the three APIs plus the control routes."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/chat/completions", chat_handler(OpenAIChat(), self.state))
        app.router.add_post("/v1/messages", chat_handler(AnthropicMessages(), self.state))
        app.router.add_post("/api/chat", chat_handler(OllamaChat(), self.state))
        app.router.add_routes(ControlRoutes(self.state).routes())
        app.on_response_prepare.append(self._count_status)
        return app

    async def _count_status(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.get(CHAT_REQUEST):
            self.state.stats.status_sent(response.status)

    async def start(self) -> str:
        """Listen on ``host:port`` and return the base URL, e.g. ``http://127.0.0.1:38211``."""
        if self._runner is not None:
            raise RuntimeError("this MockLLM is already running")
        # handler_cancellation: a client that hangs up cancels its handler, so a stalled
        # stream ends when its client gives up instead of sleeping on forever.
        runner = web.AppRunner(
            self.build_app(),
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigurationError(
                f"the mock LLM cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from exc
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        return self._url

    async def stop(self) -> None:
        """Stop listening and drop the connections of chat requests still running.

        A mock has no work worth finishing, and a stalled stream would otherwise hold the
        shutdown for aiohttp's whole grace period.
        """
        runner, self._runner, self._url = self._runner, None, None
        if runner is None:
            return
        handlers = list(self.state.handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await runner.cleanup()

    async def __aenter__(self) -> MockLLM:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The base URL; point an SDK at ``url + "/v1"`` (OpenAI) or ``url`` (Anthropic)."""
        if self._url is None:
            raise RuntimeError("the MockLLM is not running: call start() first")
        return self._url

    @property
    def config(self) -> MockConfig:
        """The config in force."""
        return self.state.config

    @property
    def stats(self) -> MockStats:
        """A snapshot of the counters (the same numbers as ``GET /mock/stats``)."""
        return self.state.stats.copy()

    def configure(self, **changes: Any) -> MockConfig:
        """Change config fields on the running server, as ``POST /mock/config`` does."""
        return self.state.configure(changes)

    def reset(self) -> None:
        """Zero the counters; restart the script, the rate-limit window and the fault draws."""
        self.state.reset()


def run_mock_llm(
    host: str,
    port: int,
    config: MockConfig,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (the ``conveyor mock-llm`` command); blocks."""

    async def serve() -> None:
        async with MockLLM(config, host=host, port=port) as mock:
            if on_ready is not None:
                on_ready(mock.url)
            stopped = asyncio.Event()
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
                loop.add_signal_handler(signal.SIGTERM, stopped.set)
            await stopped.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
