"""The rollup's dollars match the provider's bill, rule by rule: each case is a request
through the gateway to the mock provider whose usage exercises one rule, and the
rollup's cost is checked against the published rates by hand (USD per 1M tokens).

One workspace; each case is tagged with its own feature, so `group_by=feature` shows
each case's requests alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.ledger_support import Tenant, make_tenant, owner_query, stored
from tests.support import Gateway, Postgres, cli_json

SONNET, HAIKU = "claude-sonnet-4-5", "claude-haiku-4-5"


def tokens(
    input_: int, output: int, *, cached: int = 0, w5: int = 0, w1h: int = 0, tier: str = ""
) -> dict[str, str]:
    """The mock's usage controls for one request."""
    headers = {
        "x-mock-input-tokens": str(input_),
        "x-mock-cached-tokens": str(cached),
        "x-mock-cache-write-5m-tokens": str(w5),
        "x-mock-cache-write-1h-tokens": str(w1h),
        "x-mock-output-tokens": str(output),
    }
    if tier:
        headers["x-mock-service-tier"] = tier
    return headers


#: feature → the requests of that case: (model, mock usage, streamed?)
CASES: dict[str, list[tuple[str, dict[str, str], bool]]] = {
    "plain": [(SONNET, tokens(2100, 50), False)],
    "write-5m": [(SONNET, tokens(2100, 50, w5=2000), False)],
    "write-1h": [(SONNET, tokens(2100, 50, w1h=2000), True)],
    "read-and-write": [(HAIKU, tokens(10_000, 300, cached=6000, w5=2000, w1h=1000), True)],
    "long-context": [
        (SONNET, tokens(250_000, 1000, cached=50_000, w5=10_000), False),
        (SONNET, tokens(150_000, 0), True),
    ],
    "priority": [("gpt-4o", tokens(1000, 500, cached=200, tier="priority"), False)],
    "flex": [("gpt-5", tokens(1000, 1000, tier="flex"), True)],
    "batch": [(SONNET, tokens(2100, 50, w1h=2000, tier="batch"), False)],
    "scale": [("gpt-4o", tokens(1000, 500, tier="scale"), False)],
    "no-price": [
        ("house-model-x", tokens(1000, 500), False),
        ("claude-opus-4-7", tokens(10, 5), True),
    ],
    "hit": [(SONNET, tokens(2100, 50, w5=2000), False)],
    "follower": [(SONNET, tokens(2100, 50, w5=2000), False)],
    "cached": [(SONNET, tokens(2100, 50, w5=2000), False)] * 2,
}
#: cases whose requests ask for determinism (temperature 0), so the exact cache may answer
DETERMINISTIC = {"cached"}


def call(
    gateway: Gateway, tenant: Tenant, feature: str, model: str, usage: dict[str, str], stream: bool
) -> str:
    anthropic = model.startswith("claude")
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": feature}]}
    if anthropic:
        body["max_tokens"] = 100_000
    if stream:
        body["stream"] = True
    if feature in DETERMINISTIC:
        body["temperature"] = 0
    response = httpx.post(
        f"{gateway.url}{'/v1/messages' if anthropic else '/v1/chat/completions'}",
        json=body,
        headers={
            **tenant.bearer,
            **({"anthropic-version": "2023-06-01"} if anthropic else {}),
            **usage,
            "x-recovea-feature": feature,
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


@pytest.fixture(scope="module")
def billed(
    gateway: Gateway, db_env: dict[str, str], postgres: Postgres
) -> dict[str, dict[str, Any]]:
    """Every case's requests sent and stored; a cache hit of the `hit` case's request
    and a singleflight follower of the `follower` case's, written as the levers write
    them; the hour rolled up; usage by feature."""
    tenant = make_tenant(db_env, "rollup-prices")
    sent = {
        feature: [call(gateway, tenant, feature, *request) for request in requests]
        for feature, requests in CASES.items()
    }
    rows = {
        feature: [stored(gateway, tenant, "requests", request_id) for request_id in ids]
        for feature, ids in sent.items()
    }
    answered_alike(postgres.url, tenant, rows["hit"][0], "cache_hit")
    answered_alike(postgres.url, tenant, rows["follower"][0], "dedup_singleflight")
    since = datetime.now(UTC) - timedelta(hours=1)
    cli_json("rollup", "--since", since.isoformat(), env=db_env)
    response = httpx.get(
        f"{gateway.url}/v1/recovea/usage",
        params={"group_by": "feature"},
        headers=tenant.bearer,
    )
    assert response.status_code == 200, response.text
    return {row["key"]: row for row in response.json()["data"]}


def answered_alike(url: str, tenant: Tenant, original: dict[str, Any], lever: str) -> None:
    """A row for a request answered by a lever from `original` (`cache_hit` or
    `dedup_singleflight`): the original's usage, and its pricing facts (its 2000
    5-minute cache writes), as the drainer writes them."""
    request_id = uuid.uuid4()
    owner_query(
        url,
        "INSERT INTO recovea.request_events (request_id, trace_id, customer_id, feature,"
        f" baseline_model, realized_model, input_tokens, output_tokens, cached_tokens, {lever},"
        " success, status, latency_total_ms, gateway_overhead_ms, provider, env, ts)"
        " VALUES ($1, 't', $2::uuid, $3, $4, $4, $5, $6, 0, true, true, 'success', 1, 1,"
        " 'anthropic', 'live', now())",
        request_id,
        tenant.workspace,
        original["feature"],
        original["baseline_model"],
        original["input_tokens"],
        original["output_tokens"],
    )
    owner_query(
        url,
        "INSERT INTO recovea.pricing_facts (request_id, ts, customer_id, cache_write_5m_tokens)"
        " SELECT request_id, ts, customer_id, 2000 FROM recovea.request_events"
        " WHERE request_id = $1",
        request_id,
    )


def costs(row: dict[str, Any]) -> tuple[Decimal | None, Decimal | None]:
    """(baseline, realized) of a usage row."""
    baseline, realized = row["baseline_cost_usd"], row["realized_cost_usd"]
    return (
        None if baseline is None else Decimal(baseline),
        None if realized is None else Decimal(realized),
    )


def test_plain_input_is_the_reference(billed: dict[str, dict[str, Any]]) -> None:
    """claude-sonnet-4-5, 2100 plain input and 50 output: 2100 x 3 + 50 x 15 = $0.00705."""
    assert costs(billed["plain"]) == (Decimal("0.00705"), Decimal("0.00705"))


def test_five_minute_cache_writes_cost_one_and_a_quarter_input(
    billed: dict[str, dict[str, Any]],
) -> None:
    """The issue's case: the same request with 2000 of its input written to the cache for
    5 minutes: 100 x 3 + 2000 x 3.75 + 50 x 15 = $0.00855 (it was priced as plain
    input, $0.00705). The rollup counts the writes."""
    row = billed["write-5m"]
    assert costs(row) == (Decimal("0.00855"), Decimal("0.00855"))
    assert (row["input_tokens"], row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (
        2100,
        2000,
        0,
    )


def test_one_hour_cache_writes_cost_twice_input(billed: dict[str, dict[str, Any]]) -> None:
    """Written for 1 hour (a stream): 100 x 3 + 2000 x 6 + 50 x 15 = $0.01305."""
    row = billed["write-1h"]
    assert costs(row) == (Decimal("0.01305"), Decimal("0.01305"))
    assert (row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (0, 2000)


def test_cache_reads_and_writes_in_one_request(billed: dict[str, dict[str, Any]]) -> None:
    """claude-haiku-4-5 streamed, 10000 input = 1000 plain + 6000 reads + 2000 5 m writes
    + 1000 1 h writes, 300 output: 1000 x 1 + 6000 x 0.10 + 2000 x 1.25 + 1000 x 2 +
    300 x 5 = $0.0076."""
    row = billed["read-and-write"]
    assert costs(row) == (Decimal("0.0076"), Decimal("0.0076"))
    assert (row["cached_tokens"], row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (
        6000,
        2000,
        1000,
    )


def test_a_long_context_request_pays_the_band_and_only_it(
    billed: dict[str, dict[str, Any]],
) -> None:
    """Two sonnet requests in one group. 250000 input (50000 reads, 10000 5 m writes) and
    1000 output is past 200k: 190000 x 6 + 50000 x 0.60 + 10000 x 7.50 + 1000 x 22.50 =
    $1.2675. 150000 input alone is standard: 150000 x 3 = $0.45. Together $1.7175 —
    not the long-context price of their 400000-token sum."""
    row = billed["long-context"]
    assert row["requests"] == 2 and row["input_tokens"] == 400_000
    assert costs(row) == (Decimal("1.7175"), Decimal("1.7175"))


def test_an_openai_request_served_at_priority(billed: dict[str, dict[str, Any]]) -> None:
    """gpt-4o served at the priority tier: 800 x 4.25 + 200 x 2.125 + 500 x 17 =
    $0.012325 (standard would be $0.00725)."""
    assert costs(billed["priority"]) == (Decimal("0.012325"), Decimal("0.012325"))


def test_an_openai_stream_served_at_flex(billed: dict[str, dict[str, Any]]) -> None:
    """gpt-5 streamed, served at flex (half of standard): 1000 x 0.625 + 1000 x 5 =
    $0.005625."""
    assert costs(billed["flex"]) == (Decimal("0.005625"), Decimal("0.005625"))


def test_a_batch_discount_stacks_with_cache_writes(billed: dict[str, dict[str, Any]]) -> None:
    """The 1-hour-write request served at Anthropic's batch tier: half of $0.01305."""
    assert costs(billed["batch"]) == (Decimal("0.006525"), Decimal("0.006525"))


def test_a_tier_without_a_list_price_is_unpriced(billed: dict[str, dict[str, Any]]) -> None:
    """gpt-4o served at scale (bought by contract): no cost, counted as unpriced — never
    the standard price."""
    row = billed["scale"]
    assert costs(row) == (None, None)
    assert (row["requests"], row["unpriced"]) == (1, 1)


def test_a_model_with_no_price_is_unpriced(billed: dict[str, dict[str, Any]]) -> None:
    """A model the table does not list (a house model; a Claude model newer than the
    table) has no cost; its requests count as unpriced, their tokens are kept."""
    row = billed["no-price"]
    assert costs(row) == (None, None)
    assert (row["requests"], row["unpriced"], row["input_tokens"]) == (2, 2, 1010)


def test_a_cache_hit_saves_what_the_original_cost_writes_included(
    billed: dict[str, dict[str, Any]],
) -> None:
    """The 5-minute-write request and a cache hit of it: baseline twice $0.00855, realized
    only the original's, so the saving is $0.00855 — the cache write included."""
    row = billed["hit"]
    assert row["requests"] == 2 and row["cache_hits"] == 1
    assert costs(row) == (Decimal("0.0171"), Decimal("0.00855"))
    assert Decimal(row["savings_usd"]) == Decimal("0.00855")


def test_the_exact_cache_saves_a_repeat_with_its_cache_writes(
    billed: dict[str, dict[str, Any]],
) -> None:
    """The same deterministic request twice through the gateway: the second is answered
    by the exact cache with the first's usage, writes included, so it saves $0.00855."""
    row = billed["cached"]
    assert row["requests"] == 2 and row["cache_hits"] == 1
    assert row["cache_write_5m_tokens"] == 4000
    assert costs(row) == (Decimal("0.0171"), Decimal("0.00855"))


def test_a_singleflight_follower_costs_nothing_realized(
    billed: dict[str, dict[str, Any]],
) -> None:
    """A follower that shared the 5-minute-write request's upstream call was not paid
    for: baseline twice $0.00855, realized once, as for a cache hit."""
    row = billed["follower"]
    assert row["requests"] == 2 and row["dedup_hits"] == 1
    assert costs(row) == (Decimal("0.0171"), Decimal("0.00855"))


BAND: dict[str, Any] = {
    "above": 1000,
    "input": "4",
    "cached_input": "0.4",
    "cache_write_5m": "5",
    "cache_write_1h": "8",
    "output": "15",
}
OVERRIDE: dict[str, Any] = {
    "input": 2,  # a number, as JSON allows
    "cached_input": "0.2",
    "cache_write_5m": "2.5",
    "cache_write_1h": "4",
    "output": "10",
    "long_context": BAND,
    "service_tiers": {"batch": {"multiplier": "0.5"}},
}


@pytest.mark.parametrize(
    "bad",
    [
        {**OVERRIDE, "service_tiers": {"flex": {"multiplier": "half"}}},
        {**OVERRIDE, "long_context": {**BAND, "above": -1}},
        {**OVERRIDE, "long_context": {"above": 1000, "input": "4"}},
        {**OVERRIDE, "cache_write_1h": "-4"},
        {**OVERRIDE, "colour": "red"},
        {key: value for key, value in OVERRIDE.items() if key != "output"},
    ],
)
def test_a_malformed_override_is_refused(
    gateway: Gateway, refusing: dict[str, str], bad: dict[str, Any]
) -> None:
    """A tier multiplier that is no number, a bad threshold, a band missing rates, a
    negative rate, an unknown field, a missing required rate: 400, nothing stored."""
    admin = refusing
    put = httpx.put(f"{gateway.url}/admin/v1/prices/claude-sonnet-4-5", json=bad, headers=admin)
    assert put.status_code == 400, put.text
    listed = httpx.get(f"{gateway.url}/admin/v1/prices", headers=admin).json()["data"]
    assert listed["claude-sonnet-4-5"]["override"] is False


@pytest.fixture(scope="module")
def refusing(db_env: dict[str, str]) -> dict[str, str]:
    """An admin key's headers, of a workspace with no overrides."""
    return admin_of(db_env, make_tenant(db_env, "rollup-prices-refused"))


def admin_of(db_env: dict[str, str], tenant: Tenant) -> dict[str, str]:
    created = cli_json(
        "key", "create", "--workspace", tenant.workspace, "--role", "admin", env=db_env
    )
    return {"authorization": f"Bearer {created['key']}"}


def test_an_override_carries_every_rate(gateway: Gateway, db_env: dict[str, str]) -> None:
    """A workspace prices claude-sonnet-4-5 with its own cache-write rates, band and
    batch tier; the admin API shows them, the rollup bills by them:
    - 900 input of which 800 5 m writes, 10 output: 100 x 2 + 800 x 2.5 + 10 x 10 = $0.0023;
    - 2000 input (past its 1000-token band) of which 1000 1 h writes, 10 output, in a
      batch: (1000 x 4 + 1000 x 8 + 10 x 15) x 0.5 = $0.006075;
    - at priority, a tier the override does not list: unpriced."""
    tenant = make_tenant(db_env, "rollup-prices-override")
    admin = admin_of(db_env, tenant)
    put = httpx.put(
        f"{gateway.url}/admin/v1/prices/claude-sonnet-4-5", json=OVERRIDE, headers=admin
    )
    assert put.status_code == 200, put.text
    listed = httpx.get(f"{gateway.url}/admin/v1/prices", headers=admin).json()["data"]
    mine = listed["claude-sonnet-4-5"]
    assert mine["override"] is True and mine["source"] == "workspace override"
    assert (mine["input"], mine["cache_write_5m"], mine["cache_write_1h"]) == ("2", "2.5", "4")
    assert mine["long_context"]["above"] == 1000 and mine["long_context"]["output"] == "15"
    assert mine["service_tiers"] == {"batch": {"multiplier": "0.5", "source": "workspace override"}}
    assert {key: value for key, value in put.json().items() if key != "model"} == {
        key: value for key, value in mine.items() if key != "override"
    }
    assert listed["claude-haiku-4-5"]["override"] is False
    requests = {
        "o-write": tokens(900, 10, w5=800),
        "o-long": tokens(2000, 10, w1h=1000, tier="batch"),
        "o-priority": tokens(100, 10, tier="priority"),
    }
    for feature, usage in requests.items():
        stored(gateway, tenant, "requests", call(gateway, tenant, feature, SONNET, usage, False))
    cli_json("rollup", env=db_env)
    response = httpx.get(
        f"{gateway.url}/v1/recovea/usage", params={"group_by": "feature"}, headers=tenant.bearer
    )
    rows = {row["key"]: row for row in response.json()["data"]}
    assert costs(rows["o-write"]) == (Decimal("0.0023"), Decimal("0.0023"))
    assert costs(rows["o-long"]) == (Decimal("0.006075"), Decimal("0.006075"))
    assert costs(rows["o-priority"]) == (None, None) and rows["o-priority"]["unpriced"] == 1
