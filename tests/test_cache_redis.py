"""The exact cache's Redis store on its own and behind this process's memory: what one
store saves another finds until its TTL; a stopped, corrupt or silent Redis is a
counted fault, never the caller's error; the memory tier keeps answering what it
holds; a Redis that comes back is used again without a restart.

Against a real `redis-server` that the tests start (`redis_server`, `silent`: in
tests/conftest.py). Two gateways sharing one Redis: test_cache_redis_replicas.py."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from recovea_proxy.levers.cache_redis import CacheUnavailable, RedisStore, redis_key
from recovea_proxy.levers.cache_store import CacheEntry, MemoryStore
from recovea_proxy.levers.cache_tiers import TieredStore
from tests.redis_support import RedisServer, SilentServer

T = TypeVar("T")

ENTRY = CacheEntry.of(
    200,
    ((b"content-type", b"text/event-stream"),),
    (b'data: {"choices":[]}\n\n', b"data: [DONE]\n\n"),
    time.time(),
)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may kill and start again."""
    server = RedisServer()
    yield server
    server.kill()


def new_key() -> bytes:
    return os.urandom(32)


# The store on its own -------------------------------------------------------------


async def test_what_one_store_saves_another_finds_until_its_ttl(
    redis_server: RedisServer,
) -> None:
    """A saved entry is written off the caller's path under recovea:cache:v1:<hex key>
    with Redis's own expiry at its TTL; another store (another replica) reads the
    same entry back, with the seconds it has left."""
    key = new_key()
    faults: list[str] = []
    writer = RedisStore(redis_server.url, budget_s=1, count=faults.append)
    writer.start()
    writer.save(key, ENTRY, 60)
    await writer.close()  # writes what is pending
    reader = RedisStore(redis_server.url, budget_s=1, count=faults.append)
    try:
        found = await reader.fetch(key)
    finally:
        await reader.close()
    assert found is not None
    entry, left_s = found
    assert entry == ENTRY
    assert 50 < left_s <= 60
    with redis_server.client() as client:
        assert redis_key(key) == b"recovea:cache:v1:" + key.hex().encode()
        assert 50 < client.ttl(redis_key(key)) <= 60
    assert faults == []


async def test_a_value_that_is_not_an_entry_is_a_counted_miss(
    redis_server: RedisServer,
) -> None:
    """Bytes under an entry's key that do not parse are a miss, counted `corrupt`."""
    key = new_key()
    with redis_server.client() as client:
        client.set(redis_key(key), b"RCV1 but not really", ex=60)
    faults: list[str] = []
    store = RedisStore(redis_server.url, budget_s=1, count=faults.append)
    try:
        assert await store.lookup(key) is None
    finally:
        await store.close()
    assert faults == ["corrupt"]


async def test_pending_writes_are_bounded(redis_server: RedisServer) -> None:
    """Past `pending_max` queued writes, a save is skipped and counted `backlog`; the
    queued ones are written."""
    keys = [new_key() for _ in range(5)]
    faults: list[str] = []
    store = RedisStore(redis_server.url, budget_s=1, count=faults.append, pending_max=2)
    for key in keys:  # nothing drains yet: the writer is not started
        store.save(key, ENTRY, 60)
    assert faults == ["backlog"] * 3
    store.start()
    await store.close()
    with redis_server.client() as client:
        assert [client.exists(redis_key(key)) for key in keys] == [1, 1, 0, 0, 0]


async def test_a_stopped_redis_is_a_counted_fault_and_is_used_again_when_back(
    own_redis: RedisServer,
) -> None:
    """Redis killed: a lookup raises `CacheUnavailable` (counted `unreachable`), then
    fails at once while Redis is held down (`down`). Redis started again: the same
    store reads from it again."""
    key = new_key()
    with own_redis.client() as client:
        client.set(redis_key(key), ENTRY.to_bytes(), ex=60)
    faults: list[str] = []
    store = RedisStore(own_redis.url, budget_s=1, count=faults.append, hold_s=0.5)
    try:
        assert await store.lookup(key) == ENTRY
        own_redis.kill()
        with pytest.raises(CacheUnavailable):
            await store.lookup(key)
        with pytest.raises(CacheUnavailable):
            await store.lookup(key)
        assert faults == ["unreachable", "down"]
        own_redis.start()
        with own_redis.client() as client:
            client.set(redis_key(key), ENTRY.to_bytes(), ex=60)
        assert await eventually(lambda: store.lookup(key)) == ENTRY
    finally:
        await store.close()


async def test_a_silent_redis_costs_one_budget_then_is_held_down(
    silent: SilentServer,
) -> None:
    """A Redis that takes the connection and never answers: the lookup gives up at its
    budget (`timeout`); while Redis is held down the next one fails at once (`down`),
    and a save is not even tried."""
    faults: list[str] = []
    store = RedisStore(silent.url, budget_s=0.1, count=faults.append, hold_s=30)
    store.start()
    try:
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):
            await store.lookup(new_key())
        first_s = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):
            await store.lookup(new_key())
        second_s = time.monotonic() - started
        store.save(new_key(), ENTRY, 60)
    finally:
        await store.close()
    assert 0.1 <= first_s < 1.0
    assert second_s < 0.05
    assert faults == ["timeout", "down", "down"]


async def test_the_memory_tier_answers_what_it_holds_without_asking_redis(
    silent: SilentServer,
) -> None:
    """In front of a silent Redis, what this process saved is still a hit (no fault);
    a key memory does not hold needs Redis and raises `CacheUnavailable`."""
    faults: list[str] = []
    shared = RedisStore(silent.url, budget_s=0.1, count=faults.append)
    tiers = TieredStore(MemoryStore(1 << 20), shared)
    key = new_key()
    try:
        tiers.save(key, ENTRY, 60)
        assert await tiers.lookup(key) == ENTRY
        assert faults == []
        with pytest.raises(CacheUnavailable):
            await tiers.lookup(new_key())
        assert faults == ["timeout"]
    finally:
        await shared.close()


async def test_an_entry_found_in_redis_is_kept_in_memory_too(
    redis_server: RedisServer,
) -> None:
    """A memory miss found in Redis is answered and kept in this process's memory."""
    key = new_key()
    with redis_server.client() as client:
        client.set(redis_key(key), ENTRY.to_bytes(), ex=60)
    faults: list[str] = []
    memory = MemoryStore(1 << 20)
    shared = RedisStore(redis_server.url, budget_s=1, count=faults.append)
    try:
        assert await TieredStore(memory, shared).lookup(key) == ENTRY
    finally:
        await shared.close()
    assert await memory.lookup(key) == ENTRY
    assert faults == []


async def eventually(call: Callable[[], Awaitable[T]], deadline_s: float = 10.0) -> T:
    """`call()`'s result once it stops raising `CacheUnavailable` (polled)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return await call()
        except CacheUnavailable:
            if time.monotonic() > end:
                raise
        await asyncio.sleep(0.02)
