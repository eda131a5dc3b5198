"""What the mock served, by provider, UTC day and model — the figures its usage and cost
reports (`usage_reports`) are made of — and the test switches that perturb them.

Every request the mock renders a completion for (chat, completions, responses,
messages) is counted with the tokens its usage reports, and priced per request on the
shipped price table (the gateway's own, so a report of traffic that all went through
the gateway matches the gateway's rollup). A request whose usage the mock left out
(`x-mock-fault: no-usage`) is counted too: the provider bills what it served.

Switches (`PUT /_mock/usage-reports`, a JSON object; each key optional, each keyed by
provider `openai` / `anthropic`):

| `extra`        | `[{"provider", "model", "requests", "input_tokens", "output_tokens",      |
|                | "day"?}]`: traffic the provider saw and the mock did not serve (a bypass) |
| `skew`         | `{"openai": {"output_tokens": 7}}`: added to every model's usage (a token |
|                | mismatch); also `input_tokens`, `cached_tokens`                           |
| `price_factor` | `{"openai": 2}`: costs multiplied (price drift)                           |
| `fail`         | `{"openai": {"status": 429, "times": 1, "retry_after": "1"}}`: the next   |
|                | `times` report calls answer `status`                                      |
| `malformed`    | `{"openai": 1}`: the next N pages after a first one are cut-off JSON      |
| `page_size`    | results per page (default 1: every report is paged)                       |

`GET /_mock/usage-reports` shows the book and the switches; `DELETE` empties both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from recovea_proxy.mock_provider.controls import Plan
from recovea_proxy.pricing.cost import Tokens, cost
from recovea_proxy.pricing.table import shipped_prices

COUNTS = ("requests", "input_tokens", "cached_tokens", "write_5m", "write_1h", "output_tokens")


@dataclass(slots=True)
class Served:
    """One provider's day and model: counts, and the cost of input and output."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    input_cost: Decimal | None = None
    output_cost: Decimal | None = None

    def add(self, tokens: dict[str, int], model: str) -> None:
        for name in COUNTS:
            self.counts[name] += tokens.get(name, 0)
        price = shipped_prices().price_for(model)
        size = tokens.get("input_tokens", 0)
        paid_in = cost(
            price,
            Tokens(
                size,
                tokens.get("cached_tokens", 0),
                tokens.get("write_5m", 0),
                tokens.get("write_1h", 0),
                0,
            ),
            context_tokens=size,
        )
        paid_out = cost(
            price, Tokens(0, output=tokens.get("output_tokens", 0)), context_tokens=size
        )
        if paid_in is not None and paid_out is not None:
            self.input_cost = (self.input_cost or Decimal(0)) + paid_in
            self.output_cost = (self.output_cost or Decimal(0)) + paid_out


@dataclass(slots=True)
class UsageBook:
    """Served figures by (provider, day, model), and the switches."""

    served: dict[tuple[str, date, str], Served] = field(default_factory=dict)
    switches: dict[str, Any] = field(default_factory=dict)

    def record(self, provider: str, model: str, tokens: dict[str, int]) -> None:
        day = datetime.now(UTC).date()
        self.served.setdefault((provider, day, model), Served()).add(tokens, model)

    def figures(self, provider: str) -> dict[tuple[date, str], Served]:
        """The provider's figures with the bypass and skew switches applied."""
        out: dict[tuple[date, str], Served] = {}
        for (name, day, model), served in self.served.items():
            if name == provider:
                copy = out.setdefault((day, model), Served())
                for count in COUNTS:
                    copy.counts[count] += served.counts[count]
                copy.input_cost, copy.output_cost = served.input_cost, served.output_cost
        for extra in self.switches.get("extra", []):
            if extra.get("provider") == provider:
                day = date.fromisoformat(extra.get("day") or datetime.now(UTC).date().isoformat())
                out.setdefault((day, extra["model"]), Served()).add(
                    {k: int(extra.get(k, 0)) for k in COUNTS}, extra["model"]
                )
        skew = self.switches.get("skew", {}).get(provider, {})
        for served in out.values():
            for count, delta in skew.items():
                served.counts[count] = max(0, served.counts[count] + int(delta))
        factor = Decimal(str(self.switches.get("price_factor", {}).get(provider, 1)))
        for served in out.values():
            if served.input_cost is not None and served.output_cost is not None:
                served.input_cost *= factor
                served.output_cost *= factor
        return out

    def take(self, switch: str, provider: str) -> dict[str, Any] | None:
        """Use up one of a counted switch (`fail`, `malformed`) of the provider."""
        spec = self.switches.get(switch, {}).get(provider)
        if not spec:
            return None
        if isinstance(spec, int):
            self.switches[switch][provider] = spec - 1
            return {"times": spec}
        spec["times"] = int(spec.get("times", 1)) - 1
        if spec["times"] < 0:
            return None
        return dict(spec)


BOOK_KEY = web.AppKey("mock_usage_book", UsageBook)


def record_served(
    request: web.Request, provider: str, body: dict[str, Any], plan: Plan, limit: Any
) -> None:
    """Count one rendered completion with the tokens its usage reports."""
    model = body.get("model")
    if not isinstance(model, str):
        return
    parts = plan.input_parts()
    output, _ = plan.output_tokens(limit)
    request.app[BOOK_KEY].record(
        provider,
        model,
        {
            "requests": 1,
            "input_tokens": plan.shape.input_tokens,
            "cached_tokens": parts.read,
            "write_5m": parts.write_5m,
            "write_1h": parts.write_1h,
            "output_tokens": output,
        },
    )


def _book_json(book: UsageBook) -> dict[str, Any]:
    served = [
        {
            "provider": provider,
            "day": day.isoformat(),
            "model": model,
            **entry.counts,
            "input_cost_usd": str(entry.input_cost) if entry.input_cost is not None else None,
            "output_cost_usd": str(entry.output_cost) if entry.output_cost is not None else None,
        }
        for (provider, day, model), entry in sorted(book.served.items())
    ]
    return {"served": served, "switches": book.switches}


async def show(request: web.Request) -> web.Response:
    """`GET /_mock/usage-reports`."""
    return web.json_response(body=orjson.dumps(_book_json(request.app[BOOK_KEY])))


async def switch(request: web.Request) -> web.Response:
    """`PUT /_mock/usage-reports`: replace the switches."""
    switches = orjson.loads(await request.read() or b"{}")
    if not isinstance(switches, dict):
        return web.json_response({"error": "a JSON object"}, status=400)
    request.app[BOOK_KEY].switches = switches
    return web.json_response(body=orjson.dumps(_book_json(request.app[BOOK_KEY])))


async def reset(request: web.Request) -> web.Response:
    """`DELETE /_mock/usage-reports`: forget what was served and every switch."""
    book = request.app[BOOK_KEY]
    book.served.clear()
    book.switches = {}
    return web.Response(status=204)
