"""``conveyor api`` as a real process on a free loopback port, for e2e tests."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import CLI, ROOT, process_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiProcess:
    """A running API server; ``url`` is its base URL."""

    def __init__(
        self, dsn: str, log_path: Path, *args: str, port: int | None = None, **env: str
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("a") as log:
            self.process = subprocess.Popen(
                [*CLI, "api", "--port", str(self.port), "--log-level", "WARNING", *args],
                env=process_env(dsn, **env),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"API not ready: {self.log_path.read_text()}")

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
