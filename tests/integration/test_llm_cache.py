"""The LLM response cache on real PostgreSQL: a reply round-trips as a cached ChatResult,
tenants never see each other's replies, expired rows are misses and are pruned, hits are
counted, and a failing store is a miss, never an exception."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import structlog

from conveyor.gateway.accounting.response_cache import ResponseCache
from conveyor.gateway.chat import ChatResult
from conveyor.store import llm_cache
from conveyor.store.postgres import PostgresStore
from tests.integration.helpers import execute, fetchval

MESSAGES = [{"role": "user", "content": "write a slogan for shoes"}]
RESULT = ChatResult(
    text="Walk on air.",
    finish_reason="stop",
    prompt_tokens=12,
    completion_tokens=4,
    provider="openai",
    model="gpt-4o-mini",
    latency=0.8,
    ttft=0.3,
    attempts=2,
    usage_estimated=True,
)


def cache_key(content: str = "write a slogan for shoes") -> bytes:
    key = ResponseCache.key("writer", [{"role": "user", "content": content}], 50, 0.0)
    assert key is not None
    return key


def reply(text: str) -> dict[str, Any]:
    return {
        "text": text,
        "finish_reason": "stop",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "provider": "openai",
        "model": "m",
        "usage_estimated": False,
    }


async def hits(store: PostgresStore, tenant_id: str, key: bytes) -> int | None:
    value: int | None = await fetchval(
        store, "SELECT hits FROM llm_cache WHERE tenant_id = $1 AND key = $2", tenant_id, key
    )
    return value


async def test_a_result_comes_back_cached_with_its_text_and_usage(store: PostgresStore) -> None:
    cache = ResponseCache(store)
    key = cache_key()
    assert await cache.get("acme", key) is None

    await cache.put("acme", key, RESULT)
    got = await cache.get("acme", key)

    assert got == replace(RESULT, latency=0.0, ttft=0.0, attempts=0, cached=True)
    stored = await fetchval(store, "SELECT reply FROM llm_cache WHERE key = $1", key)
    assert stored["text"] == "Walk on air."


async def test_one_tenant_never_gets_another_tenants_reply(store: PostgresStore) -> None:
    cache = ResponseCache(store)
    key = cache_key()
    await cache.put("acme", key, RESULT)

    assert await cache.get("globex", key) is None
    assert await cache.get(None, key) is None

    await cache.put(None, key, ChatResult("untenanted", "length", 1, 1, "local", "m", 0.1, 0.1))
    untenanted = await cache.get(None, key)
    assert untenanted is not None and untenanted.text == "untenanted"
    assert (await cache.get("", key)) == untenanted  # None is stored as ''
    acme = await cache.get("acme", key)
    assert acme is not None and acme.text == "Walk on air."


async def test_an_expired_reply_is_a_miss_and_is_replaced_by_the_next_put(
    store: PostgresStore,
) -> None:
    key = cache_key()
    await store.llm_cache_put("acme", key, reply("old"), -60)  # already expired
    assert await store.llm_cache_get("acme", key) is None
    assert await hits(store, "acme", key) == 0  # a miss counts nothing

    await store.llm_cache_put("acme", key, reply("new"), 60)
    got = await store.llm_cache_get("acme", key)
    assert got is not None and got["text"] == "new"


async def test_each_hit_is_counted_and_a_live_replacement_keeps_the_count(
    store: PostgresStore,
) -> None:
    cache = ResponseCache(store)
    key = cache_key()
    await cache.put("acme", key, RESULT)
    assert await hits(store, "acme", key) == 0

    for _ in range(3):
        assert await cache.get("acme", key) is not None
    assert await hits(store, "acme", key) == 3

    await cache.put("acme", key, RESULT)  # a second worker missed it at the same time
    assert await hits(store, "acme", key) == 3

    await execute(store, "UPDATE llm_cache SET expires_at = now() - interval '1 second'")
    await cache.put("acme", key, RESULT)
    assert await hits(store, "acme", key) == 0


async def test_prune_removes_only_expired_rows(store: PostgresStore) -> None:
    live, dead = cache_key("live"), cache_key("dead")
    await store.llm_cache_put("acme", live, reply("live"), 60)
    await store.llm_cache_put("acme", dead, reply("dead"), -1)
    await store.llm_cache_put("globex", dead, reply("dead"), -1)

    assert await store.prune_llm_cache() == 2
    assert await store.prune_llm_cache() == 0
    assert await fetchval(store, "SELECT count(*) FROM llm_cache") == 1
    assert await store.llm_cache_get("acme", live) == reply("live")


async def test_prune_deletes_in_batches_until_none_is_left(store: PostgresStore) -> None:
    await execute(
        store,
        "INSERT INTO llm_cache (tenant_id, key, reply, expires_at) "
        "SELECT 'acme', int4send(n), '{}'::jsonb, now() - interval '1 second' "
        "FROM generate_series(1, 25) AS n",
    )
    async with store.transaction() as conn:
        assert await llm_cache.prune(conn, batch=10) == 25
    assert await fetchval(store, "SELECT count(*) FROM llm_cache") == 0


async def test_only_stop_and_length_replies_are_stored(store: PostgresStore) -> None:
    cache = ResponseCache(store)
    for reason in ("stop", "length", "content_filter"):
        key = cache_key(reason)
        await cache.put("acme", key, ChatResult("t", reason, 1, 1, "openai", "m", 0.1, 0.1))
        got = await cache.get("acme", key)
        assert (got is not None) == (reason != "content_filter")


async def test_a_malformed_row_is_a_miss(store: PostgresStore) -> None:
    key = cache_key()
    await store.llm_cache_put("acme", key, {"text": 3}, 60)
    with structlog.testing.capture_logs() as logs:
        assert await ResponseCache(store).get("acme", key) is None
    assert [e["event"] for e in logs] == ["llm_cache_reply_malformed"]


async def test_a_closed_store_is_a_miss_and_a_skipped_put(database_dsn: str) -> None:
    closed = await PostgresStore.open(database_dsn, max_size=1)
    await closed.close()
    cache = ResponseCache(closed)
    key = cache_key()

    with structlog.testing.capture_logs() as logs:
        assert await cache.get("acme", key) is None
        await cache.put("acme", key, RESULT)

    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("llm_cache_get_failed", "warning"),
        ("llm_cache_put_failed", "warning"),
    ]


async def test_a_missing_table_is_a_miss(store: PostgresStore) -> None:
    """A worker that runs before migration 0008 is applied calls the providers as before."""
    await execute(store, "DROP TABLE llm_cache")
    cache = ResponseCache(store)
    with structlog.testing.capture_logs() as logs:
        assert await cache.get("acme", cache_key()) is None
        await cache.put("acme", cache_key(), RESULT)
    assert [e["event"] for e in logs] == ["llm_cache_get_failed", "llm_cache_put_failed"]
    assert "conveyor migrate" in logs[0]["error"]
