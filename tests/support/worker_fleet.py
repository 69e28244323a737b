"""Real ``conveyor worker`` processes for fault tests: start, SIGKILL, SIGTERM, replace.

Each worker is the real CLI in a child process (``python -m conveyor.cli worker``) with
its JSON log in a file of its own. The fleet learns each worker's id from the ``workers``
table (by pid), because the accounting of a fault run needs to know which tasks the
SIGKILLed worker held. It keeps the processes it ended apart from the live ones, so that
a live worker that exited by itself (a silent death) shows at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.support import retrying_db

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """How the workers of a fault run are started; every field documents its default."""

    app: str
    """``module:app`` the workers run."""
    concurrency: int = 64
    """Tasks in flight per worker."""
    lease_seconds: float = 10.0
    """A killed worker's tasks come back about this long after its last heartbeat."""
    heartbeat_seconds: float = 2.0
    reaper_seconds: float = 1.0
    poll_seconds: float = 0.5
    database_wait_seconds: float = 60.0
    """How long a worker waits at start-up for the database (a replacement may start while
    the server restarts)."""
    log_level: str = "WARNING"

    def environment(self, dsn: str) -> dict[str, str]:
        """A worker's environment: the database, these settings, the repo importable."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.update(
            DATABASE_URL=dsn,
            PYTHONPATH=str(ROOT),
            CONVEYOR_LEASE_SECONDS=str(self.lease_seconds),
            CONVEYOR_HEARTBEAT_SECONDS=str(self.heartbeat_seconds),
            CONVEYOR_REAPER_SECONDS=str(self.reaper_seconds),
            CONVEYOR_POLL_SECONDS=str(self.poll_seconds),
            CONVEYOR_DATABASE_WAIT_SECONDS=str(self.database_wait_seconds),
        )
        return env


class WorkerProcess:
    """One ``conveyor worker`` child; its stderr (JSON log lines) in ``log_path``."""

    def __init__(self, name: str, dsn: str, options: FleetOptions, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.worker_id: str | None = None
        """The worker's id in the ``workers`` table, once it registered."""
        argv = [sys.executable, "-m", "conveyor.cli", "worker", "--app", options.app]
        argv += ["--concurrency", str(options.concurrency), "--log-level", options.log_level]
        with log_path.open("w") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                argv,
                env=options.environment(dsn),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    def events(self) -> Counter[str]:
        """How many times each event occurs in this worker's log."""
        return log_events(self.log_path)


def log_events(path: Path) -> Counter[str]:
    """How many times each event occurs in a worker's JSON log; lines that are not JSON (a
    traceback printed outside the logger) count as ``<unstructured>``."""
    counts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            counts[str(json.loads(line).get("event"))] += 1
        except (ValueError, AttributeError):
            if line.strip():
                counts["<unstructured>"] += 1
    return counts


@dataclass(frozen=True, slots=True)
class KilledWorker:
    """A worker ended by SIGKILL: which one, and when (this machine's clock, the same one
    the database's ``clock_timestamp()`` reads)."""

    name: str
    worker_id: str
    killed_at: datetime
    held: int
    """Tasks it held (state running) just before the kill."""


class WorkerFleet:
    """The workers of one fault run, on the database of ``dsn``."""

    def __init__(self, dsn: str, options: FleetOptions, log_dir: Path) -> None:
        self.dsn = dsn
        self.options = options
        self.log_dir = log_dir
        self.live: list[WorkerProcess] = []
        self.ended: dict[str, int] = {}
        """Exit status of every worker the fleet stopped or killed, by name."""
        self.killed: list[KilledWorker] = []
        self._started = 0

    async def start(self, count: int = 1) -> list[WorkerProcess]:
        """Start ``count`` workers and wait until each registered (has a worker id)."""
        started = []
        for _ in range(count):
            self._started += 1
            name = f"worker-{self._started}"
            worker = WorkerProcess(name, self.dsn, self.options, self.log_dir / f"{name}.log")
            self.live.append(worker)
            started.append(worker)
        for worker in started:
            await self._wait_registered(worker)
        return started

    async def holdings(self) -> dict[str, int]:
        """Running tasks per worker id, right now."""
        rows = await retrying_db.fetch(
            self.dsn,
            "SELECT worker_id, count(*) AS n FROM tasks WHERE state = 'running' "
            "AND worker_id IS NOT NULL GROUP BY worker_id",
        )
        return {row["worker_id"]: row["n"] for row in rows}

    async def pick(self, rng: random.Random, *, busiest: bool) -> WorkerProcess:
        """A live worker: the one holding most running tasks, or a random one."""
        if not busiest:
            return rng.choice(self.live)
        held = await self.holdings()
        return max(self.live, key=lambda w: held.get(w.worker_id or "", 0))

    async def kill(self, worker: WorkerProcess) -> KilledWorker:
        """SIGKILL ``worker`` (no goodbye: its leases must expire) and remember when."""
        assert worker.worker_id is not None, "kill a registered worker"
        held = (await self.holdings()).get(worker.worker_id, 0)
        killed_at = datetime.now(UTC)
        worker.process.send_signal(signal.SIGKILL)
        code = await asyncio.to_thread(worker.process.wait, 30)
        self._retire(worker, code)
        record = KilledWorker(worker.name, worker.worker_id, killed_at, held)
        self.killed.append(record)
        return record

    async def terminate(self, worker: WorkerProcess, timeout: float = 60.0) -> int:
        """SIGTERM ``worker`` and wait for it to drain and exit; its exit status."""
        worker.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(worker.process.wait, timeout)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            await asyncio.to_thread(worker.process.wait)
            code = -999  # did not stop in time: not a clean exit
        self._retire(worker, code)
        return code

    def silent_deaths(self) -> dict[str, int]:
        """Live workers that exited on their own, with their exit status."""
        return {w.name: code for w in self.live if (code := w.process.poll()) is not None}

    async def stop_all(self) -> dict[str, int]:
        """SIGTERM every live worker at once; exit status by name."""
        workers = list(self.live)
        codes = await asyncio.gather(*(self.terminate(w) for w in workers))
        return {w.name: code for w, code in zip(workers, codes, strict=True)}

    def events(self) -> Counter[str]:
        """Log events of every worker the fleet started, summed."""
        total: Counter[str] = Counter()
        for path in sorted(self.log_dir.glob("worker-*.log")):
            total += log_events(path)
        return total

    def close(self) -> None:
        """Kill whatever still runs (a failed test must not leave workers behind)."""
        for worker in self.live:
            if worker.alive:
                worker.process.kill()
            worker.process.wait()
            self.ended.setdefault(worker.name, worker.process.returncode)
        self.live = []

    def _retire(self, worker: WorkerProcess, code: int) -> None:
        self.live.remove(worker)
        self.ended[worker.name] = code

    async def _wait_registered(self, worker: WorkerProcess, timeout: float = 90.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        host = socket.gethostname()
        while worker.worker_id is None:
            if not worker.alive:
                raise RuntimeError(
                    f"{worker.name} exited ({worker.process.returncode}) before it "
                    f"registered:\n{worker.output()[-3000:]}"
                )
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"{worker.name} did not register within {timeout:g}s")
            worker.worker_id = await retrying_db.fetchval(
                self.dsn,
                "SELECT id FROM workers WHERE pid = $1 AND host = $2 "
                "ORDER BY started_at DESC LIMIT 1",
                worker.pid,
                host,
            )
            if worker.worker_id is None:
                await asyncio.sleep(0.1)
