"""Acting on the server's exit signal before it waits for open responses.

On SIGTERM, uvicorn stops accepting connections and waits (up to its graceful timeout) for
the responses in flight to finish. An event stream never finishes by itself, so without
help every API process with a connected client would take the whole timeout to stop. The
app chains a handler after uvicorn's own: the server still shuts down as it would, and
the event hub ends its streams at once, so their clients reconnect (with
``Last-Event-ID``) to another instance.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def on_exit_signal(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` on the running loop when SIGTERM or SIGINT arrives, after the
    handler already installed (the server's). Does nothing where no handler of the
    server's is installed (a test client, a thread): the default would then be lost."""
    loop = asyncio.get_running_loop()
    previous: dict[int, Callable[[int, FrameType | None], object]] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in EXIT_SIGNALS:
            installed = signal.getsignal(sig)
            if callable(installed):
                previous[sig] = installed

    def chained(sig: int, frame: FrameType | None) -> None:
        previous[sig](sig, frame)
        loop.call_soon_threadsafe(callback)

    for number in previous:
        signal.signal(number, chained)
    try:
        yield
    finally:
        for number, handler in previous.items():
            if signal.getsignal(number) is chained:
                signal.signal(number, handler)
