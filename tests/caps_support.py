"""What the spend-cap tests share: short lease settings, request bodies and their
estimated cost, setting a cap and waiting for every gateway to load it, and sending
one request or a concurrent burst."""

from __future__ import annotations

import asyncio
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import httpx
import orjson

from recovea_proxy.guards.caps_estimate import estimate
from recovea_proxy.pricing.table import shipped_prices
from tests.ledger_support import Tenant
from tests.support import Gateway, cli_json, wait_until

MODEL = "gpt-4o"
#: fast lease syncs, a short expiry and staleness, so the tests need no long waits
FAST = {
    "RECOVEA_CAP_SYNC_INTERVAL_S": "0.2",
    "RECOVEA_CAP_LEASE_TTL_S": "3",
    "RECOVEA_CAP_STALENESS_S": "1",
    "RECOVEA_CAP_CONFIG_REFRESH_S": "30",
    # a request that sets no max_tokens reserves 2 output tokens (the overrun test)
    "RECOVEA_CAP_DEFAULT_OUTPUT_TOKENS": "2",
}


def body(prompt: str, *, max_tokens: int | None = 100, stream: bool = False) -> bytes:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    return orjson.dumps(request)


def estimated_usd(raw: bytes, max_tokens: int = 100, model: str = MODEL) -> Decimal:
    """What the gateway reserves for `raw` (the same estimate it makes)."""
    price = shipped_prices().price_for(model)
    assert price is not None
    return Decimal(estimate(price, len(raw) // 4 + 1, max_tokens)).scaleb(-9)


def usd6(value: Decimal, rounding: str = ROUND_FLOOR) -> str:
    return str(value.quantize(Decimal("0.000001"), rounding=rounding))


def caps_loaded(gateway: Gateway, after: int) -> bool:
    return sum(1 for line in gateway.log_lines() if line.get("event") == "caps_loaded") > after


def loads(gateway: Gateway) -> int:
    return sum(1 for line in gateway.log_lines() if line.get("event") == "caps_loaded")


def set_cap(env: dict[str, str], gateways: list[Gateway], *args: str) -> dict[str, Any]:
    """`recovea cap …`, then wait until every gateway has reloaded its caps."""
    before = [loads(gw) for gw in gateways]
    result = cli_json("cap", *args, env=env)
    for gw, seen in zip(gateways, before, strict=True):
        wait_until(lambda gw=gw, seen=seen: caps_loaded(gw, seen), 10, "caps reloaded")
    return result


def post(gateway: Gateway, tenant: Tenant, raw: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=raw,
        headers={**tenant.bearer, "content-type": "application/json", **headers},
        timeout=30,
    )


async def burst(urls: list[str], tenant: Tenant, count: int, delay_ms: int) -> list[int]:
    """`count` requests at once, spread over `urls`; their statuses."""
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(i: int) -> int:
            response = await client.post(
                f"{urls[i % len(urls)]}/v1/chat/completions",
                content=body(f"burst {i}"),
                headers={
                    **tenant.bearer,
                    "content-type": "application/json",
                    "x-mock-first-byte-delay-ms": str(delay_ms),
                },
            )
            return response.status_code

        return list(await asyncio.gather(*(one(i) for i in range(count))))
