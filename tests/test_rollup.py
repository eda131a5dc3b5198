"""Money: the hourly rollup prices the ledger; `/v1/recovea/usage` reads it back,
workspace-scoped; re-running an hour gives the same numbers; overrides win. Each
workspace's hour is rolled up on its own: caller-chosen tags past the bound are
grouped as `(other)`, and one workspace that fails holds back no other."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant, owner_query, stored
from tests.support import Gateway, MockServer, Postgres, cli_json, metric_value, wait_until

GPT = {"x-mock-input-tokens": "1000", "x-mock-cached-tokens": "200", "x-mock-output-tokens": "500"}
CLAUDE = {"x-mock-input-tokens": "100", "x-mock-cached-tokens": "0", "x-mock-output-tokens": "50"}


def anthropic_version(path: str) -> dict[str, str]:
    """`anthropic-version` where the Anthropic SDK sends it: on Anthropic's calls only
    (on any bare `/v1/*` path it makes the call Anthropic's)."""
    return {"anthropic-version": "2023-06-01"} if path.startswith("/v1/messages") else {}


def call(
    gateway: Gateway, tenant: Tenant, path: str, model: str, headers: dict[str, str], **extra: str
) -> str:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "money"}]}
    if path == "/v1/messages":
        body["max_tokens"] = 100
    response = httpx.post(
        f"{gateway.url}{path}",
        json=body,
        headers={**tenant.bearer, **anthropic_version(path), **headers, **extra},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def usage(gateway: Gateway, tenant: Tenant, group_by: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(
        f"{gateway.url}/v1/recovea/usage", params={"group_by": group_by}, headers=tenant.bearer
    )
    assert response.status_code == 200, response.text
    return {row["key"]: row for row in response.json()["data"]}


@pytest.fixture(scope="module")
def priced(gateway: Gateway, db_env: dict[str, str]) -> Tenant:
    """A workspace with a known mix of calls, rolled up."""
    tenant = make_tenant(db_env, "rollup-main", project="alpha", team="blue")
    ids = [
        call(
            gateway, tenant, "/v1/chat/completions", "gpt-4o", GPT, **{"x-recovea-feature": "chat"}
        ),
        call(
            gateway,
            tenant,
            "/v1/chat/completions",
            "gpt-4o",
            GPT,
            **{"x-recovea-feature": "chat", "x-recovea-customer": "acme"},
        ),
        call(
            gateway,
            tenant,
            "/v1/messages",
            "claude-sonnet-4-5",
            CLAUDE,
            **{"x-recovea-feature": "summary"},
        ),
        call(gateway, tenant, "/v1/chat/completions", "house-model-x", GPT),
    ]
    for request_id in ids:
        stored(gateway, tenant, "requests", request_id)
    cli_json("rollup", env=db_env)
    return tenant


def test_costs_follow_the_price_table(gateway: Gateway, priced: Tenant) -> None:
    by_model = usage(gateway, priced, "model")
    gpt = by_model["gpt-4o"]
    assert (gpt["requests"], gpt["input_tokens"], gpt["cached_tokens"], gpt["output_tokens"]) == (
        2,
        2000,
        400,
        1000,
    )
    # (800 * 2.50 + 200 * 1.25 + 500 * 10.00) / 1M per request, twice
    assert Decimal(gpt["baseline_cost_usd"]) == Decimal("0.0145")
    assert Decimal(gpt["realized_cost_usd"]) == Decimal("0.0145")
    assert Decimal(gpt["savings_usd"]) == 0
    claude = by_model["claude-sonnet-4-5"]
    assert Decimal(claude["baseline_cost_usd"]) == Decimal("0.00105")  # 100 * 3 + 50 * 15
    unknown = by_model["house-model-x"]
    assert unknown["baseline_cost_usd"] is None and unknown["unpriced"] == 1


def test_every_grouping_is_workspace_scoped(
    gateway: Gateway, priced: Tenant, db_env: dict[str, str]
) -> None:
    assert set(usage(gateway, priced, "feature")) == {"chat", "summary", None}
    assert usage(gateway, priced, "feature")["chat"]["requests"] == 2
    assert set(usage(gateway, priced, "end_user")) == {"acme", None}
    assert set(usage(gateway, priced, "project")) == {"alpha"}
    assert set(usage(gateway, priced, "team")) == {"blue"}
    assert set(usage(gateway, priced, "route")) == {
        "openai /v1/chat/completions",
        "anthropic /v1/messages",
    }
    stranger = make_tenant(db_env, "rollup-stranger")
    assert usage(gateway, stranger, "model") == {}


@pytest.mark.parametrize(
    "params",
    [{"group_by": "colour"}, {"from": "yesterday"}, {"from": "2030-01-02", "to": "2030-01-01"}],
)
def test_bad_usage_queries_are_400(
    gateway: Gateway, priced: Tenant, params: dict[str, str]
) -> None:
    response = httpx.get(f"{gateway.url}/v1/recovea/usage", params=params, headers=priced.bearer)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_rolling_up_again_gives_the_same_numbers(
    gateway: Gateway, priced: Tenant, db_env: dict[str, str]
) -> None:
    before = usage(gateway, priced, "model")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    again = cli_json("rollup", "--since", (hour.replace(hour=0)).isoformat(), env=db_env)
    assert hour.isoformat() in again["hours"]
    assert usage(gateway, priced, "model") == before


def test_a_workspace_price_override_wins(gateway: Gateway, db_env: dict[str, str]) -> None:
    tenant = make_tenant(db_env, "rollup-override")
    admin_key = cli_json(
        "key", "create", "--workspace", tenant.workspace, "--role", "admin", env=db_env
    )["key"]
    admin = {"authorization": f"Bearer {admin_key}"}
    put = httpx.put(
        f"{gateway.url}/admin/v1/prices/gpt-4o",
        json={"input": "1", "cached_input": "0.5", "output": "2"},
        headers=admin,
    )
    assert put.status_code == 200, put.text
    listed = httpx.get(f"{gateway.url}/admin/v1/prices", headers=admin).json()["data"]
    assert listed["gpt-4o"]["override"] is True and listed["gpt-4o-mini"]["override"] is False
    stored(
        gateway,
        tenant,
        "requests",
        call(gateway, tenant, "/v1/chat/completions", "gpt-4o-2024-08-06", GPT),
    )
    cli_json("rollup", env=db_env)
    row = usage(gateway, tenant, "model")["gpt-4o-2024-08-06"]
    assert Decimal(row["baseline_cost_usd"]) == Decimal("0.0019")  # 800 * 1 + 200 * 0.5 + 500 * 2
    bad = httpx.put(
        f"{gateway.url}/admin/v1/prices/gpt-4o",
        json={"input": "-1", "cached_input": "0", "output": "1"},
        headers=admin,
    )
    assert bad.status_code == 400
    member = httpx.put(f"{gateway.url}/admin/v1/prices/gpt-4o", json={}, headers=tenant.bearer)
    assert member.status_code == 403
    assert httpx.delete(f"{gateway.url}/admin/v1/prices/gpt-4o", headers=admin).status_code == 200


def test_cache_hits_cost_nothing_realized(
    gateway: Gateway, db_env: dict[str, str], postgres: Postgres
) -> None:
    """A cache hit (written here as the cache lever will write it) is priced at baseline
    and free in realized cost: the difference is the saving."""
    tenant = make_tenant(db_env, "rollup-cache")
    stored(
        gateway, tenant, "requests", call(gateway, tenant, "/v1/chat/completions", "gpt-4o", GPT)
    )
    owner_query(
        postgres.url,
        "INSERT INTO recovea.request_events (request_id, trace_id, customer_id, baseline_model,"
        " realized_model, input_tokens, output_tokens, cached_tokens, cache_hit, cache_type,"
        " success, status, latency_total_ms, gateway_overhead_ms, provider, env, ts)"
        " VALUES ($1, 't', $2::uuid, 'gpt-4o', 'gpt-4o', 1000, 500, 200, true, 'exact', true,"
        " 'success', 1, 1, 'openai', 'live', now())",
        uuid.uuid4(),
        tenant.workspace,
    )
    cli_json("rollup", "--since", datetime.now(UTC).replace(minute=0).isoformat(), env=db_env)
    row = usage(gateway, tenant, "model")["gpt-4o"]
    assert row["cache_hits"] == 1 and row["requests"] == 2
    assert Decimal(row["baseline_cost_usd"]) == Decimal("0.0145")
    assert Decimal(row["realized_cost_usd"]) == Decimal("0.00725")
    assert Decimal(row["savings_usd"]) == Decimal("0.00725")


def test_the_gateway_rolls_up_on_its_own_schedule(
    mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> None:
    gateway = Gateway(
        {**upstream_env(mock), **db_env, "RECOVEA_MAINTENANCE_INTERVAL_S": "0.2"}, workdir
    )
    try:
        tenant = make_tenant(db_env, "rollup-scheduled")
        stored(
            gateway,
            tenant,
            "requests",
            call(gateway, tenant, "/v1/chat/completions", "gpt-4o", GPT),
        )
        found = wait_until(lambda: usage(gateway, tenant, "model").get("gpt-4o"), 20, "rollup")
        assert found["requests"] == 1
        assert metric_value(gateway.metrics(), "recovea_maintenance_runs_total", outcome="ok") >= 1
    finally:
        gateway.stop()


def test_one_replica_at_a_time_runs_maintenance(
    mock: MockServer, workdir: Path, db_env: dict[str, str], postgres: Postgres
) -> None:
    """While another replica holds the maintenance lock, this one skips its rounds and
    rolls nothing up; once the lock is free, it does the work."""
    import asyncio

    import asyncpg

    from recovea_proxy.meter.maintenance import LOCK_ID

    async def hold_lock(held: asyncio.Event, release: asyncio.Event) -> None:
        conn = await asyncpg.connect(postgres.url)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
            held.set()
            await release.wait()
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
        finally:
            await conn.close()

    loop = asyncio.new_event_loop()
    held, release = asyncio.Event(), asyncio.Event()
    holder = threading.Thread(target=loop.run_until_complete, args=(hold_lock(held, release),))
    holder.start()
    gateway = None
    try:
        wait_until(held.is_set, 10, "the other replica's lock")
        gateway = Gateway(
            {**upstream_env(mock), **db_env, "RECOVEA_MAINTENANCE_INTERVAL_S": "0.1"}, workdir
        )
        tenant = make_tenant(db_env, "rollup-locked")
        stored(
            gateway,
            tenant,
            "requests",
            call(gateway, tenant, "/v1/chat/completions", "gpt-4o", GPT),
        )
        wait_until(
            lambda: (
                metric_value(gateway.metrics(), "recovea_maintenance_runs_total", outcome="skipped")
                >= 3
            ),
            15,
            "skipped rounds",
        )
        assert metric_value(gateway.metrics(), "recovea_maintenance_runs_total", outcome="ok") == 0
        assert usage(gateway, tenant, "model") == {}
    finally:
        loop.call_soon_threadsafe(release.set)
        holder.join(10)
        loop.close()
    try:
        wait_until(
            lambda: usage(gateway, tenant, "model").get("gpt-4o"), 20, "rollup after release"
        )
    finally:
        gateway.stop()
