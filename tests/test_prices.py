"""The shipped price table — every rate the providers publish: input, cache reads,
cache writes by lifetime, output, long-context bands, service tiers — model-name
resolution and overrides. (What a request costs under those rates: test_price_cost.py.)"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from recovea_proxy.pricing.rates import Price, Rates, parse_price
from recovea_proxy.pricing.table import PriceTable, parse_table, shipped_prices

FIELDS = {
    "provider",
    "input",
    "cached_input",
    "cache_write_5m",
    "cache_write_1h",
    "output",
    "long_context",
    "service_tiers",
    "source",
    "as_of",
}
RATES = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output")
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
    text = resources.files("recovea_proxy.pricing").joinpath("prices.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def raw_models() -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = raw_table()["models"]
    return models


def price(model: str) -> Price:
    found = shipped_prices().price_for(model)
    assert found is not None, model
    return found


def rates(input_: str, cached: str, output: str, write_5m: str = "", write_1h: str = "") -> Rates:
    return Rates(
        Decimal(input_),
        Decimal(cached),
        Decimal(write_5m or input_),
        Decimal(write_1h or input_),
        Decimal(output),
    )


def override(input_: str, cached: str, output: str) -> Price:
    return Price(rates(input_, cached, output), "workspace", "2025-01-01")


# The shipped table


def test_table_says_what_its_prices_are() -> None:
    """The table carries a version, the date it was taken, how it was compiled, and a
    note that prices are list prices, overridable."""
    document = raw_table()
    assert document["version"]
    assert date.fromisoformat(document["taken"]) >= date.fromisoformat(document["version"])
    assert "checked against its source" in document["provenance"]
    assert "list price" in document["note"].lower()
    assert "overrid" in document["note"].lower()


def test_required_models_are_priced() -> None:
    """Every model a user is likely to send today has a shipped price."""
    missing = [m for m in REQUIRED if m not in raw_models()]
    assert missing == []


@pytest.mark.parametrize("name", sorted(raw_models()))
def test_entry_is_well_formed(name: str) -> None:
    """Each entry has exactly the documented fields, decimal strings (cache writes may be
    null), a provider page for every rate and a date no later than the table's version."""
    entry = raw_models()[name]
    assert set(entry) == FIELDS
    for field in RATES:
        if entry[field] is None:
            assert field.startswith("cache_write") and entry["provider"] == "openai"
            continue
        assert isinstance(entry[field], str)
        assert Decimal(entry[field]) >= 0
    hosts = SOURCE_HOSTS[entry["provider"]]
    sources = [entry["source"]]
    if entry["long_context"] is not None:
        sources.append(entry["long_context"]["source"])
    sources += [tier["source"] for tier in entry["service_tiers"].values()]
    for source in sources:
        assert source.startswith("https://") and any(host in source for host in hosts)
    as_of = date.fromisoformat(entry["as_of"])
    assert date(2022, 1, 1) <= as_of <= date.fromisoformat(raw_table()["version"])


@pytest.mark.parametrize("name", sorted(raw_models()))
def test_prices_are_ordered_sensibly(name: str) -> None:
    """Cached input never costs more than input, nor a cache write less; a 1-hour write
    never less than a 5-minute one; chat output never less than input; embeddings bill
    input only."""
    p = price(name).standard
    assert p.cached_input <= p.input <= p.cache_write_5m <= p.cache_write_1h
    if "embedding" in name:
        assert (p.cached_input, p.output) == (p.input, Decimal(0))
    else:
        assert p.output >= p.input > 0


ANTHROPIC = sorted(n for n, e in raw_models().items() if e["provider"] == "anthropic")
OPENAI = sorted(n for n, e in raw_models().items() if e["provider"] == "openai")


@pytest.mark.parametrize("name", ANTHROPIC)
def test_anthropic_cache_rates_follow_the_published_multipliers(name: str) -> None:
    """Anthropic bills a cache read at 0.1x the base input price, a 5-minute cache write
    at 1.25x and a 1-hour write at 2x, for every model (to the cent: Claude 3 Haiku's
    $0.025 read and $0.3125 write are listed as $0.03 and $0.30)."""
    p = price(name).standard
    assert abs(p.cached_input - p.input / 10) < Decimal("0.01")
    assert abs(p.cache_write_5m - p.input * Decimal("1.25")) < Decimal("0.015")
    assert p.cache_write_1h == p.input * 2


@pytest.mark.parametrize("name", ANTHROPIC)
def test_anthropic_batches_cost_half(name: str) -> None:
    """Every Anthropic model has the Message Batches tier at 50% of every rate; the
    Priority Tier, sold by contract, has no list price."""
    tiers = price(name).service_tiers
    assert tiers["batch"].multiplier == Decimal("0.5")
    assert "priority" not in tiers


def test_anthropic_long_context_band() -> None:
    """Claude Sonnet 4 and 4.5 past 200k input tokens: input $6, output $22.50, and the
    cache multipliers on top of those ($7.50 and $12 writes, $0.60 reads); no other
    Anthropic model has a band."""
    banded = {name for name in ANTHROPIC if price(name).long_context is not None}
    assert banded == {"claude-sonnet-4", "claude-sonnet-4-5"}
    for name in banded:
        band = price(name).long_context
        assert band is not None and band.above == 200_000
        assert band.rates == rates("6.00", "0.60", "22.50", "7.50", "12.00")


@pytest.mark.parametrize("name", OPENAI)
def test_openai_cache_writes_bill_as_input(name: str) -> None:
    """OpenAI charges no premium for writing its prompt cache: the table says null, and
    a write is billed as plain input."""
    entry = raw_models()[name]
    assert entry["cache_write_5m"] is None and entry["cache_write_1h"] is None
    p = price(name).standard
    assert p.cache_write_5m == p.cache_write_1h == p.input


def test_openai_service_tiers() -> None:
    """Flex is half price where OpenAI offers it; priority has its own published rates
    (spot checks); scale, sold by contract, has no list price anywhere."""
    flex = {name for name in OPENAI if "flex" in price(name).service_tiers}
    assert flex == {"gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini"}
    for name in flex:
        assert price(name).service_tiers["flex"].multiplier == Decimal("0.5")
    assert price("gpt-5").service_tiers["priority"].rates == rates("2.50", "0.25", "20.00")
    assert price("gpt-4o").service_tiers["priority"].rates == rates("4.25", "2.125", "17.00")
    assert price("gpt-4.1-mini").service_tiers["priority"].rates == rates("0.70", "0.175", "2.80")
    assert all("scale" not in price(name).service_tiers for name in OPENAI)


@pytest.mark.parametrize("name", sorted(raw_models()))
def test_tiers_cost_what_their_names_say(name: str) -> None:
    """A batch or flex tier is a discount (multiplier below 1); a priority tier costs more
    than standard for every rate."""
    p = price(name)
    for tier_name, tier in p.service_tiers.items():
        if tier_name in ("batch", "flex"):
            assert tier.multiplier is not None and 0 < tier.multiplier < 1
        else:
            assert tier_name == "priority" and tier.rates is not None
            for rate in RATES:
                assert getattr(tier.rates, rate) > getattr(p.standard, rate)


def test_shipped_prices_are_read_once() -> None:
    """The shipped table is loaded once and shared."""
    assert shipped_prices() is shipped_prices()
    assert shipped_prices().version == raw_table()["version"]


def test_known_list_prices() -> None:
    """Spot checks of the published prices (USD per 1M tokens: input, cached, output)."""
    assert price("gpt-4o") == Price(
        rates("2.50", "1.25", "10.00"),
        "https://platform.openai.com/docs/pricing",
        "2024-10-02",
        service_tiers=price("gpt-4o").service_tiers,
    )
    assert price("claude-opus-4-5").standard == rates("5", "0.50", "25", "6.25", "10")
    triples = {
        "gpt-5": ("1.25", "0.125", "10"),
        "gpt-4o-mini": ("0.15", "0.075", "0.60"),
        "claude-sonnet-4-5": ("3", "0.30", "15"),
        "claude-3-5-haiku": ("0.80", "0.08", "4"),
        "text-embedding-3-small": ("0.02", "0.02", "0"),
    }
    for model, (i, c, o) in triples.items():
        p = price(model).standard
        assert (p.input, p.cached_input, p.output) == (Decimal(i), Decimal(c), Decimal(o))


def test_the_table_reads_back_as_written() -> None:
    """An entry's `as_json` is what the table holds (null cache writes shown as the input
    price they bill at), so the admin API shows exactly what prices a request."""
    for name in raw_models():
        again = parse_price(name, price(name).as_json())
        assert again == price(name), name
    shown = price("claude-sonnet-4-5").as_json()
    assert shown["long_context"]["input"] == "6.00"
    assert (
        shown["service_tiers"]["batch"]
        == raw_models()["claude-sonnet-4-5"]["service_tiers"]["batch"]
    )


def entry(**changes: Any) -> dict[str, Any]:
    """A valid entry with `changes` applied."""
    base: dict[str, Any] = {
        "input": "1",
        "cached_input": "0.1",
        "cache_write_5m": None,
        "cache_write_1h": None,
        "output": "2",
        "long_context": None,
        "service_tiers": {},
        "source": "x",
        "as_of": "2025-01-01",
    }
    return {**base, **changes}


def parse(one: dict[str, Any]) -> PriceTable:
    return parse_table(json.dumps({"version": "1", "note": "", "models": {"m": one}}))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (entry(input=2.5), "decimal string"),
        (entry(cache_write_1h=6), "decimal string"),
        (entry(output="-1"), "not a price"),
        (entry(as_of="May 2025"), "as_of"),
        (entry(long_context={"above": 200_000, "input": "6", "cached_input": "1"}), "missing"),
        (entry(long_context={"above": "200k"}), "above"),
        (entry(long_context={"above": 0, **entry()}), "above"),
        (entry(service_tiers={"flex": {"multiplier": 0.5, "source": "x"}}), "decimal string"),
        (entry(service_tiers={"flex": {"multiplier": "0.5"}}), "source"),
        (entry(service_tiers={"flex": {"multiplier": "0.5", "input": "1", "source": "x"}}), "own"),
        (entry(service_tiers={"priority": {"input": "2", "source": "x"}}), "missing"),
        (entry(service_tiers=["flex"]), "object"),
    ],
)
def test_malformed_entries_are_refused(bad: dict[str, Any], message: str) -> None:
    """A price written as a JSON number (a float) is rejected, not silently rounded; so
    is a negative one, a bad date, a band or tier with a rate missing, a bad threshold,
    a tier without its source, or a multiplier tier that also lists rates."""
    with pytest.raises(ValueError, match=message):
        parse(bad)


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
    assert price("gpt-4o-2024-05-13").standard.input == Decimal("5.00")
    assert price("gpt-4o-2024-08-06").standard.input == Decimal("2.50")


def test_latest_alias_with_its_own_price_is_exact() -> None:
    """`chatgpt-4o-latest` is its own model, not `-latest` of something else."""
    assert price("chatgpt-4o-latest").standard.output == Decimal("15.00")


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
    assert price("gpt-4o").standard.input == Decimal("2.50")


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
