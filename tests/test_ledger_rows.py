"""The metering row: one body-free `request_events` row per request, read back over
`/v1/recovea/requests/{id}`, with the field rules of DESIGN.md one by one."""

from __future__ import annotations

import base64
import socket
import time
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest

from recovea_proxy.meter.event import COLUMNS
from tests.ledger_support import Tenant, make_tenant, owner_query, stored
from tests.support import Gateway, Postgres, cli_json, metric_value, wait_until


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "rows-main", project="search", team="core")


def chat(
    gateway: Gateway, tenant: Tenant, prompt: str = "hi", *, stream: bool = False, **headers: str
) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=orjson.dumps(body),
        headers={**tenant.bearer, "content-type": "application/json", **headers},
        timeout=30,
    )


def test_row_has_exactly_the_columns_and_the_request_facts(
    gateway: Gateway, tenant: Tenant
) -> None:
    before_ms = time.time() * 1000
    response = chat(
        gateway,
        tenant,
        headers_note := "row facts",
        **{
            "x-mock-input-tokens": "21",
            "x-mock-output-tokens": "7",
            "x-mock-cached-tokens": "3",
            "x-mock-reasoning-tokens": "2",
            "x-recovea-feature": "search-box",
            "x-recovea-customer": "user-42",
        },
    )
    assert response.status_code == 200, headers_note
    request_id = response.headers["x-request-id"]
    row = stored(gateway, tenant, "requests", request_id)
    assert tuple(row) == COLUMNS
    assert row["request_id"] == request_id
    assert row["trace_id"] == response.headers["x-recovea-trace-id"]
    assert row["customer_id"] == tenant.workspace
    assert row["rcv_key_id"] == tenant.key_id
    assert row["project_id"] is not None and row["team_id"] is not None
    assert row["route_id"] is not None
    assert (row["feature"], row["end_user_id"]) == ("search-box", "user-42")
    assert (row["baseline_model"], row["realized_model"]) == ("gpt-4o-mini", "gpt-4o-mini")
    tokens = [row[name] for name in ("input_tokens", "output_tokens", "cached_tokens")]
    assert tokens == [21, 7, 3]
    assert row["reasoning_tokens"] == 2
    assert row["finish_reason"] == "stop"
    assert row["success"] is True and row["status"] == "success"
    # no temperature 0 or seed: not shareable under the default policy
    assert row["levers_fired"] == {"cache": "skip", "dedup": "skip"}
    assert row["cache_hit"] is False and row["cache_type"] is None
    assert row["dedup_singleflight"] is False and row["fell_back_to_baseline"] is False
    assert row["provider"] == "openai" and row["env"] == "live"
    assert 0 < row["gateway_overhead_ms"] <= row["latency_total_ms"] < 30_000
    ts_ms = datetime.fromisoformat(row["ts"]).timestamp() * 1000
    assert before_ms - 1000 <= ts_ms <= time.time() * 1000 + 1000
    assert row["baseline_cost"] is None and row["realized_cost"] is None


def test_tokens_are_null_when_the_provider_reports_none(gateway: Gateway, tenant: Tenant) -> None:
    response = chat(gateway, tenant, "no usage", **{"x-mock-fault": "no-usage"})
    assert response.status_code == 200
    row = stored(gateway, tenant, "requests", response.headers["x-request-id"])
    for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        assert row[name] is None, name


def test_a_streamed_row_takes_usage_from_the_stream(gateway: Gateway, tenant: Tenant) -> None:
    response = chat(gateway, tenant, "streamed", stream=True, **{"x-mock-input-tokens": "33"})
    row = stored(gateway, tenant, "requests", response.headers["x-request-id"])
    assert row["input_tokens"] == 33 and row["output_tokens"] is not None
    assert row["success"] is True and row["finish_reason"] == "stop"


def test_success_is_null_when_the_client_leaves_mid_stream(
    gateway: Gateway, tenant: Tenant
) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    headers = {**tenant.bearer, "x-mock-chunks": "200", "x-mock-chunk-delay-ms": "20"}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        request_id = response.headers["x-request-id"]
        next(response.iter_raw())
    row = stored(gateway, tenant, "requests", request_id)
    assert row["success"] is None
    assert row["finish_reason"] is None


@pytest.mark.parametrize(("fault", "status"), [("500", 500), ("429", 429), ("reset", 502)])
def test_failures_are_status_error(
    gateway: Gateway, tenant: Tenant, fault: str, status: int
) -> None:
    response = chat(gateway, tenant, f"fault {fault}", **{"x-mock-fault": fault})
    assert response.status_code == status
    row = stored(gateway, tenant, "requests", response.headers["x-request-id"])
    assert row["status"] == "error" and row["success"] is False


def test_env_comes_from_the_key(gateway: Gateway, db_env: dict[str, str]) -> None:
    test_tenant = make_tenant(db_env, "rows-test-env", key_env="test")
    response = chat(gateway, test_tenant, "env")
    row = stored(gateway, test_tenant, "requests", response.headers["x-request-id"])
    assert row["env"] == "test"
    assert row["project_id"] is None and row["team_id"] is None


def raw_post(gateway: Gateway, path: str, headers: bytes, body: bytes) -> tuple[int, bytes]:
    """An HTTP/1.1 request written byte for byte: clients refuse tabs and non-UTF-8
    bytes in header values; a broken caller sends them. (Other control characters
    never reach the gateway: the HTTP server answers 400.)"""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            + headers
            + b"content-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0]
    return int(head.split(b" ", 2)[1]), head


def test_tags_are_cut_and_cleaned_never_rejected(gateway: Gateway, tenant: Tenant) -> None:
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "t"}]})
    status, head = raw_post(
        gateway,
        "/v1/chat/completions",
        b"authorization: Bearer " + tenant.key.encode() + b"\r\n"
        b"x-recovea-feature: " + b"f" * 500 + b"\r\n"
        b"x-recovea-customer: bad\tname\x80\r\n",
        body,
    )
    assert status == 200
    request_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-request-id:")
    )
    row = stored(gateway, tenant, "requests", request_id)
    assert row["feature"] == "f" * 128
    assert row["end_user_id"] == "badname\ufffd"


def test_routes_are_created_once_per_path(
    gateway: Gateway, tenant: Tenant, postgres: Postgres
) -> None:
    first = stored(gateway, tenant, "requests", chat(gateway, tenant, "r1").headers["x-request-id"])
    second = stored(
        gateway, tenant, "requests", chat(gateway, tenant, "r2").headers["x-request-id"]
    )
    embedded = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "route"},
        headers=tenant.bearer,
    )
    third = stored(gateway, tenant, "requests", embedded.headers["x-request-id"])
    assert first["route_id"] == second["route_id"] != third["route_id"]
    routes = owner_query(
        postgres.url,
        "SELECT route_id::text, provider, path, first_model FROM recovea.routes"
        " WHERE customer_id = $1::uuid ORDER BY path",
        tenant.workspace,
    )
    by_id = {row["route_id"]: row for row in routes}
    assert by_id[first["route_id"]]["path"] == "/v1/chat/completions"
    assert by_id[first["route_id"]]["first_model"] == "gpt-4o-mini"
    assert by_id[third["route_id"]]["first_model"] == "text-embedding-3-small"


def test_another_workspace_cannot_read_the_row(
    gateway: Gateway, tenant: Tenant, db_env: dict[str, str]
) -> None:
    other = make_tenant(db_env, "rows-other")
    request_id = chat(gateway, tenant, "mine").headers["x-request-id"]
    stored(gateway, tenant, "requests", request_id)
    for what in ("requests", "receipts"):
        response = httpx.get(f"{gateway.url}/v1/recovea/{what}/{request_id}", headers=other.bearer)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert (
        httpx.get(f"{gateway.url}/v1/recovea/requests/not-an-id", headers=other.bearer).status_code
        == 404
    )
    unauthenticated = httpx.get(f"{gateway.url}/v1/recovea/requests/{request_id}")
    assert unauthenticated.status_code == 401


def test_passthrough_requests_are_metered_under_the_passthrough_workspace(
    gateway: Gateway, postgres: Postgres
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "pt"}]},
        headers={"authorization": "Bearer sk-test-passthrough-000000000000"},
    )
    request_id = response.headers["x-request-id"]

    def row() -> list[object]:
        return owner_query(
            postgres.url,
            "SELECT w.name FROM recovea.request_events e JOIN recovea.workspaces w"
            " ON w.customer_id = e.customer_id WHERE e.request_id = $1::uuid",
            request_id,
        )

    from tests.support import wait_until

    assert wait_until(row, 15, "passthrough row")[0]["name"] == "passthrough"


def test_refused_requests_leave_no_row_and_are_counted_and_logged(
    gateway: Gateway, postgres: Postgres
) -> None:
    """A request refused before a workspace is known (401) has no row: it is counted
    on /metrics under its route and status, and logged."""
    before = metric_value(
        gateway.metrics(), "recovea_requests_total", route="/v1/chat/completions", status="401"
    )
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": []},
        headers={"authorization": "Bearer rcv_live_doesnotexist000000000000000000000"},
    )
    assert response.status_code == 401
    assert "recovea-receipt" not in response.headers
    request_id = response.headers["x-request-id"]
    line = gateway.record(request_id)
    assert (line["http_status"], line["customer_id"]) == (401, None)
    after = metric_value(
        gateway.metrics(), "recovea_requests_total", route="/v1/chat/completions", status="401"
    )
    assert after == before + 1
    # The drainer has written everything queued before this request's log line.
    normal = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": []},
        headers={"authorization": "Bearer sk-test-passthrough-key-0000"},
    )

    def next_row() -> list[Any]:
        return owner_query(
            postgres.url,
            "SELECT request_id FROM recovea.request_events WHERE request_id = $1::uuid",
            normal.headers["x-request-id"],
        )

    wait_until(next_row, 15, "the next request's row")
    assert not owner_query(
        postgres.url,
        "SELECT 1 FROM recovea.request_events WHERE request_id = $1::uuid",
        request_id,
    )


MARKERS = ("ZEBRA-PROMPT-7781", "QUASAR-SYSTEM-5512", "ORCHID-TOOL-9934")


def test_no_prompt_or_completion_text_reaches_any_stored_column(
    gateway: Gateway, db_env: dict[str, str], postgres: Postgres
) -> None:
    marked = make_tenant(db_env, "rows-markers")
    prompt, system, tool = MARKERS
    ids = []
    calls = [
        (
            "/v1/chat/completions",
            {
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": prompt},
                ],
                "tools": [{"type": "function", "function": {"name": "f", "description": tool}}],
            },
        ),
        (
            "/v1/chat/completions",
            {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": prompt}]},
        ),
        ("/v1/responses", {"model": "gpt-4o", "input": prompt, "instructions": system}),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": prompt}),
        (
            "/v1/messages",
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 50,
                "system": system,
                "messages": [{"role": "user", "content": prompt}],
            },
        ),
        (
            "/v1/messages",
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": prompt}],
            },
        ),
    ]
    for path, body in calls:
        response = httpx.post(
            f"{gateway.url}{path}",
            json=body,
            headers={**marked.bearer, "anthropic-version": "2023-06-01"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        if path != "/v1/embeddings" and not body.get("stream"):
            assert prompt in response.text, "the mock echoes the prompt: the test needs it"
        ids.append(response.headers["x-request-id"])
    for request_id in ids:
        stored(gateway, marked, "receipts", request_id)
    cli_json("rollup", env=db_env)
    dumped = []
    for table in ("request_events", "receipts", "routes", "usage_rollups"):
        for row in owner_query(
            postgres.url,
            f"SELECT * FROM recovea.{table} WHERE customer_id = $1::uuid",
            marked.workspace,
        ):
            dumped.append(repr(dict(row)))
            if table == "receipts":
                payload = row["token"].split(".")[0]
                dumped.append(
                    base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
                )
    assert len(dumped) >= 2 * len(ids)
    text = "\n".join(dumped)
    for marker in MARKERS:
        assert marker not in text
