"""SIGTERM and SIGINT for a worker process, from its first instant to its last.

A signal that arrives while the process is still importing the app or waiting for the
database must not kill it mid-step (Python's default for SIGTERM), nor be lost: it is
recorded at once by a plain handler installed before anything else, and acted on when the
event loop runs. The first signal asks for a graceful stop; a second exits at once (130).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from types import FrameType

import structlog

log = structlog.get_logger("conveyor.worker")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownSignals:
    """Counts shutdown signals; calls ``on_first`` once the loop is attached."""

    def __init__(self) -> None:
        self.received = 0
        self._on_first: Callable[[], None] | None = None

    def install(self) -> ShutdownSignals:
        """Handle the signals from now on, before any event loop exists."""
        for signum in SIGNALS:
            signal.signal(signum, self._from_python)
        return self

    def attach(self, loop: asyncio.AbstractEventLoop, on_first: Callable[[], None]) -> None:
        """Deliver signals through ``loop``; a signal received before now fires at once."""
        self._on_first = on_first
        for signum in SIGNALS:
            loop.add_signal_handler(signum, self._received, signum)
        if self.received:
            on_first()

    def _from_python(self, signum: int, _frame: FrameType | None) -> None:
        self._received(signum)

    def _received(self, signum: int) -> None:
        self.received += 1
        name = signal.Signals(signum).name
        if self.received == 1:
            log.info("shutdown_requested", signal=name)
            if self._on_first is not None:
                self._on_first()
        else:
            log.warning("forced_exit", signal=name)
            os._exit(130)
