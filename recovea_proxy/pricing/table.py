"""The price table: the one shipped with the package, per-workspace overrides on top of
it, and the resolution of the model name a client sent to a table entry.

`prices.json` holds list prices in USD per 1M tokens, every rate each provider
publishes for the models it lists (see `rates`), each entry with its source page and
date, and the date the table was taken.

A model name resolves by trying, in order: the name as sent; without a provider prefix
(OpenRouter's `openai/gpt-4o`); without a trailing snapshot (`-2024-08-06`, `-20241022`,
`-0125`, `-latest`); with dotted versions dashed (OpenRouter's `claude-3.5-haiku`).
Overrides are searched with every candidate name before the shipped table is, so a
workspace's price for `gpt-4o` also prices `gpt-4o-2024-08-06`. A name that resolves
to nothing has no price: it is never guessed from a similar one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from recovea_proxy.pricing.rates import Price, parse_price

PROVIDER_PREFIXES = ("openai/", "anthropic/")

_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")
_DOTTED_VERSION = re.compile(r"(?<=\d)\.(?=\d)")


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

    def context_thresholds(self) -> list[int]:
        """Every long-context threshold in the table, ascending (the bands a request's
        input size can fall in)."""
        return sorted(
            {
                price.long_context.above
                for price in (*self._prices.values(), *self._overrides.values())
                if price.long_context is not None
            }
        )


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


@cache
def shipped_prices() -> PriceTable:
    """The table shipped with the package, read once."""
    shipped = resources.files("recovea_proxy.pricing").joinpath("prices.json")
    return parse_table(shipped.read_text(encoding="utf-8"))


def parse_table(text: str) -> PriceTable:
    """A `PriceTable` from the JSON of `prices.json`; ValueError if any entry is malformed."""
    document = json.loads(text)
    models: dict[str, Any] = document["models"]
    prices = {name: parse_price(name, entry) for name, entry in models.items()}
    return PriceTable(prices, version=str(document["version"]))
