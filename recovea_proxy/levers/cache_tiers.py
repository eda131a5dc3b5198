"""Which cache store a gateway opens, and the tiers of a shared one.

`RECOVEA_REDIS_URL` unset: the in-process `MemoryStore` alone. Set: a `TieredStore`,
this process's memory in front of Redis. A lookup asks memory first and Redis only
on a miss there; an entry found in Redis is kept in memory too, for the time Redis
still gives it. A save goes to both (memory at once, Redis off the request's path).

When Redis fails or is slow, a lookup that memory answers is still a hit; one that
needed Redis raises `CacheUnavailable` (the lever records `error`, the request goes
upstream, and, the lever having failed, its answer is not stored either — not even
in memory — until Redis answers again).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from recovea_proxy.config import Settings
from recovea_proxy.levers.cache_redis import RedisStore, fault_counter
from recovea_proxy.levers.cache_store import CacheEntry, CacheStore, MemoryStore
from recovea_proxy.observability.metrics import GatewayMetrics


class TieredStore:
    """This process's memory first, then the Redis that every replica shares."""

    #: memory never waits; Redis bounds its own wait
    budget_s: float | None = None
    shared = True

    def __init__(self, memory: MemoryStore, shared: RedisStore) -> None:
        self._memory = memory
        self._shared = shared

    def get(self, key: bytes) -> CacheEntry | None:
        return self._memory.get(key)

    def holds(self, key: bytes) -> bool:
        return self._memory.holds(key)

    async def lookup(self, key: bytes) -> CacheEntry | None:
        return self.get(key) or await self.lookup_shared(key)

    async def lookup_shared(self, key: bytes) -> CacheEntry | None:
        found = await self._shared.fetch(key)
        if found is None:
            return None
        entry, left_s = found
        if left_s >= 1:
            self._memory.save(key, entry, int(left_s))
        return entry

    def save(self, key: bytes, entry: CacheEntry, ttl_s: int) -> None:
        self._memory.save(key, entry, ttl_s)
        self._shared.save(key, entry, ttl_s)

    def keep(
        self,
        key: bytes,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        chunks: list[bytes],
        ttl_s: int,
    ) -> None:
        # packed once, for memory; Redis is given the entry with the size memory counted
        stored_at = time.time()
        size = self._memory.keep(key, status, headers, chunks, ttl_s, stored_at)
        entry = CacheEntry(status, tuple(headers), tuple(chunks), stored_at, size)
        self._shared.save(key, entry, ttl_s)


@asynccontextmanager
async def open_cache_store(
    settings: Settings, metrics: GatewayMetrics
) -> AsyncIterator[CacheStore]:
    """The store the settings ask for, open for the lifespan; a Redis store's pending
    writes are given a bounded time at the end."""
    memory = MemoryStore(int(settings.cache_max_mb * 1024 * 1024))
    metrics.cache.memory = memory  # its entries, bytes and evictions, read at scrape
    if settings.redis_url is None:
        yield memory
        return
    shared = RedisStore(
        settings.redis_url,
        budget_s=settings.cache_budget_ms / 1000,
        count=fault_counter(metrics),
    )
    shared.start()
    try:
        yield TieredStore(memory, shared)
    finally:
        await shared.close()
