"""One model's prices: every rate its provider publishes, and which of them a request
pays.

All rates are USD per 1M tokens, exact `Decimal`s.

| rate             | what it bills                                                   |
| ---------------- | --------------------------------------------------------------- |
| `input`          | input tokens that neither read nor wrote the prompt cache       |
| `cached_input`   | cache reads (OpenAI cached input, Anthropic cache hits)         |
| `cache_write_5m` | input written to the cache for 5 minutes (Anthropic: 1.25x)     |
| `cache_write_1h` | input written to the cache for 1 hour (Anthropic: 2x)           |
| `output`         | output tokens, reasoning included                               |

A model may also have a long-context band (`above` N input tokens, counting cache
reads and writes, the whole request is billed at the band's rates) and service tiers
the provider bills differently (`flex`, `priority`, `batch`, ...): a tier is either a
multiplier of the standard (or long-context) rates, as the providers publish batch
and flex discounts, or a set of rates of its own, as OpenAI publishes priority. A
tier the entry does not list has no price: a request served at it is unpriced, never
priced as standard.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

#: the rates of an entry, in the order they are listed
RATE_FIELDS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output")
#: rates an entry may leave null: the provider charges no premium for cache writes
#: (OpenAI), so writes bill as plain input
CACHE_WRITES = ("cache_write_5m", "cache_write_1h")
#: the largest price accepted, USD per 1M tokens
PRICE_MAX = Decimal(1_000_000)
#: the largest long-context threshold accepted, tokens
ABOVE_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per 1M tokens of each kind (see the module's table)."""

    input: Decimal
    cached_input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    output: Decimal

    def scaled(self, multiplier: Decimal) -> Rates:
        """Every rate times `multiplier` (a tier's discount or premium)."""
        return Rates(*(getattr(self, name) * multiplier for name in RATE_FIELDS))

    def as_json(self) -> dict[str, str]:
        """The rates as decimal strings, by name."""
        return {name: str(getattr(self, name)) for name in RATE_FIELDS}


@dataclass(frozen=True, slots=True)
class LongContext:
    """A request with more than `above` input tokens pays `rates` for all its tokens."""

    above: int
    rates: Rates
    source: str


@dataclass(frozen=True, slots=True)
class ServiceTier:
    """How a service tier bills: `multiplier` times the rates of the request's band, or
    `rates` of its own (which have no long-context band)."""

    source: str
    multiplier: Decimal | None = None
    rates: Rates | None = None


@dataclass(frozen=True)
class Price:
    """Every rate of one model, and where they came from."""

    standard: Rates
    source: str
    as_of: str
    long_context: LongContext | None = None
    service_tiers: Mapping[str, ServiceTier] = field(default_factory=dict)

    def rates(self, tier: str | None, context_tokens: int) -> Rates | None:
        """The rates a request pays at service tier `tier` (None: standard) with
        `context_tokens` input tokens (cache reads and writes included); None when
        the provider publishes no price for that combination."""
        band = self.long_context
        base = band.rates if band is not None and context_tokens > band.above else self.standard
        if tier is None:
            return base
        served = self.service_tiers.get(tier)
        if served is None:
            return None
        if served.multiplier is not None:
            return base.scaled(served.multiplier)
        if base is not self.standard:
            return None  # the tier's own rates say nothing of long contexts
        return served.rates

    def as_json(self) -> dict[str, Any]:
        """The entry in the shape `parse_price` reads (decimals as strings)."""
        band = self.long_context
        return {
            **self.standard.as_json(),
            "long_context": None
            if band is None
            else {"above": band.above, **band.rates.as_json(), "source": band.source},
            "service_tiers": {
                name: _tier_json(tier) for name, tier in sorted(self.service_tiers.items())
            },
            "source": self.source,
            "as_of": self.as_of,
        }


def _tier_json(tier: ServiceTier) -> dict[str, Any]:
    if tier.multiplier is not None:
        return {"multiplier": str(tier.multiplier), "source": tier.source}
    assert tier.rates is not None
    return {**tier.rates.as_json(), "source": tier.source}


def parse_price(name: str, entry: Mapping[str, Any]) -> Price:
    """One table entry (shipped or an override); ValueError naming what is wrong.

    Rates are decimal strings (a JSON number would be rounded through a float);
    `cache_write_5m` and `cache_write_1h` may be null (billed as input); `as_of` is
    an ISO date; `long_context` is null or `{above, <rates>, source}`;
    `service_tiers` maps a tier name to `{multiplier, source}` or `{<rates>, source}`.
    """
    as_of = str(entry["as_of"])
    try:
        date.fromisoformat(as_of)
    except ValueError:
        raise ValueError(f"{name}: as_of {as_of!r} is not a YYYY-MM-DD date") from None
    band = entry.get("long_context")
    tiers = entry.get("service_tiers") or {}
    if not isinstance(tiers, Mapping):
        raise ValueError(f"{name}: service_tiers must be an object")
    return Price(
        standard=parse_rates(name, entry),
        source=str(entry["source"]),
        as_of=as_of,
        long_context=None if band is None else _long_context(f"{name} long_context", band),
        service_tiers={
            str(tier): _service_tier(f"{name} service tier {tier}", spec)
            for tier, spec in tiers.items()
        },
    )


def parse_rates(name: str, entry: Mapping[str, Any]) -> Rates:
    """The five rates of an entry; cache writes left null bill as input."""
    values = {
        rate: _decimal(name, entry, rate)
        for rate in RATE_FIELDS
        if not (rate in CACHE_WRITES and entry.get(rate) is None)
    }
    for rate in CACHE_WRITES:
        values.setdefault(rate, values["input"])
    return Rates(**values)


def _long_context(name: str, band: Any) -> LongContext:
    if not isinstance(band, Mapping):
        raise ValueError(f"{name} must be an object or null")
    above = band.get("above")
    if type(above) is not int or not 0 < above <= ABOVE_MAX:
        raise ValueError(f"{name}: above must be a token count, not {above!r}")
    return LongContext(above, parse_rates(name, band), _source(name, band))


def _service_tier(name: str, spec: Any) -> ServiceTier:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{name} must be an object")
    if "multiplier" in spec:
        if set(spec) - {"multiplier", "source"}:
            raise ValueError(f"{name}: a multiplier tier has no rates of its own")
        return ServiceTier(_source(name, spec), multiplier=_decimal(name, spec, "multiplier"))
    return ServiceTier(_source(name, spec), rates=parse_rates(name, spec))


def _source(name: str, spec: Mapping[str, Any]) -> str:
    source = spec.get("source")
    if not isinstance(source, str) or not source:
        raise ValueError(f"{name}: source must say where the rates come from")
    return source


def _decimal(name: str, entry: Mapping[str, Any], rate: str) -> Decimal:
    if rate not in entry:
        raise ValueError(f"{name}: {rate} is missing")
    raw = entry[rate]
    if not isinstance(raw, str):
        raise ValueError(f"{name}: {rate} must be a decimal string, not {raw!r}")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{name}: {rate} {raw!r} is not a decimal") from None
    if not value.is_finite() or not 0 <= value <= PRICE_MAX:
        raise ValueError(f"{name}: {rate} {raw!r} is not a price")
    return value
