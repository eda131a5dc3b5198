"""WebSockets through the gateway: the official SDK's Realtime and Responses WebSocket
clients and a raw client, against the mock on real sockets; auth and refusals at the
handshake, closes both ways, the message bound, one ledger row per response, and the
session metrics."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import openai
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import FAKE_OPENAI_KEY
from tests.ledger_support import Tenant, make_tenant, owner_query
from tests.support import Gateway, MockServer, Postgres, free_port, metric_value, wait_until

MODEL = "gpt-realtime-mini"
USAGE_HEADERS = {
    "x-mock-input-tokens": "41",
    "x-mock-output-tokens": "13",
    "x-mock-cached-tokens": "7",
}
ROW_COLUMNS = (
    "request_id, baseline_model, input_tokens, output_tokens, cached_tokens, "
    "reasoning_tokens, finish_reason, success, status, feature, ts"
)


@pytest.fixture(scope="module")
def tenant(gateway: Gateway, db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "websockets")


def ws_url(base: str, path: str = "/v1/realtime", query: str = f"?model={MODEL}") -> str:
    return base.replace("http://", "ws://") + path + query


def rows_of(postgres: Postgres, trace_id: str, count: int) -> list[dict[str, Any]]:
    """The ledger rows of one session (by its trace id), once `count` are written."""

    def fetch() -> list[dict[str, Any]] | None:
        found = owner_query(
            postgres.url,
            f"SELECT {ROW_COLUMNS} FROM recovea.request_events WHERE trace_id = $1 ORDER BY ts",
            trace_id,
        )
        return [dict(r) for r in found] if len(found) >= count else None

    rows: list[dict[str, Any]] = wait_until(fetch, 15, f"{count} rows of trace {trace_id}")
    return rows


def handshakes(mock: MockServer, path: str = "/v1/realtime") -> list[dict[str, Any]]:
    return [r for r in mock.requests() if r["path"] == path and "ws" in r]


async def realtime_turn(connection: Any, text: str) -> list[bytes]:
    """One conversation item and one response; every server message of it, as sent."""
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await connection.response.create()
    received: list[bytes] = []
    while True:
        raw = await connection.recv_bytes()
        received.append(raw)
        if orjson.loads(raw)["type"] == "response.done":
            return received


async def sdk_session(base_url: str, headers: dict[str, str], key: str) -> list[bytes]:
    """A Realtime session with the async SDK: session.created, then two turns."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)
    try:
        async with client.realtime.connect(model=MODEL, extra_headers=headers) as connection:
            received = [await connection.recv_bytes()]
            received += await realtime_turn(connection, "first")
            received += await realtime_turn(connection, "second")
    finally:
        await client.close()
    return received


def test_realtime_sdk_gets_what_it_gets_direct(
    gateway: Gateway, mock: MockServer, postgres: Postgres
) -> None:
    """The async SDK's Realtime session through the gateway receives exactly the
    messages it receives from the provider directly; the caller's key (passthrough)
    reaches the provider; each response has its row, with the usage the provider sent."""
    headers = {**USAGE_HEADERS, "x-recovea-trace-id": "ws-trace-direct-0001"}
    direct = asyncio.run(sdk_session(f"{mock.url}/v1", headers, FAKE_OPENAI_KEY))
    mock.clear()
    proxied = asyncio.run(sdk_session(f"{gateway.url}/v1", headers, FAKE_OPENAI_KEY))

    assert proxied == direct
    assert orjson.loads(proxied[0])["session"]["model"] == MODEL
    (seen,) = handshakes(mock)
    assert seen["headers"]["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    assert seen["query"] == f"model={MODEL}"
    assert seen["ws"]["received"] == [
        "conversation.item.create",
        "response.create",
        "conversation.item.create",
        "response.create",
    ]

    rows = rows_of(postgres, "ws-trace-direct-0001", 2)
    assert len(rows) == 2
    for row in rows:
        assert row["baseline_model"] == MODEL
        assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (41, 13, 7)
        assert row["reasoning_tokens"] is None
        assert row["finish_reason"] == "completed"
        assert row["success"] is True


def test_realtime_sync_sdk_with_an_rcv_key(
    gateway: Gateway, mock: MockServer, postgres: Postgres, tenant: Tenant
) -> None:
    """The sync SDK with an rcv_ key: the workspace's provider key goes upstream, the
    rcv_ key does not; the row is the workspace's, with the handshake's feature tag."""
    mock.clear()
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.key, max_retries=0)
    headers = {"x-recovea-trace-id": "ws-trace-sync-0001", "x-recovea-feature": "voice"}
    with client, client.realtime.connect(model=MODEL, extra_headers=headers) as connection:
        assert connection.recv().type == "session.created"
        connection.response.create()
        types: list[str] = []
        while not types or types[-1] != "response.done":
            types.append(connection.recv().type)
    assert types[0] == "response.created"

    (seen,) = handshakes(mock)
    assert seen["headers"]["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    assert "rcv_" not in orjson.dumps(seen).decode()
    (row,) = rows_of(postgres, "ws-trace-sync-0001", 1)
    assert row["feature"] == "voice"
    assert row["input_tokens"] == 12 and row["output_tokens"] == 16  # the mock's defaults
    workspace = owner_query(
        postgres.url,
        "SELECT customer_id::text AS w FROM recovea.request_events WHERE request_id = $1::uuid",
        str(row["request_id"]),
    )
    assert workspace[0]["w"] == tenant.workspace


async def responses_session(base_url: str) -> list[bytes]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=FAKE_OPENAI_KEY, max_retries=0)
    received: list[bytes] = []
    try:
        headers = {**USAGE_HEADERS, "x-recovea-trace-id": "ws-trace-responses-01"}
        async with client.responses.connect(extra_headers=headers) as connection:
            await connection.response.create(model="gpt-4.1", input="over a socket")
            while True:
                raw = await connection.recv_bytes()
                received.append(raw)
                if orjson.loads(raw)["type"] == "response.completed":
                    break
    finally:
        await client.close()
    return received


def test_responses_websocket_mode(gateway: Gateway, mock: MockServer, postgres: Postgres) -> None:
    """The SDK's Responses WebSocket mode through the gateway gets the provider's events
    unchanged; the response's row reads its usage from response.completed."""
    direct = asyncio.run(responses_session(f"{mock.url}/v1"))
    proxied = asyncio.run(responses_session(f"{gateway.url}/v1"))
    assert proxied == direct
    (row,) = rows_of(postgres, "ws-trace-responses-01", 1)
    assert row["baseline_model"] == "gpt-4.1"
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (41, 13, 7)
    assert row["reasoning_tokens"] == 0
    assert row["success"] is True


async def open_raw(url: str, key: str = FAKE_OPENAI_KEY, **headers: str) -> ClientConnection:
    return await connect(url, additional_headers={"authorization": f"Bearer {key}", **headers})


async def test_bad_rcv_key_is_refused_at_the_handshake(gateway: Gateway) -> None:
    """An unknown rcv_ key gets 401 in OpenAI's error shape instead of 101."""
    bad = "rcv_live_" + "A" * 43
    with pytest.raises(InvalidStatus) as refused:
        await open_raw(ws_url(gateway.url), bad)
    response = refused.value.response
    assert response.status_code == 401
    error = orjson.loads(response.body)["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert response.headers["x-request-id"]


async def test_upstream_refusal_is_passed_on(gateway: Gateway) -> None:
    """A provider that refuses the handshake (401 for a bad key) is answered with its
    status; nothing is accepted."""
    with pytest.raises(InvalidStatus) as refused:
        await open_raw(ws_url(gateway.url), **{"x-mock-ws-status": "401"})
    response = refused.value.response
    assert response.status_code == 401
    assert orjson.loads(response.body)["error"]["code"] == "upstream_refused"
    assert response.headers["x-recovea-upstream-request-id"] == "req_mock_ws_refused"


async def test_anthropic_surface_takes_no_websocket(gateway: Gateway) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await open_raw(ws_url(gateway.url, "/anthropic/v1/messages", ""))
    assert refused.value.response.status_code == 400
    error = orjson.loads(refused.value.response.body)["error"]
    assert error["code"] == "websocket_unsupported"


def test_closes_pass_both_ways(gateway: Gateway, mock: MockServer, postgres: Postgres) -> None:
    """The client's close code and reason reach the provider; the provider's reach the
    client. A session without a response leaves one row."""

    async def client_closes() -> None:
        ws = await open_raw(ws_url(gateway.url), **{"x-recovea-trace-id": "ws-trace-close-0001"})
        await ws.recv()  # session.created
        await ws.close(code=4001, reason="client bye")

    async def provider_closes() -> ConnectionClosed:
        ws = await open_raw(ws_url(gateway.url))
        await ws.recv()
        await ws.send(orjson.dumps({"type": "mock.close", "code": 4002, "reason": "bye"}).decode())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        return closed.value

    mock.clear()
    asyncio.run(client_closes())
    wait_until(lambda: handshakes(mock)[0]["ws"]["close_code"] == 4001, what="close at mock")
    closed = asyncio.run(provider_closes())
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4002, "bye")

    (row,) = rows_of(postgres, "ws-trace-close-0001", 1)
    assert row["input_tokens"] is None and row["output_tokens"] is None
    assert row["baseline_model"] == MODEL
    assert row["success"] is True


async def test_binary_messages_relay_byte_for_byte(gateway: Gateway) -> None:
    payload = os.urandom(200_000)
    async with await open_raw(ws_url(gateway.url)) as ws:
        await ws.recv()
        await ws.send(payload)
        assert await ws.recv() == payload


def test_messages_over_the_bound_close_with_1009(
    start_gateway: Callable[..., Gateway], mock: MockServer
) -> None:
    """A message over RECOVEA_WS_MAX_FRAME_KB closes the session with 1009, whichever
    side sent it; the provider is told when the client's was too large."""
    gateway = start_gateway(RECOVEA_WS_MAX_FRAME_KB="64")

    async def close_code_after(message: bytes | str) -> int | None:
        ws = await open_raw(ws_url(gateway.url))
        await ws.recv()
        await ws.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        return closed.value.rcvd.code if closed.value.rcvd else None

    mock.clear()
    assert asyncio.run(close_code_after(bytes(70_000))) == 1009
    wait_until(lambda: handshakes(mock)[0]["ws"]["close_code"] == 1009, what="1009 at mock")
    ask = orjson.dumps({"type": "mock.send_bytes", "size": 70_000}).decode()
    assert asyncio.run(close_code_after(ask)) == 1009
    metrics = gateway.metrics()
    assert metric_value(metrics, "gateway_websocket_sessions_closed_total", reason="too_large") == 2


def test_sessions_are_counted_on_metrics(gateway: Gateway) -> None:
    """Sessions accepted, refused and closed, and messages and bytes each way."""
    route = {"provider": "openai", "route": "/openai/v1/realtime"}
    before = gateway.metrics()
    url = ws_url(gateway.url, "/openai/v1/realtime")

    async def session() -> None:
        async with await open_raw(url) as ws:
            await ws.recv()
            await ws.send(b"12345")
            await ws.recv()
        with pytest.raises(InvalidStatus):
            await open_raw(url, "rcv_live_" + "B" * 43)

    asyncio.run(session())

    def delta(name: str, **labels: str) -> float:
        after = metric_value(gateway.metrics(), name, **route, **labels)
        return after - metric_value(before, name, **route, **labels)

    wait_until(
        lambda: delta("gateway_websocket_sessions_closed_total", reason="client_closed") == 1,
        what="the session's end counted",
    )
    assert delta("gateway_websocket_sessions_total", outcome="accepted") == 1
    assert delta("gateway_websocket_sessions_total", outcome="refused") == 1
    assert delta("gateway_websocket_frames_total", direction="client_to_upstream") == 1
    assert delta("gateway_websocket_frames_total", direction="upstream_to_client") == 2
    assert delta("gateway_websocket_bytes_total", direction="client_to_upstream") == 5
    assert delta("recovea_requests_total", status="401") == 1
    assert metric_value(gateway.metrics(), "gateway_websocket_sessions_open", **route) == 0


def test_a_response_cut_short_keeps_its_row(gateway: Gateway, postgres: Postgres) -> None:
    """The client leaving mid-response leaves that response's row, outcome unknown
    (success NULL), as for an HTTP stream the client left."""

    async def leave_mid_response() -> None:
        slow = {"x-mock-chunk-delay-ms": "30000", "x-recovea-trace-id": "ws-trace-cut-00001"}
        async with await open_raw(ws_url(gateway.url), **slow) as ws:
            await ws.recv()
            await ws.send(orjson.dumps({"type": "response.create"}).decode())
            assert orjson.loads(await ws.recv())["type"] == "response.created"

    asyncio.run(leave_mid_response())
    (row,) = rows_of(postgres, "ws-trace-cut-00001", 1)
    assert row["success"] is None
    assert row["input_tokens"] is None


def test_unreachable_provider_is_a_502(start_gateway: Callable[..., Gateway]) -> None:
    """No provider to connect to: 502 upstream_unreachable at the handshake, counted as
    a fail-open upstream fault, and logged like an HTTP refusal."""
    gateway = start_gateway(RECOVEA_UPSTREAM_OPENAI=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(open_raw(ws_url(gateway.url)))
    response = refused.value.response
    assert response.status_code == 502
    assert orjson.loads(response.body)["error"]["code"] == "upstream_unreachable"
    metrics = gateway.metrics()
    assert metric_value(metrics, "gateway_fail_open_total", layer="upstream", reason="connect") == 1
    line = gateway.record(response.headers["x-request-id"])
    assert (line["http_status"], line["error_code"]) == (502, "upstream_unreachable")
    assert line["route"] == "/v1/realtime"


def test_shutdown_closes_sessions_and_keeps_their_rows(
    start_gateway: Callable[..., Gateway], mock: MockServer, postgres: Postgres
) -> None:
    """A gateway stopping (SIGTERM) closes each open session: the client with 1012
    (service restart, uvicorn's), the provider with 1001 (going away); the session's
    row is written before the process exits."""
    gateway = start_gateway()
    mock.clear()

    async def session_during_shutdown() -> ConnectionClosed:
        ws = await open_raw(ws_url(gateway.url), **{"x-recovea-trace-id": "ws-trace-stop-0001"})
        await ws.recv()  # session.created: the relay is running
        stopping = asyncio.create_task(asyncio.to_thread(gateway.stop))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert await stopping in (0, -signal.SIGTERM)  # not killed
        return closed.value

    closed = asyncio.run(session_during_shutdown())
    assert closed.rcvd is not None and closed.rcvd.code == 1012
    wait_until(lambda: handshakes(mock)[0]["ws"]["close_code"] == 1001, what="1001 at the mock")
    (row,) = rows_of(postgres, "ws-trace-stop-0001", 1)
    assert row["baseline_model"] == MODEL
