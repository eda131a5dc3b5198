"""Leases on the shared rate-limit buckets in Redis (`RECOVEA_REDIS_URL`).

A bucket lives under `recovea:ratelimit:v1:<limit id>:<r|t>` as a hash {`l`: level,
`t`: Redis's clock in ms at that level}, expiring two windows after its last use (an
absent bucket is full). One Lua script refills it, takes back what a process
returns, and grants a slice, atomically; the clock is Redis's own (`TIME`), so the
replicas' clocks do not matter.

Faults (each raises `LeaseUnavailable(reason)`; the limit's failure mode decides):

| what happens                                  | reason        |
| no answer within `RECOVEA_LIMIT_REDIS_TIMEOUT_MS` | `timeout`   |
| Redis refuses or drops the connection         | `unreachable` |
| Redis answers with an error                   | `error`       |
| Redis is held down (below)                    | `down`        |

After a timeout or a lost connection Redis is held down for `hold_s` (1 s): leases
fail at once instead of each waiting out the timeout; the first lease after the
hold tries again, so a Redis that comes back is used without a restart.
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

from recovea_proxy.guards.limit_buckets import LeaseUnavailable

_log = structlog.get_logger("recovea.limits")

KEY_PREFIX = b"recovea:ratelimit:v1:"
REASONS = ("timeout", "unreachable", "error", "down")
_HOLDING = frozenset({"timeout", "unreachable"})

# KEYS[1] the bucket; ARGV: limit, window ms, want, need, back. Returns {granted, level}
# (the level as a string: Lua numbers become integers on the way out).
_LEASE = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local back = tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local state = redis.call('HMGET', KEYS[1], 'l', 't')
local level = tonumber(state[1])
local stamp = tonumber(state[2])
if level == nil or stamp == nil then
  level = limit
  stamp = now
end
if now > stamp then
  level = level + (now - stamp) * limit / window
end
level = level + back
if level > limit then level = limit end
local granted = 0
if need > 0 and level >= need then
  granted = math.min(want, math.floor(level))
  if granted < need then granted = need end
  level = level - granted
end
redis.call('HSET', KEYS[1], 'l', tostring(level), 't', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2))
return {granted, tostring(level)}
"""

#: counts one lease exchange by outcome (granted, refused, returned)
LeaseCounter = Callable[[str], None]


def bucket_key(limit_id: str, kind: str) -> bytes:
    """The Redis key of a limit's requests (`r`) or tokens (`t`) bucket."""
    return KEY_PREFIX + f"{limit_id}:{kind[0]}".encode()


class RedisLeases:
    """Takes and returns slices of the shared buckets; fail-fast while Redis is down."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        count: LeaseCounter,
        hold_s: float = 1.0,
        connections_max: int = 32,
    ) -> None:
        self._timeout = timeout_s
        self._count = count
        self._hold = hold_s
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=connections_max,
            timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            socket_timeout=max(timeout_s, 1.0),
            retry=Retry(NoBackoff(), 0),
        )
        self._client: Redis = Redis.from_pool(pool)
        self._script = self._client.register_script(_LEASE)
        #: monotonic time until which Redis is held down (0: it is up)
        self._down_until = 0.0

    async def close(self, timeout_s: float = 2.0) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._client.aclose(), timeout_s)

    async def lease(
        self, key: bytes, limit: int, window_s: float, want: float, need: float, back: float
    ) -> tuple[float, float]:
        want, need, back = float(want), float(need), float(back)
        if self._down_until and time.monotonic() < self._down_until:
            raise LeaseUnavailable("down")
        try:
            async with asyncio.timeout(self._timeout):
                granted, level = await self._script(
                    keys=[key],
                    args=[
                        limit,
                        window_s * 1000,
                        repr(float(want)),
                        repr(float(need)),
                        repr(float(back)),
                    ],
                )
        except (TimeoutError, RedisError, OSError) as exc:
            raise LeaseUnavailable(self._fault(exc)) from None
        if self._down_until:
            self._down_until = 0.0
            _log.info("ratelimit_redis_back")
        granted = float(granted)
        if need > 0:
            self._count("granted" if granted >= need else "refused")
        else:
            self._count("returned")
        return granted, float(level)

    def _fault(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError | RedisTimeoutError):
            reason = "timeout"
        elif isinstance(exc, RedisConnectionError | OSError):
            reason = "unreachable"
        else:
            reason = "error"
        if reason in _HOLDING:
            if not self._down_until:
                _log.warning("ratelimit_redis_unavailable", reason=reason, hold_s=self._hold)
            self._down_until = time.monotonic() + self._hold
        return reason
