"""The counters behind rpm and tpm: token buckets, in this process or leased from Redis.

A limit of N per window (a minute; `RECOVEA_LIMIT_WINDOW_S`) is a bucket that holds
at most N and refills continuously at N per window. A request takes 1 (requests) or
its token estimate (tokens) when the bucket holds that much, else it is refused, and
the time until the bucket holds enough again is exact: that is the `retry-after` the
caller gets, and `x-ratelimit-reset-*` is the time until the bucket is full. A
bucket rather than a fixed window: no cliff at the minute's edge, and a truthful
wait from any moment. In any window a bucket admits at most 2N (a full bucket at
its start, then N of refill); a steady caller gets N per window.

| class          | where the bucket is   | a request costs                                 |
| `LocalBucket`  | this process          | arithmetic (the bound multiplies with processes) |
| `LeasedBucket` | Redis, shared by all  | arithmetic, from a lease held in memory; a Redis |
|                | replicas              | round trip only to take a new lease             |

A lease is a slice of the shared bucket (`share` of N, at least what the request
needs) that one process takes atomically and admits from in memory for `lease_s`;
then what it has not used goes back (on its next lease, or by the sweep). Everything
admitted was taken from the shared bucket first, so replicas together never admit
more than one bucket would: leases cost fairness (a slice idle in one process is
unavailable to the others for at most `lease_s`), not the bound. Token true-ups go
to the held slice (negative when usage passed the estimate: a debt the next lease
pays).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol

#: `try_take` outcomes
TAKEN = 0
REFUSED = 1
#: a leased bucket must ask Redis (`LeasedBucket.lease`)
ASK = 2


class Bucket(Protocol):
    limit: int

    def try_take(self, n: float, now: float) -> int: ...

    def give(self, n: float) -> None: ...

    def wait_s(self, n: float, now: float) -> float: ...

    def remaining(self, now: float) -> int: ...

    def reset_s(self, now: float) -> float: ...


class LocalBucket:
    """A token bucket in this process's memory (no Redis)."""

    __slots__ = ("_level", "_rate", "_stamp", "limit")

    def __init__(self, limit: int, window_s: float, now: float) -> None:
        self.limit = limit
        self._rate = limit / window_s
        self._level = float(limit)
        self._stamp = now

    def _refill(self, now: float) -> float:
        level = self._level + (now - self._stamp) * self._rate
        if level > self.limit:
            level = self.limit
        self._level = level
        self._stamp = now
        return level

    def try_take(self, n: float, now: float) -> int:
        # _refill, inlined: this runs on every request under the limit
        level = self._level + (now - self._stamp) * self._rate
        if level > self.limit:
            level = self.limit
        self._stamp = now
        if level >= n:
            self._level = level - n
            return TAKEN
        self._level = level
        return REFUSED

    def give(self, n: float) -> None:
        """Give back `n` (negative: take more, which may leave a debt)."""
        level = self._level + n
        self._level = level if level < self.limit else self.limit

    def wait_s(self, n: float, now: float) -> float:
        return max(0.0, (n - self._refill(now)) / self._rate)

    def remaining(self, now: float) -> int:
        return max(0, math.floor(self._refill(now)))

    def reset_s(self, now: float) -> float:
        return max(0.0, (self.limit - self._refill(now)) / self._rate)


class LeaseUnavailable(Exception):
    """Redis could not grant a lease (the reason is a bounded label)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LeaseClient(Protocol):
    async def lease(
        self, key: bytes, limit: int, window_s: float, want: float, need: float, back: float
    ) -> tuple[float, float]:
        """Return `back` to the shared bucket, then take between `need` and `want`, or
        nothing when it holds less than `need`; (granted, level left)."""
        ...


class LeasedBucket:
    """This process's lease on a bucket in Redis that every replica shares."""

    __slots__ = (
        "_client",
        "_held",
        "_key",
        "_lease_s",
        "_level",
        "_lock",
        "_rate",
        "_refused_until",
        "_slice",
        "_until",
        "_window",
        "limit",
    )

    def __init__(
        self,
        key: bytes,
        limit: int,
        window_s: float,
        client: LeaseClient,
        *,
        lease_s: float,
        share: float,
    ) -> None:
        self.limit = limit
        self._key = key
        self._window = window_s
        self._rate = limit / window_s
        self._slice = max(1, math.ceil(limit * share))
        self._lease_s = lease_s
        self._client = client
        #: what this process holds of the shared bucket (negative: a debt)
        self._held = 0.0
        #: monotonic time the lease runs out (what is held is then returned unused)
        self._until = 0.0
        #: after a refusal, monotonic time until which Redis is not asked again
        self._refused_until = 0.0
        #: the shared bucket's level at the last answer from Redis
        self._level = float(limit)
        self._lock: asyncio.Lock | None = None

    def try_take(self, n: float, now: float) -> int:
        if now < self._until and self._held >= n:
            self._held -= n
            return TAKEN
        if now < self._refused_until:
            return REFUSED
        return ASK

    async def lease(self, n: float) -> int:
        """Take a new lease (returning the old one's rest) and `n` from it: TAKEN or
        REFUSED; LeaseUnavailable when Redis cannot answer."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = time.monotonic()
            # another request may have taken a lease while this one waited for the lock
            outcome = self.try_take(n, now)
            if outcome != ASK:
                return outcome
            # On LeaseUnavailable what was held is gone with the lease: it costs the
            # others a little room until the bucket refills (a debt is forgiven).
            back, self._held, self._until = self._held, 0.0, 0.0
            granted, level = await self._client.lease(
                self._key, self.limit, self._window, max(n, self._slice), n, back
            )
            now = time.monotonic()
            self._level = level
            if granted >= n:
                self._held = granted - n
                self._until = now + self._lease_s
                return TAKEN
            self._refused_until = now + (n - level) / self._rate
            return REFUSED

    async def give_back(self) -> None:
        """Return an expired lease's rest (or pay its debt) now: the sweep's work."""
        if self._held == 0 or time.monotonic() < self._until:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._held == 0 or time.monotonic() < self._until:
                return
            back, self._held = self._held, 0.0
            _, self._level = await self._client.lease(
                self._key, self.limit, self._window, 0, 0, back
            )

    def give(self, n: float) -> None:
        self._held += n

    def wait_s(self, n: float, now: float) -> float:
        return max(0.0, self._refused_until - now, (n - self._level) / self._rate)

    def remaining(self, now: float) -> int:
        return max(0, math.floor(self._level))

    def reset_s(self, now: float) -> float:
        return max(0.0, (self.limit - self._level) / self._rate)
