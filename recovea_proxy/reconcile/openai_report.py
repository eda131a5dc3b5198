"""OpenAI's organization usage and costs, for one UTC day (PROTOCOLS.md):

    GET /v1/organization/usage/completions   tokens and requests per model, API key
                                             and project (`group_by`)
    GET /v1/organization/costs               USD per line item (`"gpt-4o-mini, input"`)
                                             and project: the model is the item's name
                                             before its last comma

Both with the report key as a Bearer token, `start_time`/`end_time` in unix seconds,
`bucket_width=1d`, paged through `has_more`/`next_page` (passed back as `page`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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

USAGE_PATH = "/v1/organization/usage/completions"
COSTS_PATH = "/v1/organization/costs"
Pages = Callable[[str, list[tuple[str, str]], dict[str, str]], Awaitable[list[Any]]]


def model_of_line_item(line_item: str) -> str:
    """`"gpt-4o-mini, input"` → `gpt-4o-mini`; an item without a comma is its own name."""
    model, comma, _ = line_item.rpartition(", ")
    return model if comma else line_item


async def fetch_day(pages: Pages, base: str, key: str, figures: DayFigures) -> None:
    """Add the day's usage and costs to `figures` (every page of each)."""
    start, end = day_bounds(figures.day)
    window = [
        ("start_time", str(int(start.timestamp()))),
        ("end_time", str(int(end.timestamp()))),
        ("bucket_width", "1d"),
    ]
    headers = {"authorization": f"Bearer {key}"}
    usage = [
        *window,
        ("group_by", "model"),
        ("group_by", "api_key_id"),
        ("group_by", "project_id"),
        ("limit", "1"),
    ]
    for bucket in await pages(base + USAGE_PATH, usage, headers):
        for item in results(bucket):
            figures.add(
                (
                    name(item.get("model"), "model", default=UNNAMED),
                    name(item.get("api_key_id"), "api_key_id"),
                    name(item.get("project_id"), "project_id"),
                ),
                requests=count(item.get("num_model_requests"), "num_model_requests"),
                input_tokens=count(item.get("input_tokens"), "input_tokens"),
                cached_tokens=count(item.get("input_cached_tokens"), "input_cached_tokens"),
                output_tokens=count(item.get("output_tokens"), "output_tokens"),
            )
    costs = [*window, ("group_by", "line_item"), ("group_by", "project_id"), ("limit", "1")]
    for bucket in await pages(base + COSTS_PATH, costs, headers):
        for item in results(bucket):
            figures.add(
                (
                    model_of_line_item(name(item.get("line_item"), "line_item", default=UNNAMED)),
                    "",
                    name(item.get("project_id"), "project_id"),
                ),
                cost_usd=_usd(item.get("amount")),
            )


def _usd(amount: Any) -> Decimal:
    if not isinstance(amount, dict):
        raise Malformed("amount is not an object")
    currency = amount.get("currency", "usd")
    if not isinstance(currency, str) or currency.lower() != "usd":
        raise Malformed("a cost is not in USD")
    return decimal(amount.get("value"), "amount.value")
