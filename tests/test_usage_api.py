"""What the usage page reads beyond the plain groupings: usage per rcv_ key and over
time (`group_by=key|hour|day`), and the latest rows (`GET /v1/recovea/requests`),
each scoped to the caller's workspace like every `/v1/recovea/*` read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from recovea_proxy.meter.event import COLUMNS
from recovea_proxy.meter.rollup import hour_of
from tests.ledger_support import Tenant, make_tenant, owner_query, stored
from tests.support import Gateway, Postgres, cli_json

TOKENS = {"x-mock-input-tokens": "100", "x-mock-cached-tokens": "0", "x-mock-output-tokens": "10"}


def call(gateway: Gateway, key: Tenant, n: int) -> str:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": f"usage api {n}"}]},
        headers={**key.bearer, **TOKENS},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


class Traffic:
    """A workspace with two keys: three calls with the first (one of them a day ago,
    written straight into the ledger), one with the second; rolled up."""

    def __init__(self, gateway: Gateway, env: dict[str, str], postgres: Postgres) -> None:
        self.first = make_tenant(env, "usage-api")
        created = cli_json("key", "create", "--workspace", self.first.workspace, env=env)
        self.second = Tenant(self.first.workspace, created["key"], created["key_id"])
        self.ids = [call(gateway, self.first, 1), call(gateway, self.first, 2)]
        self.ids.append(call(gateway, self.second, 3))
        for request_id in self.ids:
            stored(gateway, self.first, "requests", request_id)
        self.earlier = datetime.now(UTC) - timedelta(hours=26)
        owner_query(
            postgres.url,
            "INSERT INTO recovea.request_events (request_id, trace_id, customer_id,"
            " rcv_key_id, baseline_model, realized_model, input_tokens, output_tokens,"
            " success, status, latency_total_ms, gateway_overhead_ms, provider, env, ts)"
            " VALUES ($1, 't', $2::uuid, $3::uuid, 'gpt-4o', 'gpt-4o', 100, 10, true,"
            " 'success', 1, 1, 'openai', 'live', $4)",
            uuid.uuid4(),
            self.first.workspace,
            self.first.key_id,
            self.earlier,
        )
        since = (self.earlier - timedelta(hours=1)).isoformat()
        cli_json("rollup", "--since", since, env=env)
        self.window = {"from": since, "to": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}


@pytest.fixture(scope="module")
def traffic(gateway: Gateway, db_env: dict[str, str], postgres: Postgres) -> Traffic:
    return Traffic(gateway, db_env, postgres)


def get(gateway: Gateway, key: Tenant, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}{path}", params=params, headers=key.bearer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def usage(gateway: Gateway, key: Tenant, group_by: str, window: dict[str, str]) -> dict[str, Any]:
    return get(gateway, key, "/v1/recovea/usage", group_by=group_by, **window)


def test_usage_by_key_counts_each_keys_requests(gateway: Gateway, traffic: Traffic) -> None:
    """`group_by=key` groups by the rcv_ key id the requests were made with."""
    found = usage(gateway, traffic.second, "key", traffic.window)
    assert {row["key"]: row["requests"] for row in found["data"]} == {
        traffic.first.key_id: 3,
        traffic.second.key_id: 1,
    }
    assert found["totals"]["requests"] == 4


@pytest.mark.parametrize("group_by", ["hour", "day"])
def test_usage_over_time_is_in_time_order_and_adds_up(
    gateway: Gateway, traffic: Traffic, group_by: str
) -> None:
    """`group_by=hour|day` gives one row per rollup hour (or UTC day) that holds usage,
    oldest first, keyed by its start; the rows add up to the same totals as by model."""
    found = usage(gateway, traffic.first, group_by, traffic.window)
    starts = [datetime.fromisoformat(row["key"]) for row in found["data"]]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    earlier = hour_of(traffic.earlier)
    if group_by == "day":
        earlier = earlier.replace(hour=0)
        assert all((s.hour, s.minute, s.utcoffset()) == (0, 0, timedelta(0)) for s in starts)
    assert {row["key"]: row["requests"] for row in found["data"]}[earlier.isoformat()] == 1
    by_model = usage(gateway, traffic.first, "model", traffic.window)
    assert found["totals"] == by_model["totals"]
    assert found["totals"]["requests"] == 4
    assert by_model["totals"]["input_tokens"] == 400


def test_latest_requests_are_the_workspaces_rows_newest_first(
    gateway: Gateway, traffic: Traffic, db_env: dict[str, str]
) -> None:
    """`GET /v1/recovea/requests` lists the workspace's rows newest first, each exactly
    the columns of `GET /v1/recovea/requests/{id}`; `limit` pages; another workspace
    sees none of them."""
    listed = get(gateway, traffic.second, "/v1/recovea/requests", **traffic.window)
    rows = listed["data"]
    assert [row["ts"] for row in rows] == sorted((row["ts"] for row in rows), reverse=True)
    assert {uuid.UUID(i).hex for i in traffic.ids} <= {row["request_id"] for row in rows}
    assert len(rows) == 4 and listed["has_more"] is False
    assert all(tuple(row) == COLUMNS for row in rows)
    one = get(gateway, traffic.first, f"/v1/recovea/requests/{rows[0]['request_id']}")
    assert one == rows[0]
    page = get(gateway, traffic.first, "/v1/recovea/requests", limit=2, **traffic.window)
    assert (page["data"], page["has_more"]) == (rows[:2], True)
    stranger = make_tenant(db_env, "usage-api-stranger")
    assert get(gateway, stranger, "/v1/recovea/requests", **traffic.window)["data"] == []


@pytest.mark.parametrize(
    "params",
    [{"limit": "501"}, {"limit": "two"}, {"from": "yesterday"}, {"from": "2030-01-02T00:00:00Z"}],
)
def test_bad_request_list_queries_are_400(
    gateway: Gateway, traffic: Traffic, params: dict[str, str]
) -> None:
    response = httpx.get(
        f"{gateway.url}/v1/recovea/requests",
        params={"to": "2030-01-01T00:00:00Z", **params},
        headers=traffic.first.bearer,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"


def test_the_request_list_needs_a_key(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/recovea/requests")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
