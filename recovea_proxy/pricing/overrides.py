"""A workspace's price overrides: the `model_prices` rows, read into `Price`s the rollup
prices with, and written from the admin API's JSON.

An override is a whole entry in the shipped table's shape (`pricing.rates`): `input`,
`cached_input` and `output` are required; `cache_write_5m` and `cache_write_1h` left
out bill as input; `long_context` and `service_tiers` left out mean the model has no
band and no other tier (a request served at one is unpriced). Nothing is inherited
from the shipped entry it replaces. Rates may be given as decimal strings or numbers;
they are stored and read back as exact decimals.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from recovea_proxy.pricing.rates import RATE_FIELDS, Price, parse_price
from recovea_proxy.pricing.table import PriceTable, shipped_prices

SOURCE = "workspace override"
#: the fields an override may have
FIELDS = frozenset({*RATE_FIELDS, "long_context", "service_tiers"})
_REQUIRED = ("input", "cached_input", "output")
_SELECT = (
    "SELECT model, input, cached_input, cache_write_5m, cache_write_1h, output,"
    " long_context, service_tiers, updated_at FROM recovea.model_prices"
    " WHERE customer_id = $1::uuid"
)
_UPSERT = (
    "INSERT INTO recovea.model_prices (customer_id, model, input, cached_input,"
    " cache_write_5m, cache_write_1h, output, long_context, service_tiers)"
    " VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb)"
    " ON CONFLICT (customer_id, model) DO UPDATE SET input = EXCLUDED.input,"
    " cached_input = EXCLUDED.cached_input, cache_write_5m = EXCLUDED.cache_write_5m,"
    " cache_write_1h = EXCLUDED.cache_write_1h, output = EXCLUDED.output,"
    " long_context = EXCLUDED.long_context, service_tiers = EXCLUDED.service_tiers,"
    " updated_at = now()"
)


def override_entry(model: str, body: Mapping[str, Any], as_of: str) -> Price:
    """The `Price` an admin's JSON body describes; ValueError saying what is wrong."""
    missing = [name for name in _REQUIRED if body.get(name) is None]
    if missing:
        raise ValueError(f"Missing field(s): {', '.join(missing)}.")
    entry: dict[str, Any] = {name: _text(body.get(name)) for name in RATE_FIELDS}
    band = body.get("long_context")
    if isinstance(band, Mapping):
        band = {**_rates_as_text(band), "source": band.get("source") or SOURCE}
    tiers = body.get("service_tiers") or {}
    if isinstance(tiers, Mapping):
        tiers = {
            name: {**_rates_as_text(spec), "source": spec.get("source") or SOURCE}
            if isinstance(spec, Mapping)
            else spec
            for name, spec in tiers.items()
        }
    entry.update(long_context=band, service_tiers=tiers, source=SOURCE, as_of=as_of)
    return parse_price(model, entry)


def _rates_as_text(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A band or tier with its rates (and multiplier) as decimal text."""
    return {
        name: _text(value) if name in RATE_FIELDS or name == "multiplier" else value
        for name, value in spec.items()
    }


def _text(value: Any) -> Any:
    """A number as its decimal text (JSON over HTTP may send either); anything else as is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


async def write_override(
    conn: asyncpg.Connection, workspace: str, model: str, price: Price
) -> None:
    """Store `price` as the workspace's override of `model` (replacing any)."""
    entry = price.as_json()
    band = entry["long_context"]
    await conn.execute(
        _UPSERT,
        workspace,
        model,
        *(getattr(price.standard, name) for name in RATE_FIELDS),
        None if band is None else orjson.dumps(band).decode(),
        orjson.dumps(entry["service_tiers"]).decode(),
    )


async def read_overrides(conn: asyncpg.Connection, workspace: str | uuid.UUID) -> dict[str, Price]:
    """The workspace's overrides by model name (scoped by the caller's transaction)."""
    return {row["model"]: _from_row(row) for row in await conn.fetch(_SELECT, str(workspace))}


def _from_row(row: asyncpg.Record) -> Price:
    band = row["long_context"]
    entry = {
        **{name: None if row[name] is None else str(row[name]) for name in RATE_FIELDS},
        "long_context": None if band is None else orjson.loads(band),
        "service_tiers": orjson.loads(row["service_tiers"]),
        "source": SOURCE,
        "as_of": row["updated_at"].date().isoformat(),
    }
    return parse_price(row["model"], entry)


async def workspace_prices(conn: asyncpg.Connection, workspace: uuid.UUID) -> PriceTable:
    """The workspace's price table: shipped prices under its overrides."""
    return shipped_prices().with_overrides(await read_overrides(conn, workspace))
