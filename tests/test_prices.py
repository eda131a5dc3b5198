"""The shipped price table, model-name resolution, overrides and the cost of a request."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from recovea_proxy.meter.prices import (
    Price,
    PriceTable,
    cost,
    parse_table,
    shipped_prices,
)

FIELDS = {"provider", "input", "cached_input", "output", "source", "as_of"}
SOURCE_HOSTS = {"openai": ("openai.com",), "anthropic": ("anthropic.com",)}
REQUIRED = [
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "o1",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "claude-opus-4-1",
    "claude-opus-4",
    "claude-sonnet-4-5",
    "claude-sonnet-4",
    "claude-3-7-sonnet",
    "claude-3-5-sonnet",
    "claude-3-5-haiku",
    "claude-haiku-4-5",
    "claude-3-haiku",
    "claude-3-opus",
]


def raw_table() -> dict[str, Any]:
    text = resources.files("recovea_proxy.meter").joinpath("prices.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def raw_models() -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = raw_table()["models"]
    return models


def price(model: str) -> Price:
    found = shipped_prices().price_for(model)
    assert found is not None, model
    return found


def override(input_: str, cached: str, output: str) -> Price:
    return Price(Decimal(input_), Decimal(cached), Decimal(output), "workspace", "2025-01-01")


# The shipped table


def test_table_says_what_its_prices_are() -> None:
    """The table carries a version and a note that prices are list prices, overridable."""
    document = raw_table()
    assert document["version"]
    assert "list price" in document["note"].lower()
    assert "overrid" in document["note"].lower()


def test_required_models_are_priced() -> None:
    """Every model a user is likely to send today has a shipped price."""
    missing = [m for m in REQUIRED if m not in raw_models()]
    assert missing == []


@pytest.mark.parametrize("name", sorted(raw_models()))
def test_entry_is_well_formed(name: str) -> None:
    """Each entry has exactly the documented fields, decimal strings, a provider page and a
    date no later than the table's version."""
    entry = raw_models()[name]
    assert set(entry) == FIELDS
    for field in ("input", "cached_input", "output"):
        assert isinstance(entry[field], str)
        assert Decimal(entry[field]) >= 0
    assert entry["provider"] in SOURCE_HOSTS
    assert entry["source"].startswith("https://")
    assert any(host in entry["source"] for host in SOURCE_HOSTS[entry["provider"]])
    as_of = date.fromisoformat(entry["as_of"])
    assert date(2022, 1, 1) <= as_of <= date.fromisoformat(raw_table()["version"])


@pytest.mark.parametrize("name", sorted(raw_models()))
def test_prices_are_ordered_sensibly(name: str) -> None:
    """Cached input never costs more than input; chat output never costs less than input;
    embeddings bill input only."""
    p = price(name)
    assert p.cached_input <= p.input
    if "embedding" in name:
        assert (p.cached_input, p.output) == (p.input, Decimal(0))
    else:
        assert p.output >= p.input > 0


@pytest.mark.parametrize(
    "name", sorted(n for n, e in raw_models().items() if e["provider"] == "anthropic")
)
def test_anthropic_cache_reads_are_a_tenth_of_input(name: str) -> None:
    """Anthropic bills a cache read at 0.1x the base input price, for every model (to the
    cent: Claude 3 Haiku's $0.025 is listed as $0.03)."""
    p = price(name)
    assert abs(p.cached_input - p.input / 10) < Decimal("0.01")


def test_shipped_prices_are_read_once() -> None:
    """The shipped table is loaded once and shared."""
    assert shipped_prices() is shipped_prices()
    assert shipped_prices().version == raw_table()["version"]


def test_known_list_prices() -> None:
    """Spot checks of the published prices (USD per 1M tokens: input, cached, output)."""
    assert price("gpt-4o") == Price(
        Decimal("2.50"),
        Decimal("1.25"),
        Decimal("10.00"),
        "https://platform.openai.com/docs/pricing",
        "2024-10-02",
    )
    triples = {
        "gpt-5": ("1.25", "0.125", "10"),
        "gpt-4o-mini": ("0.15", "0.075", "0.60"),
        "claude-sonnet-4-5": ("3", "0.30", "15"),
        "claude-3-5-haiku": ("0.80", "0.08", "4"),
        "text-embedding-3-small": ("0.02", "0.02", "0"),
    }
    for model, (i, c, o) in triples.items():
        p = price(model)
        assert (p.input, p.cached_input, p.output) == (Decimal(i), Decimal(c), Decimal(o))


def test_float_prices_are_refused() -> None:
    """A price written as a JSON number (a float) is rejected, not silently rounded."""
    entry = {
        "input": 2.5,
        "cached_input": "1.25",
        "output": "10",
        "source": "x",
        "as_of": "2025-01-01",
    }
    with pytest.raises(ValueError, match="decimal string"):
        parse_table(json.dumps({"version": "1", "note": "", "models": {"m": entry}}))


def test_bad_date_is_refused() -> None:
    """An `as_of` that is not YYYY-MM-DD is rejected."""
    entry = {"input": "1", "cached_input": "1", "output": "1", "source": "x", "as_of": "May 2025"}
    with pytest.raises(ValueError, match="as_of"):
        parse_table(json.dumps({"version": "1", "note": "", "models": {"m": entry}}))


# Resolution


@pytest.mark.parametrize(
    ("sent", "priced_as"),
    [
        ("openai/gpt-4o", "gpt-4o"),
        ("openai/gpt-4.1", "gpt-4.1"),
        ("anthropic/claude-3-5-haiku", "claude-3-5-haiku"),
        ("anthropic/claude-3.5-haiku", "claude-3-5-haiku"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
    ],
)
def test_client_names_resolve_to_table_entries(sent: str, priced_as: str) -> None:
    """Provider prefixes, dotted versions, date snapshots and `-latest` resolve to the
    entry the provider bills them as."""
    assert shipped_prices().price_for(sent) == price(priced_as)


def test_exact_snapshot_entry_beats_stripping() -> None:
    """A snapshot with its own price (gpt-4o-2024-05-13) is not priced as gpt-4o."""
    assert price("gpt-4o-2024-05-13").input == Decimal("5.00")
    assert price("gpt-4o-2024-08-06").input == Decimal("2.50")


def test_latest_alias_with_its_own_price_is_exact() -> None:
    """`chatgpt-4o-latest` is its own model, not `-latest` of something else."""
    assert price("chatgpt-4o-latest").output == Decimal("15.00")


@pytest.mark.parametrize(
    "model",
    [
        None,
        "",
        "llama-3.1-70b",
        "gpt-4o-audio-preview",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
        "mistral/gpt-4o",
        "GPT-4O",
    ],
)
def test_unknown_models_have_no_price(model: str | None) -> None:
    """Unknown names, other providers' prefixes, fine-tunes and variants get no price
    rather than a guess."""
    assert shipped_prices().price_for(model) is None


# Overrides


def test_override_wins_and_applies_to_snapshots_and_prefixes() -> None:
    """A workspace's price for gpt-4o replaces the list price for every name of gpt-4o."""
    mine = override("2.00", "1.00", "8.00")
    table = shipped_prices().with_overrides({"gpt-4o": mine})
    for sent in ("gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-05-13", "openai/gpt-4o"):
        assert table.price_for(sent) is mine, sent
    assert table.price_for("gpt-4o-mini") == price("gpt-4o-mini")


def test_override_leaves_shipped_table_alone() -> None:
    """Overriding returns a new table; the shipped one keeps list prices."""
    shipped_prices().with_overrides({"gpt-4o": override("1", "1", "1")})
    assert price("gpt-4o").input == Decimal("2.50")


def test_override_can_price_an_unlisted_model() -> None:
    """A workspace can price a model the shipped table does not know."""
    mine = override("0.90", "0.90", "0.90")
    table = shipped_prices().with_overrides({"llama-3.1-70b": mine})
    assert table.price_for("llama-3.1-70b") is mine
    assert table.entries()["llama-3.1-70b"] is mine


def test_later_overrides_win() -> None:
    """Overrides stack; the last one given for a name wins."""
    first, second = override("1", "1", "1"), override("2", "2", "2")
    table = PriceTable({}).with_overrides({"m": first}).with_overrides({"m": second})
    assert table.price_for("m") is second


# Cost


def test_cost_of_gpt_4o_with_cache() -> None:
    """gpt-4o, 1000 input of which 200 cached, 500 output:
    (800 x 2.50 + 200 x 1.25 + 500 x 10.00) / 1e6 = 7250 / 1e6 = $0.00725."""
    assert cost(price("gpt-4o"), 1000, 200, 500) == Decimal("0.00725")


def test_cost_of_claude_sonnet_4_5_with_cache() -> None:
    """claude-sonnet-4-5, 10000 input of which 4000 cache reads, 1000 output:
    (6000 x 3 + 4000 x 0.30 + 1000 x 15) / 1e6 = $0.0342."""
    assert cost(price("claude-sonnet-4-5-20250929"), 10_000, 4000, 1000) == Decimal("0.0342")


def test_cost_is_exact() -> None:
    """One gpt-5-nano output token costs exactly $0.0000004, a Decimal, not a float."""
    one = cost(price("gpt-5-nano"), 0, 0, 1)
    assert isinstance(one, Decimal)
    assert one == Decimal("0.0000004")
    assert cost(price("gpt-5-nano"), 0, 0, 3) == Decimal("0.0000012")


def test_embedding_cost_is_input_only() -> None:
    """A million text-embedding-3-small tokens cost $0.02; no output count is needed."""
    assert cost(price("text-embedding-3-small"), 1_000_000, None, None) == Decimal("0.02")


def test_missing_counts_count_as_zero() -> None:
    """With one side known, a missing count costs nothing."""
    gpt_4o = price("gpt-4o")
    assert cost(gpt_4o, None, None, 500) == Decimal("0.005")
    assert cost(gpt_4o, 1000, None, None) == Decimal("0.0025")


def test_cached_beyond_input_never_goes_negative() -> None:
    """More cached than input tokens bills no uncached input (never a negative amount)."""
    assert cost(price("gpt-4o"), 100, 150, 0) == Decimal("0.0001875")


def test_no_price_or_no_counts_means_no_cost() -> None:
    """Unpriced models and requests with neither input nor output counts have no cost
    (None, not $0)."""
    assert cost(None, 1000, 0, 500) is None
    assert cost(price("gpt-4o"), None, 200, None) is None
    assert cost(price("gpt-4o"), 0, 0, 0) == Decimal(0)
