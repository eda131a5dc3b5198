"""The exact cache's shared store: entries in Redis (`RECOVEA_REDIS_URL`), so that
every replica answers from one cache.

An entry lives under `recovea:cache:v1:<hex SHA-256 of the key>` as
`CacheEntry.to_bytes()`, set with `SET … EX <ttl>`: Redis forgets it at its TTL.
Redis is fail-open:

| what happens | the request | reason counted |
| --- | --- | --- |
| a lookup outlasts the budget (`RECOVEA_CACHE_BUDGET_MS`) | lever `error`, upstream | `timeout` |
| Redis refuses or drops the connection | lever `error`, upstream | `unreachable` |
| Redis answers with an error | lever `error`, upstream | `error` |
| Redis is held down (below) | lever `error` at once, upstream | `down` |
| a stored value is not an entry | a miss (its answer is stored over it) | `corrupt` |
| a write fails, times out, or meets Redis held down | none: writes are off its path | as above |
| the pending writes are full | none: the write is skipped | `backlog` |

(counted in `gateway_fail_open_total{layer="cache",reason}`; a lever `error` is the
lookup raising `CacheUnavailable`, which the chain also counts under `layer="lever"`).

After a timeout or a lost connection the store holds Redis down for `hold_s`
(1 s): lookups fail at once instead of each waiting out the budget, and writes are
skipped. The first operation after the hold tries Redis again (redis-py opens a new
connection), so a Redis that comes back is used again without a restart.

The store bounds its own wait (a timer around the Redis round trip only), so its
`budget_s` is None: the chain puts no timer of its own around the lever, and an
answer from the memory tier in front of it (`cache_tiers.TieredStore`) costs none.

Writes never wait on a request: `save` puts the entry in a bounded queue that one
writer task, owned by the store, drains in pipelined batches. `close` gives that
task a bounded time to write what is queued, then cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from recovea_proxy.levers.cache_key import digest
from recovea_proxy.levers.cache_store import CacheEntry
from recovea_proxy.observability.metrics import GatewayMetrics

_log = structlog.get_logger("recovea.cache")

KEY_PREFIX = b"recovea:cache:v1:"
#: every reason the store counts a fault under (bounded label values)
REASONS = ("timeout", "unreachable", "error", "down", "corrupt", "backlog")
#: faults after which Redis is held down for a while (it is gone or too slow)
_HOLDING = frozenset({"timeout", "unreachable"})
#: entries written per round trip at most
_BATCH_MAX = 64

FaultCounter = Callable[[str], None]


class CacheUnavailable(Exception):
    """Redis could not be asked within the budget: the cache lever's fault."""


def redis_key(key: bytes) -> bytes:
    """The Redis key an entry key is stored under: its SHA-256 in hex (a key kept as
    its material is hashed here, so Redis never holds a prompt in a key's name)."""
    return KEY_PREFIX + digest(key).hex().encode()


def fault_counter(metrics: GatewayMetrics) -> FaultCounter:
    """Counts a store fault in `gateway_fail_open_total{layer="cache",reason}`; every
    reason is exported (at 0) from the start."""
    children = {reason: metrics.fail_open.labels("cache", reason) for reason in REASONS}

    def count(reason: str) -> None:
        children[reason].inc()

    return count


class RedisStore:
    """Entries in Redis, shared by every replica; fail-open (see the module's table)."""

    #: it bounds its own wait: the chain needs no timer for it
    budget_s: float | None = None

    def __init__(
        self,
        url: str,
        *,
        budget_s: float,
        count: FaultCounter,
        pending_max: int = 1024,
        write_timeout_s: float = 1.0,
        hold_s: float = 1.0,
        connections_max: int = 64,
    ) -> None:
        self._budget = budget_s
        self._count = count
        self._write_timeout = write_timeout_s
        self._hold = hold_s
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=connections_max,
            timeout=write_timeout_s,
            socket_connect_timeout=write_timeout_s,
            socket_timeout=write_timeout_s,
            # No retries and no backoff: a fault is a miss now, not a wait.
            retry=Retry(NoBackoff(), 0),
        )
        self._client: Redis = Redis.from_pool(pool)
        self._pending: asyncio.Queue[tuple[bytes, CacheEntry, int]] = asyncio.Queue(pending_max)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        #: monotonic time until which Redis is held down (0: it is up)
        self._down_until = 0.0

    def start(self) -> None:
        """Start the writer task (in the lifespan, on the running loop)."""
        self._writer = asyncio.create_task(self._write_forever(), name="recovea-cache-writer")

    async def close(self, timeout_s: float = 2.0) -> None:
        """Write what is pending within `timeout_s`, stop the writer, close the
        connections."""
        self._closed = True
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pending.join(), timeout_s)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._client.aclose(), timeout_s)

    async def lookup(self, key: bytes) -> CacheEntry | None:
        found = await self.fetch(key)
        return found[0] if found is not None else None

    async def fetch(self, key: bytes) -> tuple[CacheEntry, float] | None:
        """The entry under `key` and the seconds it has left, or None; raises
        `CacheUnavailable` when Redis cannot answer within the budget."""
        if self._down_until and time.monotonic() < self._down_until:
            self._count("down")
            raise CacheUnavailable("down")
        name = redis_key(key)
        try:
            async with asyncio.timeout(self._budget):
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.get(name)
                    pipe.pttl(name)
                    data, ttl_ms = await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            reason = self._fault(exc)
            raise CacheUnavailable(reason) from None
        self._up()
        if data is None:
            return None
        try:
            entry = CacheEntry.from_bytes(data)
        except ValueError:
            self._count("corrupt")
            return None
        return entry, max(ttl_ms, 0) / 1000

    def save(self, key: bytes, entry: CacheEntry, ttl_s: int) -> None:
        if self._closed or ttl_s <= 0:
            return
        try:
            # serialized by the writer, off the request's path
            self._pending.put_nowait((key, entry, ttl_s))
        except asyncio.QueueFull:
            self._count("backlog")

    async def _write_forever(self) -> None:
        pending = self._pending
        while True:
            batch = [await pending.get()]
            while len(batch) < _BATCH_MAX and not pending.empty():
                batch.append(pending.get_nowait())
            try:
                await self._write(batch)
            except Exception:  # the writer outlives any one batch: count it, go on
                self._count("error")
                _log.exception("cache_redis_write_failed")
            finally:
                for _ in batch:
                    pending.task_done()

    async def _write(self, batch: list[tuple[bytes, CacheEntry, int]]) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            self._count("down")
            return
        try:
            async with asyncio.timeout(self._write_timeout):
                async with self._client.pipeline(transaction=False) as pipe:
                    for key, entry, ttl_s in batch:
                        pipe.set(redis_key(key), entry.to_bytes(), ex=ttl_s)
                    await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            self._fault(exc)
            return
        self._up()

    def _fault(self, exc: BaseException) -> str:
        """Count a fault; hold Redis down after a timeout or a lost connection."""
        reason = _reason(exc)
        self._count(reason)
        if reason in _HOLDING:
            if not self._down_until:
                _log.warning("cache_redis_unavailable", reason=reason, hold_s=self._hold)
            self._down_until = time.monotonic() + self._hold
        return reason

    def _up(self) -> None:
        if self._down_until:
            self._down_until = 0.0
            _log.info("cache_redis_back")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError | OSError):
        return "unreachable"
    return "error"
