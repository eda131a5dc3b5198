"""The comparison: per workspace, UTC day, provider and model, what the provider
reported against what the ledger holds, and a verdict (`verdict`).

The ledger's side, counted the way the providers count (docs/ledger.md):

| figure          | from |
| `requests`      | `request_events` rows that reached the provider and reported usage: |
|                 | not answered by the cache, not a singleflight follower, with tokens |
| `input_tokens`  | their `input_tokens` (cache reads and writes included, as OpenAI's  |
|                 | `input_tokens` and Anthropic's uncached + cache read + cache write) |
| `cached_tokens` | their `cached_tokens` (cache reads)                                 |
| `output_tokens` | their `output_tokens`                                               |
| `cost_usd`      | the hourly rollup's `realized_cost` of the day (what was paid for)  |

Models are matched by their undated name (`gpt-4o-mini-2024-07-18` and `gpt-4o-mini`
are one model; `pricing.table.candidate_names`), on the model that served the request.
Only days the poller has figures for are compared; every poll's status is listed with
them (`polls`), so a day set aside shows why. Callers scope the connection: the API
reads under row-level security, the command line on the owner connection, and both
filter by the workspace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from recovea_proxy.pricing.table import candidate_names
from recovea_proxy.reconcile.figures import day_bounds
from recovea_proxy.reconcile.verdict import Side, verdict

_LEDGER = """
SELECT (e.ts AT TIME ZONE 'UTC')::date AS day, e.provider,
  coalesce(e.realized_model, e.baseline_model) AS model, count(*) AS requests,
  coalesce(sum(e.input_tokens), 0) AS input_tokens,
  coalesce(sum(e.cached_tokens), 0) AS cached_tokens,
  coalesce(sum(e.output_tokens), 0) AS output_tokens
FROM recovea.request_events e
WHERE e.customer_id = $1 AND e.ts >= $2 AND e.ts < $3
  AND NOT e.cache_hit AND NOT e.dedup_singleflight
  AND (e.input_tokens IS NOT NULL OR e.output_tokens IS NOT NULL)
GROUP BY 1, 2, 3
"""
_ROLLUP = """
SELECT (r.hour AT TIME ZONE 'UTC')::date AS day, r.provider,
  coalesce(r.realized_model, r.baseline_model) AS model,
  sum(r.realized_cost) AS cost_usd, sum(r.unpriced) AS unpriced
FROM recovea.usage_rollups r
WHERE r.customer_id = $1 AND r.hour >= $2 AND r.hour < $3
GROUP BY 1, 2, 3
"""
_PROVIDER = """
SELECT day, provider, model, sum(requests) AS requests, sum(input_tokens) AS input_tokens,
  sum(cached_tokens) AS cached_tokens, sum(output_tokens) AS output_tokens,
  sum(cost_usd) AS cost_usd
FROM recovea.provider_usage
WHERE customer_id = $1 AND day >= $2 AND day < $3
GROUP BY 1, 2, 3
"""
_POLLS = """
SELECT provider, day, outcome, reason, attempts, settled, polled_at
FROM recovea.reconcile_days
WHERE customer_id = $1 AND day >= $2 AND day < $3
ORDER BY day, provider
"""
Key = tuple[date, str, str]
_COUNTS = ("requests", "input_tokens", "cached_tokens", "output_tokens")
#: the providers whose usage report counts requests (Anthropic's does not)
REQUESTS_REPORTED = frozenset({"openai"})


def model_key(model: str | None) -> str:
    """The name a model is matched by: without provider prefix, date or dotted version."""
    return candidate_names(model)[-1] if model else "(none)"


def _money(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _side_json(side: Side, *, ledger: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "requests": side.requests,
        "input_tokens": side.input_tokens,
        "cached_tokens": side.cached_tokens,
        "output_tokens": side.output_tokens,
        "cost_usd": _money(side.cost_usd),
    }
    if ledger:
        out["unpriced"] = side.unpriced
    return out


def _difference(provider: Side, ledger: Side) -> dict[str, Any]:
    cost = (
        provider.cost_usd - ledger.cost_usd
        if provider.cost_usd is not None and ledger.cost_usd is not None
        else None
    )
    return {
        "requests": None
        if provider.requests is None
        else provider.requests - (ledger.requests or 0),
        "input_tokens": provider.input_tokens - ledger.input_tokens,
        "cached_tokens": provider.cached_tokens - ledger.cached_tokens,
        "output_tokens": provider.output_tokens - ledger.output_tokens,
        "cost_usd": _money(cost),
    }


def _add(sides: dict[Key, Side], key: Key, row: asyncpg.Record, names: Iterable[str]) -> Side:
    side = sides.setdefault(key, Side())
    for name in names:
        value = row[name]
        if value is None:
            continue
        if name == "cost_usd":
            side.cost_usd = (side.cost_usd or Decimal(0)) + value
        elif name == "requests":
            side.requests = (side.requests or 0) + int(value)
        else:
            setattr(side, name, getattr(side, name) + int(value))
    return side


async def reconciliation(
    conn: asyncpg.Connection,
    workspace: uuid.UUID,
    since: date,
    until: date,
    *,
    tolerance_pct: float,
) -> dict[str, Any]:
    """The workspace's comparison for the days in [since, until)."""
    start, _ = day_bounds(since)
    end, _ = day_bounds(until)
    polls = await conn.fetch(_POLLS, workspace, since, until)
    provided: dict[Key, Side] = {}
    # what each matched model is shown as: the name the ledger has, else the provider's
    provider_names: dict[Key, str] = {}
    ledger_names: dict[Key, str] = {}
    for row in await conn.fetch(_PROVIDER, workspace, since, until):
        key = (row["day"], row["provider"], model_key(row["model"]))
        provider_names.setdefault(key, row["model"])
        _add(provided, key, row, (*_COUNTS, "cost_usd"))
    compared = {(p["day"], p["provider"]) for p in polls if p["outcome"] == "ok"}
    compared |= {(day, provider) for day, provider, _ in provided}
    metered: dict[Key, Side] = {}
    for row in await conn.fetch(_LEDGER, workspace, start, end):
        key = (row["day"], row["provider"], model_key(row["model"]))
        if key[:2] in compared:
            _add(metered, key, row, _COUNTS)
            if row["model"]:
                ledger_names.setdefault(key, row["model"])
    for row in await conn.fetch(_ROLLUP, workspace, start, end):
        key = (row["day"], row["provider"], model_key(row["model"]))
        if key[:2] in compared:
            side = _add(metered, key, row, ("cost_usd",))
            side.unpriced += int(row["unpriced"] or 0)
    settled = {(p["day"], p["provider"]): p["settled"] for p in polls}
    names = provider_names | ledger_names
    data = []
    for key in sorted(set(provided) | set(metered)):
        day, provider, model = key
        # a provider that counts requests (OpenAI) and reported none of this model: 0
        counted = 0 if provider in REQUESTS_REPORTED else None
        provider_side = provided.get(key) or Side(requests=counted)
        ledger_side = metered.get(key) or Side()
        ledger_side.requests = ledger_side.requests or 0
        data.append(
            {
                "day": day.isoformat(),
                "provider": provider,
                "model": names.get(key, model),
                "verdict": verdict(provider_side, ledger_side, tolerance_pct),
                "settled": settled.get((day, provider), False),
                "provider_reported": _side_json(provider_side, ledger=False),
                "ledger": _side_json(ledger_side, ledger=True),
                "difference": _difference(provider_side, ledger_side),
            }
        )
    return {
        "object": "reconciliation",
        "workspace_id": str(workspace),
        "from": since.isoformat(),
        "to": until.isoformat(),
        "tolerance_pct": tolerance_pct,
        "data": data,
        "polls": [
            {
                "provider": p["provider"],
                "day": p["day"].isoformat(),
                "outcome": p["outcome"],
                "reason": p["reason"],
                "attempts": p["attempts"],
                "settled": p["settled"],
                "polled_at": p["polled_at"].isoformat(),
            }
            for p in polls
        ],
    }
