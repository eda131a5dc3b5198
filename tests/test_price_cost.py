"""`pricing.cost`, the one price function: what a request's tokens cost under its
model's rates, at the service tier that served it and in its long-context band. Every
amount is worked by hand from the published rates (USD per 1M tokens)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from recovea_proxy.pricing.cost import Tokens, cost
from recovea_proxy.pricing.rates import LongContext, Price, Rates, ServiceTier
from recovea_proxy.pricing.table import PriceTable, shipped_prices


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


def tokens(
    input_: int | None, cached: int | None, output: int | None, w5: int = 0, w1h: int = 0
) -> Tokens:
    return Tokens(input_, cached, w5, w1h, output)


# Input, cache reads, output


def test_cost_of_gpt_4o_with_cache() -> None:
    """gpt-4o, 1000 input of which 200 cached, 500 output:
    (800 x 2.50 + 200 x 1.25 + 500 x 10.00) / 1e6 = 7250 / 1e6 = $0.00725."""
    assert cost(price("gpt-4o"), tokens(1000, 200, 500)) == Decimal("0.00725")


def test_cost_of_claude_sonnet_4_5_with_cache_reads() -> None:
    """claude-sonnet-4-5, 10000 input of which 4000 cache reads, 1000 output:
    (6000 x 3 + 4000 x 0.30 + 1000 x 15) / 1e6 = $0.0342."""
    assert cost(price("claude-sonnet-4-5-20250929"), tokens(10_000, 4000, 1000)) == Decimal(
        "0.0342"
    )


def test_cost_is_exact() -> None:
    """One gpt-5-nano output token costs exactly $0.0000004, a Decimal, not a float."""
    one = cost(price("gpt-5-nano"), tokens(0, 0, 1))
    assert isinstance(one, Decimal)
    assert one == Decimal("0.0000004")
    assert cost(price("gpt-5-nano"), tokens(0, 0, 3)) == Decimal("0.0000012")


def test_embedding_cost_is_input_only() -> None:
    """A million text-embedding-3-small tokens cost $0.02; no output count is needed."""
    assert cost(price("text-embedding-3-small"), Tokens(input=1_000_000)) == Decimal("0.02")


def test_missing_counts_count_as_zero() -> None:
    """With one side known, a missing count costs nothing."""
    gpt_4o = price("gpt-4o")
    assert cost(gpt_4o, Tokens(output=500)) == Decimal("0.005")
    assert cost(gpt_4o, Tokens(input=1000)) == Decimal("0.0025")


def test_cached_beyond_input_never_goes_negative() -> None:
    """More cached than input tokens bills no uncached input (never a negative amount)."""
    assert cost(price("gpt-4o"), tokens(100, 150, 0)) == Decimal("0.0001875")


def test_no_price_or_no_counts_means_no_cost() -> None:
    """Unpriced models and requests with neither input nor output counts have no cost
    (None, not $0)."""
    assert cost(None, tokens(1000, 0, 500)) is None
    assert cost(price("gpt-4o"), Tokens(cached=200)) is None
    assert cost(price("gpt-4o"), tokens(0, 0, 0)) == Decimal(0)


# Cache writes


def test_anthropic_cache_writes_cost_more_than_plain_input() -> None:
    """The issue's case: claude-sonnet-4-5, 2000 tokens written to the cache versus 2000
    more plain input. Plain: 2100 x 3 + 50 x 15 = $0.00705. Written for 5 minutes:
    100 x 3 + 2000 x 3.75 + 50 x 15 = $0.00855. For 1 hour: 100 x 3 + 2000 x 6 +
    50 x 15 = $0.01305."""
    sonnet = price("claude-sonnet-4-5")
    assert cost(sonnet, tokens(2100, 0, 50)) == Decimal("0.00705")
    assert cost(sonnet, tokens(2100, 0, 50, w5=2000)) == Decimal("0.00855")
    assert cost(sonnet, tokens(2100, 0, 50, w1h=2000)) == Decimal("0.01305")


def test_reads_and_both_writes_in_one_request() -> None:
    """claude-haiku-4-5: 10000 input = 1000 uncached + 6000 reads + 2000 5 m writes +
    1000 1 h writes; 300 output: 1000 x 1 + 6000 x 0.10 + 2000 x 1.25 + 1000 x 2 +
    300 x 5 = 7600 / 1e6 = $0.0076."""
    assert cost(price("claude-haiku-4-5"), tokens(10_000, 6000, 300, 2000, 1000)) == Decimal(
        "0.0076"
    )


def test_openai_cache_writes_cost_plain_input() -> None:
    """gpt-4o bills a cache write as input: 1000 input, 400 of it a write, costs what
    1000 plain input does."""
    gpt_4o = price("gpt-4o")
    assert cost(gpt_4o, tokens(1000, 0, 0, w5=400)) == cost(gpt_4o, tokens(1000, 0, 0))


# Long context


def test_long_context_band_prices_the_whole_request() -> None:
    """claude-sonnet-4-5 with 250000 input (of which 50000 cache reads and 10000 5 m
    writes) and 1000 output is past 200k: every token at the band's rates:
    190000 x 6 + 50000 x 0.60 + 10000 x 7.50 + 1000 x 22.50 = $1.2675."""
    assert cost(price("claude-sonnet-4-5"), tokens(250_000, 50_000, 1000, w5=10_000)) == Decimal(
        "1.2675"
    )


def test_the_band_starts_above_its_threshold() -> None:
    """Exactly 200000 input tokens is standard (200000 x 3 = $0.60); one more is long
    context (200001 x 6 = $1.200006). Cache reads count toward the threshold."""
    sonnet = price("claude-sonnet-4")
    assert cost(sonnet, tokens(200_000, 0, 0)) == Decimal("0.6")
    assert cost(sonnet, tokens(200_001, 0, 0)) == Decimal("1.200006")
    assert cost(sonnet, tokens(200_001, 200_000, 0)) == Decimal("0.120006")  # 1 x 6 + 2e5 x 0.6


def test_models_without_a_band_never_pay_one() -> None:
    """claude-opus-4-5 has no long-context band: 300000 input cost 300000 x 5 = $1.50."""
    assert cost(price("claude-opus-4-5"), tokens(300_000, 0, 0)) == Decimal("1.5")


def test_a_sum_of_requests_is_priced_in_their_band() -> None:
    """Three 100k-token sonnet requests sum to 300k but each is standard: the rollup
    passes the band (`context_tokens`), so the sum costs 3 x 100000 x 3 = $0.90."""
    sonnet = price("claude-sonnet-4-5")
    assert cost(sonnet, tokens(300_000, 0, 0), context_tokens=100_000) == Decimal("0.9")
    assert cost(sonnet, tokens(300_000, 0, 0)) == Decimal("1.8")  # one request of 300k


# Service tiers


def test_flex_is_half_price() -> None:
    """gpt-5 at flex: (1000 x 0.625 + 1000 x 5) / 1e6 = $0.005625."""
    assert cost(price("gpt-5"), tokens(1000, 0, 1000), "flex") == Decimal("0.005625")


def test_priority_has_its_own_rates() -> None:
    """gpt-4o at priority: 1000 input of which 200 cached, 500 output:
    800 x 4.25 + 200 x 2.125 + 500 x 17 = $0.012325."""
    assert cost(price("gpt-4o"), tokens(1000, 200, 500), "priority") == Decimal("0.012325")


def test_batch_discount_stacks_with_cache_and_long_context() -> None:
    """claude-sonnet-4-5 in a batch, 250000 input with 10000 1 h writes, 2000 output:
    half the long-context rates: (240000 x 6 + 10000 x 12 + 2000 x 22.50) x 0.5 / 1e6
    = $0.8025."""
    assert cost(
        price("claude-sonnet-4-5"), tokens(250_000, 0, 2000, w1h=10_000), "batch"
    ) == Decimal("0.8025")


@pytest.mark.parametrize(
    ("model", "tier"),
    [
        ("gpt-4o", "scale"),  # sold by contract: no list price
        ("gpt-4o", "flex"),  # not offered for gpt-4o
        ("claude-sonnet-4-5", "priority"),  # sold by contract
        ("claude-sonnet-4-5", "economy"),  # a tier nobody has heard of
    ],
)
def test_a_tier_without_a_published_price_is_unpriced(model: str, tier: str) -> None:
    """A request served at a tier the model's entry does not list has no cost — never
    the standard price."""
    assert cost(price(model), tokens(1000, 0, 100), tier) is None


def test_a_tier_with_its_own_rates_has_no_long_context_price() -> None:
    """A tier with rates of its own says nothing of a long-context band: a request in
    the band at that tier is unpriced, below it it pays the tier's rates."""
    banded = Price(
        rates("1", "0.1", "2"),
        "x",
        "2025-01-01",
        LongContext(100, rates("2", "0.2", "4"), "x"),
        {"priority": ServiceTier("x", rates=rates("3", "0.3", "6"))},
    )
    assert cost(banded, tokens(100, 0, 0), "priority") == Decimal("0.0003")
    assert cost(banded, tokens(101, 0, 0), "priority") is None


def test_the_table_knows_every_band_threshold() -> None:
    """The rollup splits a workspace's hour at every threshold any entry has."""
    assert shipped_prices().context_thresholds() == [200_000]
    mine = Price(
        rates("1", "1", "1"), "x", "2025-01-01", LongContext(128_000, rates("2", "2", "2"), "x")
    )
    table = shipped_prices().with_overrides({"house": mine})
    assert table.context_thresholds() == [128_000, 200_000]
    assert PriceTable({}).context_thresholds() == []
