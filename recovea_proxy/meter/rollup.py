"""The hourly rollup: prices the ledger into `usage_rollups`.

An hour is rolled up when the drainer has marked it (`rollup_pending`, written in
the same transaction as its events) or when asked for explicitly (`recovea rollup
--since`). Rolling up an hour replaces that hour's rows in one transaction, so
running it again gives the same numbers.

Dollars: `baseline_cost` prices every request's tokens on the model the client
asked for, as if no lever had acted; `realized_cost` prices what was actually
paid for — requests answered from the cache cost nothing — on the model that
served them. Prices: the shipped table under the workspace's overrides
(`model_prices`). A group whose model has no price gets NULL costs and counts
its requests as `unpriced`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from recovea_proxy.meter.prices import Price, PriceTable, cost, shipped_prices
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
_AGGREGATE = f"""
SELECT {", ".join(DIMENSIONS)},
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
FROM recovea.request_events
WHERE ts >= $1 AND ts < $2 AND customer_id IS NOT NULL
GROUP BY {", ".join(DIMENSIONS)}
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


async def workspace_prices(
    conn: asyncpg.Connection, customers: set[uuid.UUID]
) -> dict[uuid.UUID, PriceTable]:
    """Each workspace's price table: shipped prices under its overrides."""
    shipped = shipped_prices()
    rows = await conn.fetch(
        "SELECT customer_id, model, input, cached_input, output FROM recovea.model_prices"
        " WHERE customer_id = ANY($1::uuid[])",
        list(customers),
    )
    overrides: dict[uuid.UUID, dict[str, Price]] = defaultdict(dict)
    for row in rows:
        overrides[row["customer_id"]][row["model"]] = Price(
            row["input"], row["cached_input"], row["output"], "workspace override", ""
        )
    return {customer: shipped.with_overrides(overrides.get(customer, {})) for customer in customers}


def _priced(row: asyncpg.Record, prices: PriceTable) -> tuple[Any, Any, int]:
    """(baseline_cost, realized_cost, unpriced requests) of one group."""
    if row["counted"] == 0:
        return None, None, 0  # no token counts reported: nothing to price
    baseline_price = prices.price_for(row["baseline_model"])
    realized_price = prices.price_for(row["realized_model"] or row["baseline_model"])
    baseline = cost(baseline_price, row["input_tokens"], row["cached_tokens"], row["output_tokens"])
    realized = cost(realized_price, row["paid_input"], row["paid_cached"], row["paid_output"])
    unpriced = row["counted"] if baseline_price is None or realized_price is None else 0
    return baseline, realized, unpriced


async def rollup_hour(conn: asyncpg.Connection, hour: datetime) -> int:
    """Recompute one hour's rollup rows; how many rows it now has."""
    async with conn.transaction():
        await service_mode(conn)
        await conn.execute("DELETE FROM recovea.rollup_pending WHERE hour = $1", hour)
        groups = await conn.fetch(_AGGREGATE, hour, hour + HOUR)
        tables = await workspace_prices(conn, {row["customer_id"] for row in groups})
        await conn.execute("DELETE FROM recovea.usage_rollups WHERE hour = $1", hour)
        records = []
        for row in groups:
            baseline, realized, unpriced = _priced(row, tables[row["customer_id"]])
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


async def run_rollup(
    conn: asyncpg.Connection, *, since: datetime | None = None, until: datetime | None = None
) -> list[datetime]:
    """Roll up the pending hours, plus every hour in [since, until) when given; the hours
    done, oldest first."""
    async with conn.transaction():
        await service_mode(conn)
        pending = {
            row["hour"] for row in await conn.fetch("SELECT hour FROM recovea.rollup_pending")
        }
    if since is not None:
        hour = hour_of(since)
        end = until or datetime.now(UTC)
        while hour < end:
            pending.add(hour)
            hour += HOUR
    done = sorted(pending)
    for hour in done:
        await rollup_hour(conn, hour)
    return done
