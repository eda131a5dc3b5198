"""`cost`: the one function that says what a request costs. The rollup prices the ledger
with it; a spend-cap reservation prices its upper bound with it; nothing else prices.

    cost = ( uncached input x input                 uncached input = input
           + cache reads    x cached_input                           - cache reads
           + 5 m writes     x cache_write_5m                         - cache writes
           + 1 h writes     x cache_write_1h
           + output         x output ) / 1,000,000

with the rates of the model's entry for the tier that served the request and the
request's input size (`Price.rates`). The result is exact (`Decimal`), never rounded.

Applied to the sums of several requests it gives the sum of their costs, as long as
they share the model, the tier and the long-context band — which is how the rollup
uses it: it sums like requests in SQL and prices each sum once.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from recovea_proxy.pricing.rates import Price

PER_TOKENS = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Tokens:
    """A request's billable token counts (None: not reported), normalized across
    providers: `input` is every input token, cache reads and writes included."""

    input: int | None = None
    #: cache reads (part of `input`)
    cached: int | None = None
    #: input written to the prompt cache for 5 minutes / 1 hour (part of `input`)
    cache_write_5m: int | None = None
    cache_write_1h: int | None = None
    #: every output token, reasoning included
    output: int | None = None


def cost(
    price: Price | None,
    tokens: Tokens,
    tier: str | None = None,
    *,
    context_tokens: int | None = None,
) -> Decimal | None:
    """USD for `tokens` at service tier `tier` (None: standard), exact; None when the
    model is unpriced, the provider publishes no price for that tier and size, or no
    token count was reported at all.

    `context_tokens` picks the long-context band: the request's input size, which is
    `tokens.input` for one request (the default); for a sum of requests in one band,
    any input size in that band.
    """
    if price is None or (tokens.input is None and tokens.output is None):
        return None
    size = (tokens.input or 0) if context_tokens is None else context_tokens
    rates = price.rates(tier, size)
    if rates is None:
        return None
    cached = tokens.cached or 0
    short = tokens.cache_write_5m or 0
    long = tokens.cache_write_1h or 0
    uncached = max((tokens.input or 0) - cached - short - long, 0)
    total = (
        uncached * rates.input
        + cached * rates.cached_input
        + short * rates.cache_write_5m
        + long * rates.cache_write_1h
        + (tokens.output or 0) * rates.output
    )
    return total / PER_TOKENS
