"""A real Prometheus server (and promtool) for tests: the Debian package's binaries.

``prometheus_binary``/``promtool_binary`` find the binary, installing the ``prometheus``
package with apt-get when it is missing and the test runs as root (as CI does); a test
skips with a visible reason only when it cannot be had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path

import httpx
import pytest

PACKAGE = "prometheus"


@cache
def _install() -> str | None:
    """Install the package; None when it worked, else why not."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine (not Debian)"
    if os.geteuid() != 0:
        return "not root: cannot apt-get install prometheus"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode == 0 and command[1] == "install":
            return None
    return f"apt-get install {PACKAGE} failed: {done.stderr.strip()[-300:]}"


def binary(name: str) -> str:
    """The path of ``name`` (prometheus or promtool); skips the test when it cannot be had."""
    found = shutil.which(name)
    if found is None:
        why = _install()
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} unavailable: {why or 'installed, yet not on PATH'}")
    return found


class PrometheusServer:
    """``prometheus`` scraping ``targets`` every second, its data in ``folder``."""

    def __init__(self, folder: Path, port: int, targets: dict[str, str]) -> None:
        config = folder / "prometheus.yml"
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            for job, target in targets.items()
        )
        config.write_text(
            f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}"
        )
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = folder / "prometheus.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def query(self, expression: str) -> list[dict[str, object]]:
        """The instant query's result vector (empty while nothing matches)."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5)
        reply.raise_for_status()
        body = reply.json()
        assert body["status"] == "success", body
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def wait_for(self, expression: str, value: float, timeout: float = 60) -> None:
        """Query until the single result of ``expression`` equals ``value``."""
        deadline = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                seen = self.query(expression)
            except httpx.TransportError:  # not listening yet
                seen = "not listening"
            else:
                if len(seen) == 1 and float(seen[0]["value"][1]) == value:  # type: ignore[index]
                    return
            time.sleep(0.5)
        raise AssertionError(f"{expression} gave {seen}, not {value}, within {timeout}s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
