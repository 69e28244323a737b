"""The drip buckets in Redis behave as the PostgreSQL ones do, under races and end to end.

Redis comes from REDIS_URL, else the server on 127.0.0.1 (port CONVEYOR_TEST_REDIS_PORT,
default 6379; point it at a dead port to exercise the next step), else a redis-server this
module starts and stops. Each test writes under its own key prefix and deletes it after.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from itertools import pairwise
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from conveyor.errors import ConfigurationError, DatabaseUnavailable
from conveyor.gateway.budgets.bucket_store import BucketStore, bucket_store_from_env
from conveyor.gateway.budgets.redis_buckets import RedisBuckets
from conveyor.store.params import BucketDraw
from conveyor.store.postgres import PostgresStore
from tests.integration.budget_harness import assert_the_limit_held, two_gateways_call

PORT_ENV = "CONVEYOR_TEST_REDIS_PORT"
# The two backends are called side by side, each reading its own server's clock: their
# answers differ by the jitter between the two round trips. Every semantic slip below would
# move a value by at least half a second.
TOLERANCE = 0.05


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _started_redis(binary: str, directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"redis-server on port {port} did not start")
        time.sleep(0.05)
    return process, url


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis to test against: REDIS_URL, the local one, or one started for this module."""
    configured = os.environ.get("REDIS_URL", "").strip()
    if configured:
        yield configured
        return
    local = f"redis://127.0.0.1:{int(os.environ.get(PORT_ENV, '6379'))}/0"
    if _answers(local):
        yield local
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(
            "no Redis: REDIS_URL unset, nothing on 127.0.0.1:6379, "
            "and no redis-server binary to start"
        )
    process, url = _started_redis(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        _stop(process)


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    mine = f"conveyor-test:{uuid.uuid4().hex}"
    yield mine
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{mine}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def buckets(redis_url: str, prefix: str) -> AsyncIterator[RedisBuckets]:
    """Buckets under this test's prefix."""
    opened = RedisBuckets.from_url(redis_url, prefix=prefix)
    yield opened
    await opened.aclose()


# --- the same answers as PostgreSQL ---------------------------------------------------------

G_REQ = BucketDraw("openai", "requests", 1.0)
G_TOK = BucketDraw("openai", "tokens", 4.0)
T_REQ = BucketDraw("openai", "requests", 2.0, "acme")
OTHER = BucketDraw("openai", "requests", 1.0, "other")  # only ever refunded before step 4


def _with(draw: BucketDraw, seconds: float) -> BucketDraw:
    return BucketDraw(draw.provider, draw.kind, seconds, draw.tenant_id)


STEPS: list[tuple[str, Sequence[BucketDraw]]] = [
    ("reserve", [G_REQ, T_REQ, G_TOK]),  # all new: 1, 2, 4
    ("reserve", [G_REQ, T_REQ]),  # 2, 4
    # 3 s of tokens back; zero and negative refunds do nothing; a missing bucket stays missing
    ("refund", [_with(G_TOK, 3.0), _with(T_REQ, 0.0), _with(G_REQ, -1.0), _with(OTHER, 5.0)]),
    ("reserve", [G_REQ, T_REQ, G_TOK, OTHER]),  # 3, 6, 5, and 1: OTHER is new
    ("refund", [_with(G_TOK, 5.5)]),  # the clock goes half a second into the past...
    ("reserve", [G_TOK]),  # ...and counts from now: 4
    ("refund", [_with(G_TOK, 30.0)]),  # far into the past (Redis drops the key)...
    ("reserve", [G_TOK]),  # ...reads as an empty bucket: 4
    ("reserve", [_with(G_REQ, 0.0), _with(T_REQ, -0.5)]),  # 3 and 5.5, as PostgreSQL does
    ("reserve", []),
    ("refund", []),
]


async def _run(store: BucketStore, step: tuple[str, Sequence[BucketDraw]]) -> list[float] | None:
    operation, draws = step
    if operation == "reserve":
        return await store.reserve_llm_budget(draws)
    await store.refund_llm_budget(draws)
    return None


async def test_redis_answers_what_postgresql_answers(
    store: PostgresStore, buckets: RedisBuckets, redis_url: str
) -> None:
    seen: list[tuple[list[float] | None, list[float] | None]] = []
    for step in STEPS:
        pg, rd = await asyncio.gather(_run(store, step), _run(buckets, step))
        seen.append((pg, rd))
    for (pg, rd), step in zip(seen, STEPS, strict=True):
        if pg is None or rd is None:
            assert pg is None and rd is None, step
            continue
        assert len(rd) == len(pg), step
        assert all(abs(r - p) < TOLERANCE for r, p in zip(rd, pg, strict=True)), (step, pg, rd)
    # a new (or emptied) bucket's clock runs exactly its draw ahead
    assert seen[0][1] == pytest.approx([1.0, 2.0, 4.0], abs=1e-6)
    assert seen[3][1] is not None and seen[3][1][3] == pytest.approx(1.0, abs=1e-6)
    assert seen[5][1] == seen[7][1] == pytest.approx([4.0], abs=1e-6)

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        await buckets.refund_llm_budget([BucketDraw("openai", "tokens", 1.0, "nobody")])
        assert not await client.exists(buckets.key(BucketDraw("openai", "tokens", 1.0, "nobody")))
        # keys are hash-tagged by provider, and vanish after their clock passes
        assert buckets.key(T_REQ).endswith(":{openai}:acme:requests")
        assert buckets.key(G_REQ).endswith(":{openai}:*:requests")
        ttl = await client.pttl(buckets.key(T_REQ))
        assert 0 < ttl <= 7_000
    finally:
        await client.aclose()


# --- races ----------------------------------------------------------------------------------


async def test_concurrent_reservations_from_two_clients_get_distinct_evenly_spaced_slots(
    redis_url: str, prefix: str
) -> None:
    emission, callers = 1.0, 200
    clients = [RedisBuckets.from_url(redis_url, prefix=prefix) for _ in range(2)]
    draw = BucketDraw("openai", "requests", emission)
    try:
        ahead = await asyncio.gather(
            *(clients[i % 2].reserve_llm_budget([draw]) for i in range(callers))
        )
    finally:
        for client in clients:
            await client.aclose()
    slots = sorted(a for (a,) in ahead)
    assert slots[0] == pytest.approx(emission, abs=1e-6)  # the first found the bucket empty
    gaps = [later - earlier for earlier, later in pairwise(slots)]
    # Each reservation lands one emission after the one before, less the time between them
    # on the server: a lost update would show as a gap near zero.
    assert all(emission - 0.5 < gap <= emission + 1e-5 for gap in gaps), gaps
    assert slots[-1] <= callers * emission + 1e-5


# --- end to end: two gateways, one provider -------------------------------------------------


async def test_two_gateways_sharing_a_redis_budget_never_exceed_the_providers_limit(
    redis_url: str, prefix: str
) -> None:
    backends = [RedisBuckets.from_url(redis_url, prefix=prefix) for _ in range(2)]
    try:
        seen = await two_gateways_call(backends)
    finally:
        for backend in backends:
            await backend.aclose()
    assert_the_limit_held(seen)


async def test_two_leasing_gateways_sharing_a_redis_budget_never_exceed_the_limit(
    redis_url: str, prefix: str
) -> None:
    backends = [RedisBuckets.from_url(redis_url, prefix=prefix) for _ in range(2)]
    try:
        seen = await two_gateways_call(backends, lateness=0.6, spacing=0.03)
    finally:
        for backend in backends:
            await backend.aclose()
    assert_the_limit_held(seen, leased=True)


# --- choosing the backend, and its errors ---------------------------------------------------


async def test_redis_is_chosen_only_when_redis_url_is_set(
    store: PostgresStore, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for unset in ({}, {"REDIS_URL": ""}, {"REDIS_URL": "  "}):
        assert bucket_store_from_env(unset, store) is store
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert bucket_store_from_env(None, store) is store

    chosen = bucket_store_from_env({"REDIS_URL": redis_url}, store)
    monkeypatch.setenv("REDIS_URL", redis_url)
    from_process = bucket_store_from_env(None, store)
    try:
        assert isinstance(chosen, RedisBuckets) and isinstance(from_process, RedisBuckets)
    finally:
        for opened in (chosen, from_process):
            if isinstance(opened, RedisBuckets):
                await opened.aclose()


@pytest.mark.parametrize(
    "url", ["localhost:6379", "http://localhost:6379", "redis://:secret@localhost:port/0"]
)
async def test_a_malformed_redis_url_is_a_configuration_error_naming_it(
    store: PostgresStore, url: str
) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_URL") as raised:
        bucket_store_from_env({"REDIS_URL": url}, store)
    assert "secret" not in str(raised.value)


async def test_an_unreachable_redis_fails_the_call_naming_redis_url() -> None:
    buckets = RedisBuckets.from_url(f"redis://127.0.0.1:{_free_port()}/0")  # nothing listens
    try:
        with pytest.raises(DatabaseUnavailable, match="REDIS_URL"):
            await buckets.reserve_llm_budget([G_REQ])
    finally:
        await buckets.aclose()
