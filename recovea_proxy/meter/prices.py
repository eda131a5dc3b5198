"""Model prices and the cost of a request.

Owns the price table shipped with the package (`prices.json`, list prices in USD per
1M tokens), per-workspace overrides on top of it, the resolution of the model name a
client sent to a table entry, and the exact `Decimal` cost of one request's usage.

A model name resolves by trying, in order: the name as sent; without a provider prefix
(OpenRouter's `openai/gpt-4o`); without a trailing snapshot (`-2024-08-06`, `-20241022`,
`-0125`, `-latest`); with dotted versions dashed (OpenRouter's `claude-3.5-haiku`).
Overrides are searched with every candidate name before the shipped table is, so a
workspace's price for `gpt-4o` also prices `gpt-4o-2024-08-06`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any

PER_TOKENS = Decimal(1_000_000)
PROVIDER_PREFIXES = ("openai/", "anthropic/")

_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")
_DOTTED_VERSION = re.compile(r"(?<=\d)\.(?=\d)")


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens for one model, and where the numbers came from."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    source: str
    as_of: str


class PriceTable:
    """The shipped prices plus per-workspace overrides (exact names, which win)."""

    def __init__(
        self,
        prices: Mapping[str, Price],
        overrides: Mapping[str, Price] | None = None,
        version: str = "",
    ) -> None:
        self._prices = dict(prices)
        self._overrides = dict(overrides or {})
        self.version = version

    def with_overrides(self, overrides: Mapping[str, Price]) -> PriceTable:
        """A table with `overrides` on top of this one's (later overrides win)."""
        return PriceTable(self._prices, {**self._overrides, **overrides}, self.version)

    def price_for(self, model: str | None) -> Price | None:
        """The price of `model` as a client names it, or None if it is unknown."""
        if not model:
            return None
        names = candidate_names(model)
        for table in (self._overrides, self._prices):
            for name in names:
                price = table.get(name)
                if price is not None:
                    return price
        return None

    def entries(self) -> dict[str, Price]:
        """Every priced model name with the price it gets (overrides applied)."""
        return {**self._prices, **self._overrides}


def candidate_names(model: str) -> list[str]:
    """The names tried for `model`, most specific first, without repeats."""
    bare = strip_provider_prefix(model)
    undated = _SNAPSHOT.sub("", bare)
    dashed = _DOTTED_VERSION.sub("-", undated)
    return list(dict.fromkeys((model, bare, undated, dashed)))


def strip_provider_prefix(model: str) -> str:
    """`openai/gpt-4o` → `gpt-4o`; names without a known prefix are unchanged."""
    for prefix in PROVIDER_PREFIXES:
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def cost(
    price: Price | None,
    input_tokens: int | None,
    cached_tokens: int | None,
    output_tokens: int | None,
) -> Decimal | None:
    """USD for one request's usage, exact; None if unpriced or no token counts at all.

    `input_tokens` includes the cached ones (the gateway's normalized usage).
    """
    if price is None or (input_tokens is None and output_tokens is None):
        return None
    cached = cached_tokens or 0
    uncached = max((input_tokens or 0) - cached, 0)
    total = (
        uncached * price.input + cached * price.cached_input + (output_tokens or 0) * price.output
    )
    return total / PER_TOKENS


@cache
def shipped_prices() -> PriceTable:
    """The table shipped with the package, read once."""
    shipped = resources.files("recovea_proxy.meter").joinpath("prices.json")
    return parse_table(shipped.read_text(encoding="utf-8"))


def parse_table(text: str) -> PriceTable:
    """A `PriceTable` from the JSON of `prices.json`; ValueError if any entry is malformed."""
    document = json.loads(text)
    models: dict[str, Any] = document["models"]
    prices = {name: parse_price(name, entry) for name, entry in models.items()}
    return PriceTable(prices, version=str(document["version"]))


def parse_price(name: str, entry: Mapping[str, Any]) -> Price:
    """One table entry; prices must be decimal strings, `as_of` an ISO date."""
    as_of = str(entry["as_of"])
    try:
        date.fromisoformat(as_of)
    except ValueError:
        raise ValueError(f"{name}: as_of {as_of!r} is not a YYYY-MM-DD date") from None
    return Price(
        input=_decimal(name, entry, "input"),
        cached_input=_decimal(name, entry, "cached_input"),
        output=_decimal(name, entry, "output"),
        source=str(entry["source"]),
        as_of=as_of,
    )


def _decimal(name: str, entry: Mapping[str, Any], field: str) -> Decimal:
    raw = entry[field]
    if not isinstance(raw, str):
        raise ValueError(f"{name}: {field} must be a decimal string, not {raw!r}")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{name}: {field} {raw!r} is not a decimal") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name}: {field} {raw!r} is not a price")
    return value
