"""The rollup per (hour, workspace): caller-chosen dimensions bounded per workspace and
hour (the rest grouped as `(other)`, totals unchanged), and one workspace's failure or
timeout never holding back another's."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson

from tests.ledger_support import Tenant, make_tenant, owner_query
from tests.support import Gateway, Postgres, cli, cli_json, wait_until


def past_hour(days_ago: int) -> datetime:
    """A whole UTC hour some days back (inside every plan's retention)."""
    return (datetime.now(UTC) - timedelta(days=days_ago)).replace(
        hour=10, minute=0, second=0, microsecond=0
    )


def add_events(url: str, tenant: Tenant, hour: datetime, *events: tuple[str, str]) -> None:
    """One event per (feature, model) in `hour`, 1000 input tokens (200 cached) and 500
    output tokens each, as the drainer writes them."""
    for minute, (feature, model) in enumerate(events):
        owner_query(
            url,
            "INSERT INTO recovea.request_events (request_id, trace_id, customer_id, feature,"
            " baseline_model, realized_model, input_tokens, output_tokens, cached_tokens,"
            " success, status, latency_total_ms, gateway_overhead_ms, provider, env, ts)"
            " VALUES ($1, 't', $2::uuid, $3, $4, $4, 1000, 500, 200, true, 'success', 1, 1,"
            " 'openai', 'live', $5)",
            uuid.uuid4(),
            tenant.workspace,
            feature,
            model,
            hour + timedelta(minutes=minute % 60),
        )


def usage_in(
    gateway: Gateway, tenant: Tenant, group_by: str, hour: datetime
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """One hour's usage grouped by `group_by`: the groups by key, and the totals."""
    response = httpx.get(
        f"{gateway.url}/v1/recovea/usage",
        params={
            "group_by": group_by,
            "from": hour.isoformat(),
            "to": (hour + timedelta(hours=1)).isoformat(),
        },
        headers=tenant.bearer,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return {row["key"]: row for row in body["data"]}, body["totals"]


def rollup_hour(env: dict[str, str], hour: datetime, **settings: str) -> dict[str, Any]:
    return cli_json(
        "rollup",
        "--since",
        hour.isoformat(),
        "--until",
        (hour + timedelta(hours=1)).isoformat(),
        env={**env, **settings},
    )


def test_features_past_the_bound_are_grouped_as_other_with_the_same_totals(
    gateway: Gateway, db_env: dict[str, str], postgres: Postgres
) -> None:
    """With RECOVEA_ROLLUP_MAX_TAGS=2, a workspace's hour keeps its two features with
    the most requests (ties by value) and groups the rest as `(other)`: three feature
    groups, and requests, tokens and costs add up exactly as without the bound."""
    tenant = make_tenant(db_env, "rollup-bounded-features")
    hour = past_hour(2)
    counts = {"f0": 3, "f2": 2, "f1": 2, "f3": 1, "f4": 1, "f5": 1}
    add_events(
        postgres.url,
        tenant,
        hour,
        *((feature, "gpt-4o") for feature, n in counts.items() for _ in range(n)),
    )
    rollup_hour(db_env, hour)
    unbounded, unbounded_totals = usage_in(gateway, tenant, "feature", hour)
    assert set(counts) == set(unbounded)

    rollup_hour(db_env, hour, RECOVEA_ROLLUP_MAX_TAGS="2")
    bounded, bounded_totals = usage_in(gateway, tenant, "feature", hour)

    requests = {key: row["requests"] for key, row in bounded.items()}
    assert {"f0": 3, "f1": 2, "(other)": 5} == requests
    assert unbounded_totals == bounded_totals
    assert Decimal("0.0725") == Decimal(bounded_totals["baseline_cost_usd"])  # 10 x 0.00725


def test_models_past_the_bound_are_grouped_as_other_and_unpriced(
    gateway: Gateway, db_env: dict[str, str], postgres: Postgres
) -> None:
    """A model grouped as `(other)` has no price: its requests and tokens still count,
    as unpriced, and the kept models are priced as before."""
    tenant = make_tenant(db_env, "rollup-bounded-models")
    hour = past_hour(2)
    add_events(
        postgres.url,
        tenant,
        hour,
        *[("chat", "gpt-4o")] * 3,
        *[("chat", "gpt-4o-mini")] * 2,
        ("chat", "claude-sonnet-4-5"),
    )
    rollup_hour(db_env, hour)
    _, unbounded_totals = usage_in(gateway, tenant, "model", hour)
    assert 0 == unbounded_totals["unpriced"]

    rollup_hour(db_env, hour, RECOVEA_ROLLUP_MAX_TAGS="2")
    by_model, totals = usage_in(gateway, tenant, "model", hour)

    assert {"gpt-4o", "gpt-4o-mini", "(other)"} == set(by_model)
    other = by_model["(other)"]
    assert (1, 1000, 500, 1) == (
        other["requests"],
        other["input_tokens"],
        other["output_tokens"],
        other["unpriced"],
    )
    assert other["baseline_cost_usd"] is None
    assert Decimal(by_model["gpt-4o"]["baseline_cost_usd"]) == Decimal("0.02175")  # 3 x 0.00725
    for count in ("requests", "input_tokens", "cached_tokens", "output_tokens"):
        assert unbounded_totals[count] == totals[count]


def test_one_workspace_whose_rollup_times_out_does_not_hold_back_another(
    gateway: Gateway, db_env: dict[str, str], postgres: Postgres
) -> None:
    """A workspace whose hour cannot be rolled up within RECOVEA_MAINTENANCE_TIMEOUT_S
    (its rollup rows are locked by another session) is reported, keeps its pending
    mark and its previous numbers; another workspace of the same hour is rolled up.
    Once the lock is gone, a plain `recovea rollup` catches the first one up."""
    import asyncio

    import asyncpg

    stuck, fine = make_tenant(db_env, "rollup-stuck"), make_tenant(db_env, "rollup-fine")
    hour = past_hour(3)
    for tenant in (stuck, fine):
        add_events(postgres.url, tenant, hour, ("chat", "gpt-4o"))
    rollup_hour(db_env, hour)
    for tenant in (stuck, fine):
        add_events(postgres.url, tenant, hour, ("chat", "gpt-4o"))

    async def hold_rows(held: asyncio.Event, release: asyncio.Event) -> None:
        conn = await asyncpg.connect(postgres.url)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT 1 FROM recovea.usage_rollups WHERE customer_id = $1::uuid"
                    " AND hour = $2 FOR UPDATE",
                    stuck.workspace,
                    hour,
                )
                held.set()
                await release.wait()
        finally:
            await conn.close()

    loop = asyncio.new_event_loop()
    held, release = asyncio.Event(), asyncio.Event()
    holder = threading.Thread(target=loop.run_until_complete, args=(hold_rows(held, release),))
    holder.start()
    try:
        wait_until(held.is_set, 10, "the lock on the stuck workspace's rows")
        done = cli(
            "rollup",
            "--since",
            hour.isoformat(),
            "--until",
            (hour + timedelta(hours=1)).isoformat(),
            "--json",
            env={**db_env, "RECOVEA_MAINTENANCE_TIMEOUT_S": "1"},
        )
        assert 2 == usage_in(gateway, fine, "model", hour)[1]["requests"]
        assert 1 == usage_in(gateway, stuck, "model", hour)[1]["requests"]
        assert 1 == done.returncode, done.stderr
        assert stuck.workspace in done.stderr
        failed = orjson.loads(done.stdout)["failed"]
        assert [
            {"workspace": stuck.workspace, "hour": hour.isoformat(), "error": "QueryCanceledError"}
        ] == failed
        assert owner_query(
            postgres.url,
            "SELECT 1 FROM recovea.rollup_pending WHERE customer_id = $1::uuid AND hour = $2",
            stuck.workspace,
            hour,
        )
    finally:
        loop.call_soon_threadsafe(release.set)
        holder.join(10)
        loop.close()
    cli_json("rollup", env=db_env)
    assert 2 == usage_in(gateway, stuck, "model", hour)[1]["requests"]
