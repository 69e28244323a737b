"""``conveyor status --watch`` in a pseudo-terminal: it redraws in place, and Ctrl-C ends it
cleanly (status 0, no traceback)."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import subprocess
import time

import pytest

from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from tests.e2e.conftest import CLI, ROOT, process_env


def read_until(fd: int, marker: bytes, times: int, timeout: float = 60) -> bytes:
    """What the terminal showed until ``marker`` appeared ``times`` times."""
    seen = b""
    deadline = time.monotonic() + timeout
    while seen.count(marker) < times:
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return seen


@pytest.mark.timeout(90)
async def test_watch_redraws_until_ctrl_c(store: PostgresStore, database_dsn: str) -> None:
    await store.enqueue_batch([NewTask(queue="watched", payload={})] * 3)
    status, text = await asyncio.to_thread(watch_until_ctrl_c, database_dsn)
    assert status == 0, text
    assert "watched" in text and "queues" in text and "workers" in text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text


def watch_until_ctrl_c(database_dsn: str) -> tuple[int, str]:
    """Run ``status --watch`` in a pseudo-terminal for three redraws, then press Ctrl-C:
    the exit status and what the terminal showed."""
    main, child = pty.openpty()
    process = subprocess.Popen(
        [*CLI, "status", "--watch", "--every", "0.2"],
        env=process_env(database_dsn, COLUMNS="120", LINES="40", TERM="xterm"),
        cwd=ROOT,
        stdin=child,
        stdout=child,
        stderr=child,
        start_new_session=True,
    )
    os.close(child)
    try:
        shown = read_until(main, b"Ctrl-C to quit", times=3)  # three redraws
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
    return status, shown.decode(errors="replace")
