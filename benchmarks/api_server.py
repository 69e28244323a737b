"""One ``conveyor api`` process for a benchmark: started on a free port against a scratch
database, ready when ``/readyz`` answers 200 (shared by api.py and sse.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(
    scratch: str, extra_env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """A ready API process on ``scratch`` (no per-key rate limit unless ``extra_env`` sets
    ``CONVEYOR_API_KEY_RPS``): the process, its base URL and the environment it got."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(DATABASE_URL=scratch, PYTHONPATH=str(ROOT), CONVEYOR_API_KEY_RPS="0")
    env.update(extra_env or {})
    server = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "api", "--port", str(port), "--workers", "1",
         "--log-level", "WARNING"], env=env, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server, url, env
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.terminate()
            raise SystemExit("the API did not become ready")
        time.sleep(0.1)
