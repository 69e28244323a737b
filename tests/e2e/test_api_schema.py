"""schemathesis against a real ``conveyor api``: every operation of ``/openapi.json``, a
bounded number of generated requests each (valid and invalid), with a valid tenant key so
they reach the routes. No answer may be a 5xx, and every answer must match the schema
(status codes, content types, headers and bodies the document declares)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess
from tests.e2e.test_api_tasks import key_for

EXAMPLES = 40
"""Generated requests per operation and phase: with the fixed seed below, enough to find
everything the first (larger) runs found; about 10 s in make test."""

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
)
# Not positive_data_acceptance: a request the schema allows may still be refused on its
# meaning (a queue nothing declares, Idempotency-Key header and field that differ, run_at
# with delay_seconds), which no JSON schema can say; those are 422 problems, checked above.


async def test_every_operation_answers_as_its_schema_says(
    database_dsn: str, store: PostgresStore, tmp_path: Path
) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")
    server = ApiProcess(database_dsn, tmp_path / "api.log")
    try:
        server.wait_ready()
        run = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                CHECKS,
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "13",
                "--workers",
                "1",
                # The event streams (SSE) do not end while their tasks run, and a valid
                # request to them waits for events; tests/e2e/test_event_streams.py checks
                # their statuses, problems and declared content types instead.
                "--exclude-path-regex",
                "/events$",
                "--generation-database",
                "none",
                "--no-color",
                "--output-sanitize",
                "true",
                "--report-dir",
                str(tmp_path / "report"),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=tmp_path,
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
