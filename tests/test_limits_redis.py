"""Limits shared through Redis: two gateways hold one bound between them, and a Redis
that is gone fails open (counted) or closed, as each limit says.

Real gateway processes, the mock provider, Postgres and a real redis-server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import upstream_env
from tests.limits_support import (
    SLOW_WINDOW_S,
    Limited,
    chat,
)
from tests.redis_support import RedisServer
from tests.support import Gateway, MockServer, cli_json, metric_value, wait_until


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.kill()


def test_two_gateways_sharing_redis_hold_one_bound(
    mock: MockServer, workdir: Path, db_env: dict[str, str], own_redis: RedisServer
) -> None:
    """rpm 30 shared by two gateways: 90 requests sent at once, spread over both, admit
    at most 30 (plus what refills during the run); both gateways asked the shared
    bucket for leases."""
    limited = Limited(db_env, "limits-shared")
    cli_json("limit", "set", "--workspace", limited.tenant.workspace, "--rpm", "30", env=db_env)
    env = {
        **upstream_env(mock),
        **db_env,
        "RECOVEA_REDIS_URL": own_redis.url,
        "RECOVEA_LIMIT_WINDOW_S": str(SLOW_WINDOW_S),
        "RECOVEA_LIMIT_LEASE_SHARE": "0.2",  # slices of 6: leases carve the bucket
    }
    gateways = [Gateway(env, workdir), Gateway(env, workdir)]
    try:

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
                answers = await asyncio.gather(
                    *(
                        client.post(
                            f"{gateways[i % 2].url}/v1/chat/completions",
                            json=body,
                            headers=limited.tenant.bearer,
                        )
                        for i in range(90)
                    )
                )
            return [answer.status_code for answer in answers]

        statuses = asyncio.run(burst())
        admitted = statuses.count(200)
        assert statuses.count(200) + statuses.count(429) == 90
        assert 30 - 6 * 2 <= admitted <= 30  # refill over the run: < 0.01 request
        print(f"shared rpm 30: admitted {admitted} of 90 (overshoot {admitted - 30})")
        # Both went to the shared bucket (which one got the slices is a race: a
        # gateway may find it emptied by the other, and be refused every lease).
        exchanges = [
            {
                outcome: metric_value(
                    gw.metrics(), "recovea_rate_limit_leases_total", outcome=outcome
                )
                for outcome in ("granted", "refused")
            }
            for gw in gateways
        ]
        assert all(e["granted"] + e["refused"] >= 1 for e in exchanges), exchanges
        assert sum(e["granted"] for e in exchanges) * 6 >= admitted, exchanges  # slices of 6
    finally:
        for gw in gateways:
            gw.stop()


def test_redis_gone_fails_open_counted_or_closed_when_asked(
    mock: MockServer, workdir: Path, db_env: dict[str, str], own_redis: RedisServer
) -> None:
    """Redis killed: a limit that fails open admits (counted in
    `gateway_fail_open_total{layer="ratelimit"}`); one set to fail closed refuses 429
    `rate_limited` with `retry-after: 1`. Redis back: leases again."""
    opened = Limited(db_env, "limits-fail-open")
    closed = Limited(db_env, "limits-fail-closed")
    gw = Gateway(
        {
            **upstream_env(mock),
            **db_env,
            "RECOVEA_REDIS_URL": own_redis.url,
            "RECOVEA_LIMIT_LEASE_SHARE": "0.0001",  # a lease per request
        },
        workdir,
    )
    try:
        opened.set(gw, rpm=1000)
        closed.set(gw, rpm=1000, on_failure="closed")
        assert chat(gw, opened.tenant).status_code == 200
        assert chat(gw, closed.tenant).status_code == 200
        own_redis.kill()
        assert chat(gw, opened.tenant).status_code == 200
        refused = chat(gw, closed.tenant)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["retry-after"] == "1"
        text = gw.metrics()
        failed_open = sum(
            metric_value(text, "gateway_fail_open_total", layer="ratelimit", reason=reason)
            for reason in ("unreachable", "down", "timeout")
        )
        assert failed_open >= 1
        own_redis.start()
        wait_until(
            lambda: chat(gw, closed.tenant).status_code == 200, 10, "leases after Redis is back"
        )
    finally:
        gw.stop()
