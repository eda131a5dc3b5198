"""The verdict on one day, provider and model: the provider's figures against the
ledger's, within a tolerance of `RECOVEA_RECONCILE_TOLERANCE_PCT` (default 1 %) of the
larger side (costs: and at least one micro-dollar, for rounding).

| verdict             | when (checked in this order) |
| `unmetered traffic` | the provider counted more requests than the ledger; or, where it   |
|                     | reports no request count (Anthropic), more input *and* more output |
|                     | tokens, or tokens for a model the ledger has no row of             |
| `token mismatch`    | any other difference in requests, input tokens (cache reads and    |
|                     | writes included), cache reads or output tokens                     |
| `price drift`       | the counts agree but the provider's cost and the rollup's realized |
|                     | cost differ, or the provider billed a model our table cannot price |
| `match`             | everything agrees (a cost the provider does not report is not      |
|                     | compared)                                                          |
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MATCH = "match"
UNMETERED = "unmetered traffic"
TOKEN_MISMATCH = "token mismatch"
PRICE_DRIFT = "price drift"
VERDICTS = (MATCH, UNMETERED, TOKEN_MISMATCH, PRICE_DRIFT)
#: the least cost difference that counts (amounts are exact; floats are not)
COST_FLOOR = Decimal("0.000001")


@dataclass(slots=True)
class Side:
    """One side's counts and cost for a day, provider and model (None: not reported)."""

    requests: int | None = None
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal | None = None
    #: ledger only: requests the rollup could not price
    unpriced: int = 0


def _within(a: float | Decimal, b: float | Decimal, share: Decimal, floor: Decimal) -> bool:
    a, b = Decimal(a), Decimal(b)
    return abs(a - b) <= max(floor, share * max(abs(a), abs(b)))


def _more(a: int, b: int, share: Decimal) -> bool:
    return a > b and not _within(a, b, share, Decimal(0))


def verdict(provider: Side, ledger: Side, tolerance_pct: float) -> str:
    """The verdict of one comparison (see the module's table)."""
    share = Decimal(str(tolerance_pct)) / 100
    zero = Decimal(0)
    if provider.requests is not None:
        if _more(provider.requests, ledger.requests or 0, share):
            return UNMETERED
    elif (ledger.requests or 0) == 0 and provider.input_tokens + provider.output_tokens > 0:
        return UNMETERED
    elif _more(provider.input_tokens, ledger.input_tokens, share) and _more(
        provider.output_tokens, ledger.output_tokens, share
    ):
        return UNMETERED
    pairs = [
        (provider.input_tokens, ledger.input_tokens),
        (provider.cached_tokens, ledger.cached_tokens),
        (provider.output_tokens, ledger.output_tokens),
    ]
    if provider.requests is not None:
        pairs.append((provider.requests, ledger.requests or 0))
    if not all(_within(a, b, share, zero) for a, b in pairs):
        return TOKEN_MISMATCH
    if provider.cost_usd is not None:
        if ledger.cost_usd is None or ledger.unpriced:
            if provider.cost_usd > COST_FLOOR:
                return PRICE_DRIFT
        elif not _within(provider.cost_usd, ledger.cost_usd, share, COST_FLOOR):
            return PRICE_DRIFT
    return MATCH
