"""A MockLLM on its own event loop in a thread, for synchronous tests and scripts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from conveyor.mock_llm.config import MockConfig
from conveyor.mock_llm.server import MockLLM
from conveyor.mock_llm.stats import MockStats

T = TypeVar("T")
START_TIMEOUT_SECONDS = 10.0


class BackgroundMockLLM:
    """Runs a MockLLM in a daemon thread; ``with BackgroundMockLLM() as mock:`` serves a block.

    The server's state belongs to its loop, so every call from the caller's thread is handed
    to that loop and waited for.
    """

    def __init__(
        self, config: MockConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._mock = MockLLM(config, host=host, port=port)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> str:
        """Start the thread and the server in it; return the base URL."""
        if self._thread is not None:
            raise RuntimeError("this BackgroundMockLLM is already running")
        self._thread = threading.Thread(target=self._run, name="conveyor-mock-llm", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS):
            raise RuntimeError("the mock LLM thread did not start in time")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self._mock.url

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            await self._mock.start()
        except BaseException as exc:  # handed to start() in the caller's thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await self._mock.stop()

    def stop(self) -> None:
        """Stop the server and join its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        thread.join()

    def _call(self, action: Callable[[], T]) -> T:
        if self._loop is None or self._thread is None:
            raise RuntimeError("the BackgroundMockLLM is not running: call start() first")

        async def on_loop() -> T:
            return action()

        return asyncio.run_coroutine_threadsafe(on_loop(), self._loop).result()

    @property
    def url(self) -> str:
        """The base URL of the running server."""
        return self._mock.url

    def stats(self) -> MockStats:
        """A snapshot of the counters."""
        return self._call(lambda: self._mock.stats)

    def configure(self, **changes: Any) -> MockConfig:
        """Change config fields on the running server."""
        return self._call(lambda: self._mock.configure(**changes))

    def reset(self) -> None:
        """Zero the counters; restart the script, the rate-limit window and the fault draws."""
        self._call(self._mock.reset)

    def __enter__(self) -> BackgroundMockLLM:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
