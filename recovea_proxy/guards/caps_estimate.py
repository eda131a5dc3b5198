"""What a request may cost before it is sent: the amount a spend cap reserves for it,
and the rule for requests the gateway cannot meter.

| request                                          | reservation                     |
| GET, HEAD, OPTIONS or DELETE on any path; model  | none: it costs nothing and is   |
| lists, token counting (`/v1/models*`,            | never refused                   |
| `/v1/messages/count_tokens`)                     |                                 |
| a metered endpoint (chat, completions,           | priced with `pricing.cost`:     |
| responses, messages, embeddings, images,         | input + output estimate         |
| transcriptions)                                  |                                 |
| any other method on any other path (an unknown   | unmeterable: 402                |
| sub-path, files, batches, fine-tuning, ...)      | `budget_unverifiable` naming    |
|                                                  | the path, or the workspace's    |
|                                                  | unmetered reserve               |

The estimate of a metered request, an upper bound in the usual case:

    input  = request body bytes / 4 (+1), every input token priced at the highest
             input-side rate (a 1-hour cache write: 2x input on Anthropic)
    output = `max_completion_tokens`, `max_output_tokens` or `max_tokens` when the body
             sets one, else RECOVEA_CAP_DEFAULT_OUTPUT_TOKENS (0 for embeddings)
    at the requested `service_tier` when the price lists it, else the standard rates

A model the price table (under the workspace's overrides) does not know is priced at
the workspace's fallback price, or refused with 402 `budget_unverifiable` naming it.
A streamed upload (multipart, audio) is forwarded before its model is read: it is
priced at the fallback price (content length / 4 input tokens) or refused likewise.
Where the estimate can be wrong: text that takes more than one token per 4 bytes
(some scripts), output beyond `max_tokens` (providers do not exceed it), cache and
reasoning details the request cannot show — the settlement replaces the estimate
with the real cost either way.
"""

from __future__ import annotations

from typing import Any

from recovea_proxy.guards.caps_config import WorkspaceCaps, to_nano
from recovea_proxy.pricing.cost import Tokens, cost
from recovea_proxy.pricing.rates import Price
from recovea_proxy.providers.base import (
    CHAT,
    COMPLETIONS,
    COUNT_TOKENS,
    EMBEDDINGS,
    IMAGES,
    MESSAGES,
    MODELS,
    RESPONSES,
    TRANSCRIPTIONS,
)

FREE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
FREE_KINDS = frozenset({MODELS, COUNT_TOKENS})
METERED_KINDS = frozenset(
    {CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, MESSAGES, IMAGES, TRANSCRIPTIONS}
)
_OUTPUT_LIMITS = ("max_completion_tokens", "max_output_tokens", "max_tokens")


class Unverifiable(Exception):
    """The request cannot be bounded: its message says why (the model or path)."""


def output_limit(parsed: dict[str, Any] | None, kind: str, default: int) -> int:
    """The output tokens a request may produce, as its body bounds them."""
    if kind == EMBEDDINGS:
        return 0
    if parsed is not None:
        for name in _OUTPUT_LIMITS:
            value = parsed.get(name)
            if type(value) is int and value >= 0:
                return value
    return default


def price_of(caps: WorkspaceCaps, model: str | None) -> Price:
    """The price a reservation uses: the model's, else the workspace's fallback."""
    price = caps.price_for(model) if model else None
    if price is None:
        price = caps.fallback
        if price is None:
            if model:
                raise Unverifiable(
                    f"The model {model[:100]!r} has no known price and this workspace's "
                    "spend cap cannot bound it; set a fallback price or a price override."
                )
            raise Unverifiable(
                "The request names no model the gateway can price before sending it, and "
                "this workspace's spend cap cannot bound it; set a fallback price."
            )
    return price


class RateCard:
    """A model's rates at one tier as integer pico-USD per token, each read once from
    `pricing.cost` (the cost of a million tokens of that kind), so that pricing one
    request is integer arithmetic equal to `cost`'s exact result. Valid for inputs
    up to `above` tokens (the model's long-context threshold; None: any size)."""

    __slots__ = ("above", "cache_write_1h", "cache_write_5m", "cached", "input", "output")

    def __init__(self, rates: tuple[int, int, int, int, int], above: int | None) -> None:
        self.input, self.cached, self.cache_write_5m, self.cache_write_1h, self.output = rates
        self.above = above

    def nano(
        self, input_tokens: int, cached: int, write_5m: int, write_1h: int, output: int
    ) -> int:
        """The cost of these counts in nano-USD, rounded up."""
        uncached = max(input_tokens - cached - write_5m - write_1h, 0)
        pico = (
            uncached * self.input
            + cached * self.cached
            + write_5m * self.cache_write_5m
            + write_1h * self.cache_write_1h
            + output * self.output
        )
        return -(-pico // 1000)


_MILLION = 1_000_000
_PER_KIND = (
    Tokens(input=_MILLION),
    Tokens(input=_MILLION, cached=_MILLION),
    Tokens(input=_MILLION, cache_write_5m=_MILLION),
    Tokens(input=_MILLION, cache_write_1h=_MILLION),
    Tokens(output=_MILLION),
)


def rate_card(price: Price, tier: str | None) -> RateCard | None:
    """The card of `price` at `tier` (None: standard); None when the tier has no price
    or a rate is finer than a pico-USD per token (then `cost` prices each request)."""
    rates = []
    for tokens in _PER_KIND:
        usd = cost(price, tokens, tier, context_tokens=0)
        if usd is None:
            return None
        pico = usd * _MILLION  # USD per 1M tokens = pico-USD per token
        if pico != pico.to_integral_value():
            return None
        rates.append(int(pico))
    band = price.long_context
    return RateCard(
        (rates[0], rates[1], rates[2], rates[3], rates[4]), None if band is None else band.above
    )


def estimate(
    price: Price,
    input_tokens: int,
    output_tokens: int,
    tier: object = None,
    card: RateCard | None = None,
) -> int:
    """The reservation in nano-USD: every input token at the highest input-side rate,
    and the output, at `tier` when the price lists it (`card`: its rate card, when
    the caller has it)."""
    if card is not None and (card.above is None or input_tokens <= card.above):
        return card.nano(input_tokens, 0, 0, input_tokens, output_tokens)
    tokens = Tokens(input=input_tokens, cache_write_1h=input_tokens, output=output_tokens)
    amount = None
    if isinstance(tier, str) and tier in price.service_tiers:
        amount = cost(price, tokens, tier)
    if amount is None:
        amount = cost(price, tokens)
    if amount is None:  # the standard rates of this size are unpublished
        raise Unverifiable("The request's size has no published price; it cannot be bounded.")
    return to_nano(amount)


def unmeterable(route: str) -> Unverifiable:
    return Unverifiable(
        f"The gateway cannot meter {route[:200]!r} and this workspace's spend cap cannot "
        "bound it; allow unmetered paths with a reserve (`recovea cap options`)."
    )
