"""One provider figure: what a provider's report says of one UTC day, model, API key
and project — counts and amounts only, normalized across providers the way the ledger
counts (docs/ledger.md):

| field          | OpenAI (usage/completions, costs)    | Anthropic (usage_report, cost_report) |
| `input_tokens` | `input_tokens` (incl. cached)        | uncached + cache reads + cache writes |
| `cached_tokens`| `input_cached_tokens`                | `cache_read_input_tokens`             |
| `output_tokens`| `output_tokens`                      | `output_tokens`                       |
| `requests`     | `num_model_requests`                 | None: the report has no request count |
| `cost_usd`     | `amount.value` (USD), per line item  | `amount` (cents, a decimal string)/100 |
| `project_id`   | `project_id`                         | `workspace_id` (Anthropic's workspace)|

A day's figures are summed by key as pages arrive (`DayFigures.add`), so the same key
reported twice — once with tokens, once with its cost — makes one row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from recovea_proxy.clean import clean_text

#: the bound of a model, API key or project id as stored
NAME_MAX = 256
#: the model of a cost line that names none (a tool, a fee)
UNNAMED = "(other)"


class Malformed(ValueError):
    """A report page that is not what the provider's API documents."""


@dataclass(slots=True)
class Figure:
    """A provider's counts and cost for one (model, API key, project) of a day."""

    requests: int | None = None
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal | None = None


Key = tuple[str, str, str]


@dataclass(slots=True)
class DayFigures:
    """Every figure of one provider's day, by (model, API key, project)."""

    day: date
    rows: dict[Key, Figure] = field(default_factory=dict)

    def add(
        self,
        key: Key,
        *,
        requests: int | None = None,
        input_tokens: int = 0,
        cached_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | None = None,
    ) -> None:
        figure = self.rows.setdefault(key, Figure())
        if requests is not None:
            figure.requests = (figure.requests or 0) + requests
        figure.input_tokens += input_tokens
        figure.cached_tokens += cached_tokens
        figure.output_tokens += output_tokens
        if cost_usd is not None:
            figure.cost_usd = (figure.cost_usd or Decimal(0)) + cost_usd


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC instants a day starts and ends at."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def count(value: Any, what: str) -> int:
    """A non-negative integer count from a report, or Malformed (absent counts as 0)."""
    if value is None:
        return 0
    if type(value) is not int or value < 0 or value >= 2**62:
        raise Malformed(f"{what} is not a count")
    return value


def name(value: Any, what: str, *, default: str = "") -> str:
    """A model, key or project id from a report: cleaned and bounded."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise Malformed(f"{what} is not a string")
    return clean_text(value, NAME_MAX) or default


def decimal(value: Any, what: str) -> Decimal:
    """An amount from a report (a JSON number or a decimal string), or Malformed."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Malformed(f"{what} is not an amount")
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise Malformed(f"{what} is not an amount") from None
    if not amount.is_finite() or abs(amount) >= Decimal(10) ** 12:
        raise Malformed(f"{what} is not an amount")
    return amount


def page_items(page: Any, data_key: str = "data") -> tuple[list[Any], bool, str | None]:
    """(buckets, has_more, next_page) of a report page, or Malformed."""
    if not isinstance(page, dict) or not isinstance(page.get(data_key), list):
        raise Malformed("the page has no data list")
    more = page.get("has_more", False)
    cursor = page.get("next_page")
    if not isinstance(more, bool) or (cursor is not None and not isinstance(cursor, str)):
        raise Malformed("the page's paging fields are not what the API documents")
    if more and not cursor:
        raise Malformed("the page has more but no next_page")
    return page[data_key], more, cursor


def results(bucket: Any) -> list[dict[str, Any]]:
    """The results of one time bucket, or Malformed."""
    if not isinstance(bucket, dict) or not isinstance(bucket.get("results"), list):
        raise Malformed("a bucket has no results list")
    items: list[dict[str, Any]] = bucket["results"]
    if not all(isinstance(item, dict) for item in items):
        raise Malformed("a result is not an object")
    return items
