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
requests answered from the cache cost nothing — on the model that served them.
Prices: the shipped table under the workspace's overrides (`model_prices`). A group
whose model has no price gets NULL costs and counts its requests as `unpriced`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from recovea_proxy.meter.isolation import (
    Failure,
    connection_lost,
    maintenance_transaction,
)
from recovea_proxy.pricing.cost import Tokens, cost
from recovea_proxy.pricing.rates import Price, Rates
from recovea_proxy.pricing.table import PriceTable, shipped_prices
from recovea_proxy.store.service import service_mode

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


# $1 workspace, $2 and $3 the hour, $4 the tag bound. Grouped by output position: the
# bounded tags keep their column names.
_AGGREGATE = f"""
WITH hour_events AS (
  SELECT {", ".join(_EVENT_COLUMNS)} FROM recovea.request_events
  WHERE customer_id = $1 AND ts >= $2 AND ts < $3
), {", ".join(_top(tag) for tag in TAGS)}
SELECT {", ".join(_bounded(name) for name in DIMENSIONS)},
  count(*) AS requests,
  count(*) FILTER (WHERE status = 'error') AS errors,
  coalesce(sum(input_tokens), 0) AS input_tokens,
  coalesce(sum(output_tokens), 0) AS output_tokens,
  coalesce(sum(cached_tokens), 0) AS cached_tokens,
  coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
  count(*) FILTER (WHERE cache_hit) AS cache_hits,
  count(*) FILTER (WHERE dedup_singleflight) AS dedup_hits,
  count(*) FILTER (WHERE fell_back_to_baseline) AS fallbacks,
  count(*) FILTER (WHERE input_tokens IS NOT NULL OR output_tokens IS NOT NULL) AS counted,
  coalesce(sum(input_tokens) FILTER (WHERE NOT cache_hit), 0) AS paid_input,
  coalesce(sum(output_tokens) FILTER (WHERE NOT cache_hit), 0) AS paid_output,
  coalesce(sum(cached_tokens) FILTER (WHERE NOT cache_hit), 0) AS paid_cached
FROM hour_events
GROUP BY {", ".join(str(position) for position in range(1, len(DIMENSIONS) + 1))}
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


async def workspace_prices(conn: asyncpg.Connection, workspace: uuid.UUID) -> PriceTable:
    """The workspace's price table: shipped prices under its overrides."""
    rows = await conn.fetch(
        "SELECT model, input, cached_input, output FROM recovea.model_prices"
        " WHERE customer_id = $1",
        workspace,
    )
    overrides = {
        row["model"]: Price(
            Rates(row["input"], row["cached_input"], row["input"], row["input"], row["output"]),
            "workspace override",
            "",
        )
        for row in rows
    }
    return shipped_prices().with_overrides(overrides)


def _price(prices: PriceTable, model: str | None) -> Price | None:
    """A model's price; `(other)` stands for many models and has none."""
    return None if model == OTHER else prices.price_for(model)


def _priced(row: asyncpg.Record, prices: PriceTable) -> tuple[Any, Any, int]:
    """(baseline_cost, realized_cost, unpriced requests) of one group."""
    if row["counted"] == 0:
        return None, None, 0  # no token counts reported: nothing to price
    baseline_price = _price(prices, row["baseline_model"])
    realized_price = _price(prices, row["realized_model"] or row["baseline_model"])
    everything = Tokens(row["input_tokens"], row["cached_tokens"], output=row["output_tokens"])
    paid = Tokens(row["paid_input"], row["paid_cached"], output=row["paid_output"])
    baseline = cost(baseline_price, everything, context_tokens=0)
    realized = cost(realized_price, paid, context_tokens=0)
    unpriced = row["counted"] if baseline_price is None or realized_price is None else 0
    return baseline, realized, unpriced


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
        groups = await conn.fetch(_AGGREGATE, workspace, hour, hour + HOUR, max_tags)
        prices = await workspace_prices(conn, workspace)
        await conn.execute(
            "DELETE FROM recovea.usage_rollups WHERE hour = $1 AND customer_id = $2",
            hour,
            workspace,
        )
        records = []
        for row in groups:
            baseline, realized, unpriced = _priced(row, prices)
            records.append(
                (
                    hour,
                    *(row[name] for name in DIMENSIONS),
                    *(row[name] for name in COUNTS),
                    baseline,
                    realized,
                    unpriced,
                )
            )
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
