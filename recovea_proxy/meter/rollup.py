"""The hourly rollup: prices the ledger into `usage_rollups`, one workspace's hour at
a time.

A (hour, workspace) pair is rolled up when the drainer has marked it
(`rollup_pending`, written in the same transaction as its events) or when asked for
explicitly (`recovea rollup --since`, which marks every pair with events in the
range). Rolling a pair up replaces that workspace's rows of that hour in one
transaction under its own statement timeout (`isolation`), so running it again gives
the same numbers, and a pair that fails or times out is reported, keeps its mark for
the next run, and holds back no other workspace.

Caller-chosen tags (`TAGS`) are bounded per workspace and hour: each keeps its
`max_tags` values with the most requests (ties by value, bytewise) and the rest are
grouped as `(other)`, so a tenant sending a new feature on every request grows its
hour by at most that many groups per tag. Counts and tokens are unchanged by the
grouping; an `(other)` model has no price.

Dollars: `baseline_cost` prices every request's tokens on the model the client asked
for, as if no lever had acted; `realized_cost` prices what was actually paid for —
requests answered from the cache, and singleflight followers that shared another's
upstream call, cost nothing — on the model that served them. Both
with `pricing.cost`, the one price function, under the same rules: cache reads and
writes by lifetime (from `pricing_facts`), the tier that served, the request's
long-context band. Prices are the shipped table under the workspace's overrides
(`pricing.overrides`).

`pricing.cost` is linear within one model, tier and band, so the SQL sums each
group's requests per (tier, band) bucket — the band being the largest long-context
threshold of the price table a request's input exceeds — and each bucket is priced
once; a group's costs are its buckets' sums. A bucket that has no price (the model,
the tier or the band unpriced, on either side) adds nothing to the costs and counts
its requests as `unpriced`; a group with no priced bucket has NULL costs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from recovea_proxy.meter.isolation import (
    Failure,
    connection_lost,
    maintenance_transaction,
)
from recovea_proxy.pricing.cost import Tokens, cost
from recovea_proxy.pricing.overrides import workspace_prices
from recovea_proxy.pricing.rates import Price
from recovea_proxy.pricing.table import PriceTable
from recovea_proxy.store.service import service_mode

#: what a rollup row is grouped by; `rcv_key_id` is the key the requests were made with
#: (NULL for passthrough), so usage can be read per key
DIMENSIONS = (
    "customer_id",
    "project_id",
    "team_id",
    "feature",
    "end_user_id",
    "route_id",
    "provider",
    "baseline_model",
    "realized_model",
    "rcv_key_id",
)
#: the dimensions whose values the caller chooses (headers, model names): bounded
TAGS = ("feature", "end_user_id", "baseline_model", "realized_model")
#: the value standing for a tag's less used values in a workspace's hour
OTHER = "(other)"
_EVENT_COLUMNS = (
    *DIMENSIONS,
    "status",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_hit",
    "dedup_singleflight",
    "fell_back_to_baseline",
)
_FACT_COLUMNS = ("cache_write_5m_tokens", "cache_write_1h_tokens", "service_tier")
#: what a bucket of like requests is priced on, beside its model: the tier that served
#: and the least input size of the request's long-context band (see `_BAND`)
BUCKET = ("service_tier", "band")
#: the token sums a bucket is priced on (with output): of every request (baseline) and,
#: as `paid_<name>`, of the requests that were paid for (realized: not answered by the
#: cache, not a follower of another's upstream call)
_PRICED = ("input_tokens", "cached_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens")
_PAID = "NOT cache_hit AND NOT dedup_singleflight"


def _top(tag: str) -> str:
    """The tag's `$4` values with the most requests in the hour (ties by value)."""
    return (
        f"top_{tag} AS (SELECT {tag} AS value FROM hour_events WHERE {tag} IS NOT NULL"
        f' GROUP BY {tag} ORDER BY count(*) DESC, {tag} COLLATE "C" LIMIT $4)'
    )


def _bounded(name: str) -> str:
    if name not in TAGS:
        return name
    return (
        f"CASE WHEN {name} IS NULL OR {name} IN (SELECT value FROM top_{name})"
        f" THEN {name} ELSE '{OTHER}' END AS {name}"
    )


# The band of a request: 0 below every long-context threshold of the price table ($5),
# else the largest threshold its input exceeds, plus one (the band's least input size).
_BAND = "coalesce((SELECT max(t) + 1 FROM unnest($5::bigint[]) t WHERE e.input_tokens > t), 0)"
_SUMS = ", ".join(
    f"coalesce(sum({name}), 0) AS {name}"
    for name in ("input_tokens", "output_tokens", *_PRICED[1:], "reasoning_tokens")
)
_PAID_SUMS = ", ".join(
    f"coalesce(sum({name}) FILTER (WHERE {_PAID}), 0) AS paid_{name}"
    for name in (*_PRICED, "output_tokens")
)
# $1 workspace, $2 and $3 the hour, $4 the tag bound, $5 the price table's long-context
# thresholds. Grouped by output position: the bounded tags keep their column names.
# Each group is split into buckets priced alike (tier, band); `_merge` joins them again.
_AGGREGATE = f"""
WITH hour_events AS (
  SELECT {", ".join(f"e.{name}" for name in _EVENT_COLUMNS)},
    {", ".join(f"f.{name}" for name in _FACT_COLUMNS)}, {_BAND} AS band
  FROM recovea.request_events e
  LEFT JOIN recovea.pricing_facts f
    ON f.request_id = e.request_id AND f.ts = e.ts AND f.customer_id = e.customer_id
  WHERE e.customer_id = $1 AND e.ts >= $2 AND e.ts < $3
), {", ".join(_top(tag) for tag in TAGS)}
SELECT {", ".join(_bounded(name) for name in DIMENSIONS)}, {", ".join(BUCKET)},
  count(*) AS requests,
  count(*) FILTER (WHERE status = 'error') AS errors,
  {_SUMS},
  count(*) FILTER (WHERE cache_hit) AS cache_hits,
  count(*) FILTER (WHERE dedup_singleflight) AS dedup_hits,
  count(*) FILTER (WHERE fell_back_to_baseline) AS fallbacks,
  count(*) FILTER (WHERE input_tokens IS NOT NULL OR output_tokens IS NOT NULL) AS counted,
  {_PAID_SUMS}
FROM hour_events
GROUP BY {", ".join(str(position) for position in range(1, len(DIMENSIONS) + len(BUCKET) + 1))}
"""
#: the per-group counts a rollup row holds (summed again when usage is read)
COUNTS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_hits",
    "dedup_hits",
    "fallbacks",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
)
_COLUMNS = ("hour", *DIMENSIONS, *COUNTS, "baseline_cost", "realized_cost", "unpriced")
_INSERT = (
    f"INSERT INTO recovea.usage_rollups ({', '.join(_COLUMNS)})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(_COLUMNS) + 1))})"
)
HOUR = timedelta(hours=1)


def parse_moment(raw: str) -> datetime:
    """An ISO 8601 date or time (a trailing Z allowed); UTC when it names no offset.
    ValueError when it is not one."""
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def hour_of(moment: datetime) -> datetime:
    """The UTC hour that contains `moment`."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _price(prices: PriceTable, model: str | None) -> Price | None:
    """A model's price; `(other)` stands for many models and has none."""
    return None if model == OTHER else prices.price_for(model)


@dataclass
class _Group:
    """One rollup row in the making: its buckets' counts and costs added up."""

    counts: dict[str, int]
    baseline: Decimal | None = None
    realized: Decimal | None = None
    unpriced: int = 0

    def add(self, bucket: asyncpg.Record, prices: PriceTable) -> None:
        """Count a bucket, and price it: on the baseline model as if no lever had acted,
        and what was paid for on the model that served. A bucket either price cannot
        cover (the model, the tier or the band has no price) counts as unpriced."""
        for name in COUNTS:
            self.counts[name] += bucket[name]
        if bucket["counted"] == 0:
            return  # no token counts reported: nothing to price
        tier, band = bucket["service_tier"], bucket["band"]
        everything, paid = (
            Tokens(
                bucket[f"{prefix}input_tokens"],
                bucket[f"{prefix}cached_tokens"],
                bucket[f"{prefix}cache_write_5m_tokens"],
                bucket[f"{prefix}cache_write_1h_tokens"],
                bucket[f"{prefix}output_tokens"],
            )
            for prefix in ("", "paid_")
        )
        served = bucket["realized_model"] or bucket["baseline_model"]
        baseline = cost(
            _price(prices, bucket["baseline_model"]), everything, tier, context_tokens=band
        )
        realized = cost(_price(prices, served), paid, tier, context_tokens=band)
        if baseline is None or realized is None:
            self.unpriced += bucket["counted"]
            return
        self.baseline = baseline + (self.baseline or 0)
        self.realized = realized + (self.realized or 0)


def _merge(buckets: list[asyncpg.Record], prices: PriceTable) -> dict[tuple[Any, ...], _Group]:
    """The hour's buckets joined into one group per dimension key, priced."""
    groups: dict[tuple[Any, ...], _Group] = {}
    for bucket in buckets:
        key = tuple(bucket[name] for name in DIMENSIONS)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(dict.fromkeys(COUNTS, 0))
        group.add(bucket, prices)
    return groups


async def rollup_workspace_hour(
    conn: asyncpg.Connection,
    hour: datetime,
    workspace: uuid.UUID,
    *,
    timeout_s: float,
    max_tags: int,
) -> int:
    """Recompute one workspace's rollup rows of one hour and take its pending mark; how
    many rows it now has. Raises (rolled back, mark kept) on any failure."""
    async with maintenance_transaction(conn, timeout_s):
        # Two rollups of one pair at once (a replica and `recovea rollup`) would each
        # delete what the other had not yet written and insert their rows twice.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"recovea rollup {workspace} {hour.isoformat()}",
        )
        await conn.execute(
            "DELETE FROM recovea.rollup_pending WHERE hour = $1 AND customer_id = $2",
            hour,
            workspace,
        )
        prices = await workspace_prices(conn, workspace)
        buckets = await conn.fetch(
            _AGGREGATE, workspace, hour, hour + HOUR, max_tags, prices.context_thresholds()
        )
        await conn.execute(
            "DELETE FROM recovea.usage_rollups WHERE hour = $1 AND customer_id = $2",
            hour,
            workspace,
        )
        records = [
            (
                hour,
                *key,
                *(group.counts[name] for name in COUNTS),
                group.baseline,
                group.realized,
                group.unpriced,
            )
            for key, group in _merge(buckets, prices).items()
        ]
        if records:
            await conn.executemany(_INSERT, records)
    return len(records)


@dataclass
class RollupReport:
    """What a rollup run did: the pairs rolled up and the ones that failed."""

    done: list[tuple[datetime, uuid.UUID]] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def hours(self) -> list[datetime]:
        """The hours at least one workspace was rolled up for, oldest first."""
        return sorted({hour for hour, _ in self.done})


async def mark_range(
    conn: asyncpg.Connection, since: datetime, until: datetime, *, timeout_s: float
) -> None:
    """Mark pending every (hour, workspace) with events in the hours from `since`'s to
    the one `until` falls in."""
    stop = hour_of(until)
    if stop < until:
        stop += HOUR
    async with maintenance_transaction(conn, timeout_s):
        await conn.execute(
            "INSERT INTO recovea.rollup_pending (hour, customer_id)"
            " SELECT DISTINCT date_trunc('hour', ts), customer_id FROM recovea.request_events"
            " WHERE ts >= $1 AND ts < $2 AND customer_id IS NOT NULL ON CONFLICT DO NOTHING",
            hour_of(since),
            stop,
        )


async def run_rollup(
    conn: asyncpg.Connection,
    *,
    timeout_s: float,
    max_tags: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> RollupReport:
    """Roll up every pending (hour, workspace), after marking every pair in
    [since, until) when given; one pair's failure does not stop the others."""
    if since is not None:
        await mark_range(conn, since, until or datetime.now(UTC), timeout_s=timeout_s)
    async with conn.transaction():
        await service_mode(conn)
        pending = await conn.fetch(
            "SELECT hour, customer_id FROM recovea.rollup_pending ORDER BY hour, customer_id"
        )
    report = RollupReport()
    for row in pending:
        hour, workspace = row["hour"], row["customer_id"]
        try:
            await rollup_workspace_hour(
                conn, hour, workspace, timeout_s=timeout_s, max_tags=max_tags
            )
        except Exception as exc:
            if connection_lost(conn):
                raise
            report.failed.append(Failure(workspace, type(exc).__name__, hour))
        else:
            report.done.append((hour, workspace))
    return report
