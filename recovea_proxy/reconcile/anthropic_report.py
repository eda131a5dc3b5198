"""Anthropic's usage and cost reports, for one UTC day (PROTOCOLS.md):

    GET /v1/organizations/usage_report/messages   tokens per model, API key and
                                                  workspace (`group_by[]`); no
                                                  request count
    GET /v1/organizations/cost_report             cents as decimal strings, per
                                                  workspace and description (which
                                                  carries the model)

Both with the report key (`sk-ant-admin…`) in `x-api-key` and `anthropic-version`,
`starting_at`/`ending_at` in RFC 3339, `bucket_width=1d`, paged through
`has_more`/`next_page` (passed back as `page`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from recovea_proxy.reconcile.figures import (
    UNNAMED,
    DayFigures,
    Malformed,
    count,
    day_bounds,
    decimal,
    name,
    results,
)
from recovea_proxy.reconcile.openai_report import Pages

USAGE_PATH = "/v1/organizations/usage_report/messages"
COSTS_PATH = "/v1/organizations/cost_report"
VERSION = "2023-06-01"
_CENTS = Decimal(100)


def _rfc3339(moment: Any) -> str:
    return str(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


async def fetch_day(pages: Pages, base: str, key: str, figures: DayFigures) -> None:
    """Add the day's usage and costs to `figures` (every page of each)."""
    start, end = day_bounds(figures.day)
    window = [
        ("starting_at", _rfc3339(start)),
        ("ending_at", _rfc3339(end)),
        ("bucket_width", "1d"),
    ]
    headers = {"x-api-key": key, "anthropic-version": VERSION}
    usage = [
        *window,
        ("group_by[]", "model"),
        ("group_by[]", "api_key_id"),
        ("group_by[]", "workspace_id"),
        ("limit", "1"),
    ]
    for bucket in await pages(base + USAGE_PATH, usage, headers):
        for item in results(bucket):
            writes = item.get("cache_creation") or {}
            if not isinstance(writes, dict):
                raise Malformed("cache_creation is not an object")
            read = count(item.get("cache_read_input_tokens"), "cache_read_input_tokens")
            written = count(
                writes.get("ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens"
            ) + count(writes.get("ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens")
            figures.add(
                (
                    name(item.get("model"), "model", default=UNNAMED),
                    name(item.get("api_key_id"), "api_key_id"),
                    name(item.get("workspace_id"), "workspace_id"),
                ),
                input_tokens=count(item.get("uncached_input_tokens"), "uncached_input_tokens")
                + read
                + written,
                cached_tokens=read,
                output_tokens=count(item.get("output_tokens"), "output_tokens"),
            )
    costs = [*window, ("group_by[]", "workspace_id"), ("group_by[]", "description")]
    for bucket in await pages(base + COSTS_PATH, costs, headers):
        for item in results(bucket):
            currency = item.get("currency", "USD")
            if not isinstance(currency, str) or currency.upper() != "USD":
                raise Malformed("a cost is not in USD")
            figures.add(
                (
                    name(item.get("model"), "model", default=UNNAMED),
                    "",
                    name(item.get("workspace_id"), "workspace_id"),
                ),
                cost_usd=decimal(item.get("amount"), "amount") / _CENTS,
            )
