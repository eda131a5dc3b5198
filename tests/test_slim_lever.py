"""Slim through a gateway: off by default (the provider gets the caller's bytes), on with
`recovea slim set` or `PUT /admin/v1/slim` without a restart; when it trims, the
provider gets the trimmed body, the row says `slim: hit` and the bytes saved are
counted; when there is nothing to trim, the caller's bytes go as they came."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from recovea_proxy.meter import verify
from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant
from tests.support import Gateway, MockServer, cli_json, metric_value, wait_until

TOOL_RESULT = json.dumps({"city": "Paris", "forecast": [{"day": 1, "temp": 21.5}]}, indent=4)


@pytest.fixture(scope="module")
def gateway(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    gw = Gateway({**upstream_env(mock), **db_env}, workdir)
    yield gw
    gw.stop()


def heard(gateway: Gateway, tenant: Tenant) -> int:
    """How many revocation notices for the tenant's key this gateway has received."""
    return sum(
        1
        for line in gateway.log_lines()
        if line.get("event") == "key_revocation_received" and line.get("key_id") == tenant.key_id
    )


def turn_slim(gateway: Gateway, tenant: Tenant, env: dict[str, str], state: str) -> Any:
    before = heard(gateway, tenant)
    result = cli_json("slim", "set", "--workspace", tenant.workspace, state, env=env)
    wait_until(lambda: heard(gateway, tenant) > before, 10, "the slim change to arrive")
    return result


def chat_with_tool_result() -> bytes:
    return orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "temperature": None,
            "messages": [
                {"role": "user", "content": "weather?\n\n   please"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{ "city": "Paris" }'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": TOOL_RESULT},
            ],
        }
    )


def send(gateway: Gateway, tenant: Tenant, body: bytes, path: str = "/v1/chat/completions",
         **headers: str) -> httpx.Response:  # fmt: skip
    response = httpx.post(
        f"{gateway.url}{path}",
        content=body,
        headers={**tenant.bearer, "content-type": "application/json", **headers},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def test_slim_trims_only_when_on_and_counts_what_it_saved(
    gateway: Gateway, mock: MockServer, db_env: dict[str, str]
) -> None:
    tenant = make_tenant(db_env, "slim-on")
    body = chat_with_tool_result()

    mock.clear()
    response = send(gateway, tenant, body)  # off by default
    [seen] = mock.requests()
    assert seen["body_bytes"] == len(body)
    assert "slim" not in gateway.record(response.headers["x-request-id"])["levers_fired"]

    assert turn_slim(gateway, tenant, db_env, "on")["enabled"] is True
    saved_before = metric_value(
        gateway.metrics(), "gateway_slim_bytes_saved_total", provider="openai"
    )
    mock.clear()
    response = send(gateway, tenant, body)
    [seen] = mock.requests()
    sent = seen["body"]
    assert "temperature" not in sent
    assert sent["messages"][0]["content"] == "weather?\n\n   please"  # message text: kept
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{ "city": "Paris" }'
    assert sent["messages"][2]["content"] == '{"city":"Paris","forecast":[{"day":1,"temp":21.5}]}'
    saved = len(body) - seen["body_bytes"]
    assert saved > 0
    saved_after = metric_value(
        gateway.metrics(), "gateway_slim_bytes_saved_total", provider="openai"
    )
    assert saved_after - saved_before == saved
    assert gateway.record(response.headers["x-request-id"])["levers_fired"]["slim"] == "hit"
    # the receipt attests the caller's bytes, not the trimmed ones
    receipt = verify.decode_token(response.headers["recovea-receipt"])
    assert receipt.payload["request_sha256"] == hashlib.sha256(body).hexdigest()

    turn_slim(gateway, tenant, db_env, "off")
    mock.clear()
    send(gateway, tenant, body)
    assert mock.requests()[0]["body_bytes"] == len(body)


def test_nothing_to_trim_sends_the_callers_bytes(
    gateway: Gateway, mock: MockServer, db_env: dict[str, str]
) -> None:
    """A body slim would not change goes as it came, byte for byte (pretty-printed or
    not): `slim: miss`."""
    tenant = make_tenant(db_env, "slim-miss")
    turn_slim(gateway, tenant, db_env, "on")
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi  there"}]}, indent=2
    ).encode()
    mock.clear()
    response = send(gateway, tenant, body)
    assert mock.requests()[0]["body_bytes"] == len(body)
    assert gateway.record(response.headers["x-request-id"])["levers_fired"]["slim"] == "miss"


def test_anthropic_blocks_slim_must_not_touch_arrive_intact(
    gateway: Gateway, mock: MockServer, db_env: dict[str, str]
) -> None:
    """Thinking blocks with their signatures, cache_control markers, images and text
    are untouched; only the tool result's JSON loses its whitespace."""
    tenant = make_tenant(db_env, "slim-anthropic")
    turn_slim(gateway, tenant, db_env, "on")
    untouched: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": "hmm  {  }", "signature": "c2lnbmF0dXJl"},
        {"type": "text", "text": TOOL_RESULT, "cache_control": {"type": "ephemeral"}},
    ]
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
    }
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 32,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": untouched},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": TOOL_RESULT},
                    image,
                ],
            },
        ],
    }
    mock.clear()
    response = send(
        gateway, tenant, orjson.dumps(body), "/v1/messages", **{"anthropic-version": "2023-06-01"}
    )
    [seen] = mock.requests()
    sent = seen["body"]
    assert sent["system"] == body["system"]
    assert sent["messages"][1]["content"] == untouched
    assert sent["messages"][2]["content"][1] == image
    assert (
        sent["messages"][2]["content"][0]["content"]
        == orjson.dumps(json.loads(TOOL_RESULT)).decode()
    )
    assert gateway.record(response.headers["x-request-id"])["levers_fired"]["slim"] == "hit"


def test_the_admin_api_turns_slim_on_and_off_for_admin_keys_only(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    tenant = make_tenant(db_env, "slim-admin")
    admin = cli_json(
        "key", "create", "--workspace", tenant.workspace, "--role", "admin", env=db_env
    )
    as_admin = {"authorization": f"Bearer {admin['key']}"}
    url = f"{gateway.url}/admin/v1/slim"
    assert httpx.get(url, headers=as_admin).json()["enabled"] is False
    assert httpx.put(url, headers=as_admin, json={"enabled": True}).json()["enabled"] is True
    assert httpx.get(url, headers=as_admin).json()["enabled"] is True
    for bad in ({"enabled": "yes"}, {"enabled": 1}, {"on": True}):
        refused = httpx.put(url, headers=as_admin, json=bad)
        assert refused.status_code == 400, bad
    member = httpx.put(url, headers=tenant.bearer, json={"enabled": False})
    assert member.status_code == 403
    assert httpx.get(url, headers=as_admin).json()["enabled"] is True
