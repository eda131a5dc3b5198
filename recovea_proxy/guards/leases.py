"""A gateway process's budget leases: the slices of each cap it may spend without
asking the database.

Where the spend state lives, and why it holds across replicas:

- `spend_cap_state` (per cap and period) keeps `spent` — the settled, priced cost of
  the cap's requests (`pricing.cost` on each request's reported usage, the same
  function and prices the rollup uses, folded in by the processes that served them)
  — and `leased`, what processes have carved out and not yet folded. Every carve is
  one atomic conditional UPDATE (`leased = leased + slice WHERE spent + leased +
  slice <= usd`, in `recovea.spend_cap_lease`), so spent + leased never passes the
  cap, however many replicas carve at once.
- A process reserves each request's estimate from its lease in memory (no round
  trip) and never reserves more than the lease holds. Hence what all replicas have
  in flight or settled is within the cap at the estimated price, whatever their
  number: the only overshoot is a request whose real cost exceeds its estimate.
- Every `sync_interval_s` (off the hot path) each lease that needs it is synced in
  one round trip: the spend settled since the last sync moves from the lease to
  `spent`, what is in flight is recorded (`held`), the lease is topped up to one
  slice (a `fraction` of the cap) while it is in use or given back entirely when
  idle, and its expiry moves `ttl_s` ahead. A busy lease needs it when its trust
  runs out within two rounds, a quarter of it is settled spend, or less than half
  a slice is left; an idle one always does. At shutdown every lease is given back.
- A request that finds no room in the lease, or a lease not confirmed for
  `staleness_s` (the "state too old to trust"), waits for one bounded sync (carving
  at least what it needs) — `check_timeout_s` at most, then 402
  `budget_unverifiable`. Concurrent requests share one sync per lease.
- A process that dies leaves its lease to expire: the next carve of that cap (or
  maintenance) reclaims it, counting what it had in flight at its last sync as
  spent and freeing the rest. What such a process settled after its last sync is
  lost to the cap (at most one sync interval of its spend); what its in-flight
  requests had reserved counts in full. A lease is trusted locally for less than
  its expiry (`min(staleness, 0.9 x ttl)` from the sync that renewed it), so a
  process cut off from the database stops spending from it before anyone else can
  reclaim it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import structlog

from recovea_proxy.guards.caps_config import Cap, to_nano, to_usd
from recovea_proxy.guards.caps_metrics import CapMetrics

_LEASE = (
    "SELECT amount, carved, usd, spent, leased FROM recovea.spend_cap_lease("
    "$1, $2::uuid, $3, $4, $5, $6, $7, $8, $9)"
)
_log = structlog.get_logger("recovea.caps")


class CapStateUnknown(Exception):
    """The cap's state could not be confirmed within the bounded check."""


class Lease:
    """This process's slice of one cap in one period (nano-USD). `amount` is what the
    database holds for it, plus what was settled since the last sync (`consumed`,
    not folded yet); `reserved` is in flight."""

    __slots__ = (
        "amount",
        "cap",
        "consumed",
        "ends",
        "key",
        "period_start",
        "reserved",
        "syncing",
        "trusted_until",
        "used",
    )

    def __init__(self, cap: Cap, period_start: datetime) -> None:
        self.cap = cap
        self.period_start = period_start
        self.key = (cap.id, period_start)
        #: monotonic time at which the period ends (the lease is then no longer current)
        self.ends = 0.0
        self.amount = 0
        self.reserved = 0
        self.consumed = 0
        self.trusted_until = 0.0
        self.used = False
        self.syncing: asyncio.Task[bool] | None = None

    def room(self) -> int:
        return self.amount - self.reserved - self.consumed

    def take(self, amount: int, now: float) -> bool:
        """Reserve `amount` if the lease is trusted and has room."""
        if now < self.trusted_until and self.amount - self.reserved - self.consumed >= amount:
            self.reserved += amount
            self.used = True
            return True
        return False

    def settle(self, reserved: int, actual: int) -> None:
        """A request that reserved `reserved` cost `actual`."""
        self.reserved -= reserved
        self.consumed += actual


class Periods:
    """The start of the current UTC day and month, recomputed when one ends."""

    def __init__(self) -> None:
        self._day: tuple[float, datetime] = (0.0, datetime.min.replace(tzinfo=UTC))
        self._month: tuple[float, datetime] = (0.0, datetime.min.replace(tzinfo=UTC))

    def end(self, period: str) -> float:
        """The epoch time the current `period` ends (after `start` was asked)."""
        return self._day[0] if period == "day" else self._month[0]

    def start(self, period: str, now: float) -> datetime:
        ends, start = self._day if period == "day" else self._month
        if now < ends:
            return start
        today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "day":
            self._day = (today.timestamp() + 86400, today)
            return today
        first = today.replace(day=1)
        following = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
        self._month = (following.timestamp(), first)
        return first


class LeaseBook:
    """Every lease of this process, and the schedule that keeps them synced."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: CapMetrics,
        *,
        ttl_s: float,
        staleness_s: float,
        sync_interval_s: float,
        check_timeout_s: float,
        fraction: float,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._ttl = ttl_s
        self._trust_s = min(staleness_s, 0.9 * ttl_s)
        self._interval = sync_interval_s
        self._check_timeout = check_timeout_s
        self._fraction = fraction
        self.holder = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leases: dict[tuple[uuid.UUID, datetime], Lease] = {}
        #: the current period's lease of each cap (by cap id), for the hot path
        self._current: dict[int, Lease] = {}
        #: by cap id: (spent + leased) / usd as its last sync read it, and that lease;
        #: kept after the lease is given back, read (and pruned) by `fullest`
        self._fill: dict[uuid.UUID, tuple[float, Lease]] = {}
        self._tasks: set[asyncio.Task[bool]] = set()
        self._schedule: asyncio.Task[None] | None = None
        self.periods = Periods()

    def current(self, cap: Cap, now: float) -> Lease | None:
        """The hot path's lookup: the lease of `cap` in the current period when it is
        known for this very cap object (None: ask `lease`)."""
        lease = self._current.get(cap.id.int)
        if lease is None or lease.cap is not cap or now >= lease.ends:
            return None
        return lease

    def lease(self, cap: Cap, now_epoch: float) -> Lease:
        """This process's lease of `cap` in the current period (empty when new)."""
        start = self.periods.start(cap.period, now_epoch)
        lease = self._leases.get((cap.id, start))
        if lease is None:
            lease = self._leases[(cap.id, start)] = Lease(cap, start)
        elif lease.cap is not cap:
            lease.cap = cap  # the cap was reloaded (its amount may have changed)
        ends_epoch = self.periods.end(cap.period)
        lease.ends = time.monotonic() + (ends_epoch - now_epoch)
        self._current[cap.id.int] = lease
        return lease

    async def fill_and_take(self, lease: Lease, amount: int) -> bool:
        """The slow path: sync the lease (carving at least what `amount` needs) within
        the check timeout, then reserve. False when the cap has no room for it;
        CapStateUnknown when the state could not be confirmed in time."""
        deadline = time.monotonic() + self._check_timeout
        for _ in range(3):
            running = lease.syncing
            if running is None or running.done():
                need = max(amount - max(lease.room(), 0), 0)
                running = self._start_sync(lease, need, self._active_want(lease, need))
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left):
                    carved = await asyncio.shield(running)
            except (TimeoutError, CapStateUnknown):
                raise CapStateUnknown from None
            if lease.take(amount, time.monotonic()):
                return True
            if not carved:
                return False
        return False

    def _active_want(self, lease: Lease, need: int) -> int:
        """A lease in use is topped up to one slice beyond what is in flight."""
        held = lease.amount - lease.consumed
        slice_ = max(int(lease.cap.limit * self._fraction), 1)
        return max(held + need, lease.reserved + slice_, held)

    def _due(self, lease: Lease) -> bool:
        """Whether a busy lease needs its sync this round: its trust runs out within two
        rounds, a quarter of it is settled spend not yet folded, or less than half a
        slice is left. Otherwise the round skips it (no round trip)."""
        if lease.trusted_until - time.monotonic() < 2 * self._interval:
            return True
        if lease.consumed * 4 >= lease.amount:
            return True
        return lease.room() * 2 < max(int(lease.cap.limit * self._fraction), 1)

    def _start_sync(self, lease: Lease, need: int, want: int) -> asyncio.Task[bool]:
        task = asyncio.get_running_loop().create_task(self._sync(lease, need, want))
        lease.syncing = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _sync(self, lease: Lease, need: int, want: int) -> bool:
        """One round trip for `lease`: fold, record what is in flight, resize to `want`
        (carving at least `need`), renew. Whether `need` was carved."""
        consumed, held = lease.consumed, lease.reserved
        unfolded = lease.amount - consumed
        give_back = max(unfolded - max(want, held), 0) if need == 0 else 0
        # What is being given back leaves the lease now, so nothing reserves it meanwhile.
        lease.amount -= give_back
        sent = time.monotonic()
        try:
            async with asyncio.timeout(max(self._check_timeout, 1.0) * 4):
                async with self._pool.acquire(timeout=self._check_timeout * 4) as conn:
                    row = await conn.fetchrow(
                        _LEASE,
                        lease.cap.id,
                        lease.cap.workspace_id,
                        lease.period_start,
                        self.holder,
                        to_usd(consumed),
                        to_usd(held),
                        to_usd(need),
                        to_usd(max(want, held)),
                        self._ttl,
                    )
        except Exception as exc:
            lease.amount += give_back
            self._metrics.lease("sync_failed")
            _log.warning("cap_lease_sync_failed", error=type(exc).__name__)
            raise CapStateUnknown from exc
        lease.consumed -= consumed
        if row is None:  # the cap is gone: what is in flight settles into nothing
            lease.amount = lease.consumed
            lease.trusted_until = 0.0
            self._fill.pop(lease.cap.id, None)
            return False
        self._filled(lease, row["usd"], row["spent"] + row["leased"])
        before = unfolded - give_back
        now_amount = to_nano(row["amount"])
        lease.amount = now_amount + lease.consumed
        lease.trusted_until = sent + self._trust_s
        if now_amount > before:
            self._metrics.lease("carved")
        elif now_amount < before or give_back:
            self._metrics.lease("returned")
        return bool(row["carved"])

    def _filled(self, lease: Lease, usd: Decimal, used: Decimal) -> None:
        """Keep how full the lease's cap is (the current period's, if a sync of the
        previous one comes late); a cap of 0 (or disabled: the sync reads 0) is none."""
        cap_id = lease.cap.id
        if usd <= 0:
            self._fill.pop(cap_id, None)
            return
        known = self._fill.get(cap_id)
        if known is None or known[1].period_start <= lease.period_start:
            self._fill[cap_id] = (float(used / usd), lease)

    def fullest(self, enabled: Callable[[Cap], bool]) -> float:
        """The highest fill of the `enabled` caps in their current period (0: none);
        forgets the others, so what it keeps is bounded by the enabled caps."""
        now = time.monotonic()
        highest = 0.0
        for cap_id, (ratio, lease) in list(self._fill.items()):
            if now >= lease.ends or not enabled(lease.cap):
                del self._fill[cap_id]
            elif ratio > highest:
                highest = ratio
        return highest

    def start(self) -> None:
        self._schedule = asyncio.get_running_loop().create_task(self._run(), name="cap-leases")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.sync_all()

    async def sync_all(self, *, closing: bool = False) -> None:
        """Sync every lease once: fold, renew, top up the busy, return the idle (all of
        them when closing); drop the leases left empty."""
        for key, lease in list(self._leases.items()):
            if lease.syncing is not None and not lease.syncing.done():
                continue
            busy = lease.used and not closing
            if busy and not self._due(lease):
                continue
            want = self._active_want(lease, 0) if busy else lease.reserved
            lease.used = False
            task = self._start_sync(lease, 0, want)
            with contextlib.suppress(CapStateUnknown):
                await task
            if not busy and lease.amount == 0 and lease.reserved == 0 and lease.consumed == 0:
                self._leases.pop(key, None)
                if self._current.get(lease.cap.id.int) is lease:
                    del self._current[lease.cap.id.int]

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop the schedule and give every lease back (bounded)."""
        if self._schedule is not None:
            self._schedule.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._schedule
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.sync_all(closing=True)
        for task in list(self._tasks):
            task.cancel()
