"""Errors come back in the caller's provider's shape; provider errors pass through."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterator

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import FAKE_OPENAI_KEY, SdkClients
from tests.support import Gateway, MockServer, free_port, metric_value

AUTH = {"authorization": f"Bearer {FAKE_OPENAI_KEY}"}
CHAT = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
STREAM_CHAT = orjson.dumps(
    {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "x"}]}
)


def test_unreachable_upstream_is_502_in_openai_shape(
    sdk: SdkClients,
    start_gateway: Callable[..., Gateway],
) -> None:
    """A refused connection becomes 502 upstream_unreachable, which the SDK raises."""
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(RECOVEA_UPSTREAM_OPENAI=dead, RECOVEA_UPSTREAM_ANTHROPIC=dead)
    client = sdk.openai(f"{gw.url}/v1")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unreachable"
    assert caught.value.request_id is not None
    assert metric_value(gw.metrics(), "recovea_upstream_errors_total", kind="connect") == 1

    aclient = sdk.anthropic(gw.url)
    with pytest.raises(anthropic.APIStatusError) as anthropic_caught:
        aclient.messages.create(
            model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert anthropic_caught.value.status_code == 502
    body = anthropic_caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert body["error"]["code"] == "upstream_unreachable"


def test_reset_before_headers_is_502(gateway: Gateway) -> None:
    """An upstream that drops the connection without answering gives 502, not a hang."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=CHAT,
        headers={**AUTH, "x-mock-fault": "reset"},
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    record = gateway.record(response.headers["x-request-id"])
    assert record["success"] is False
    assert record["status"] == "error"


def fail_open(gateway: Gateway, reason: str) -> float:
    """gateway_fail_open_total for the upstream layer and one reason."""
    text = gateway.metrics()
    return metric_value(text, "gateway_fail_open_total", layer="upstream", reason=reason)


def test_a_refused_connection_counts_as_an_upstream_fail_open(
    start_gateway: Callable[..., Gateway],
) -> None:
    """Each 502 for a provider that refuses connections is counted once in
    gateway_fail_open_total{layer="upstream",reason="connect"}, beside the upstream
    error metric, so an alert on fail-opens sees a provider outage."""
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(RECOVEA_UPSTREAM_OPENAI=dead)
    assert 0 == fail_open(gw, "connect")
    for count in (1, 2):
        response = httpx.post(f"{gw.url}/v1/chat/completions", content=CHAT, headers=AUTH)
        assert 502 == response.status_code
        assert "upstream_unreachable" == response.json()["error"]["code"]
        assert count == fail_open(gw, "connect")
        assert count == metric_value(gw.metrics(), "recovea_upstream_errors_total", kind="connect")


def test_a_reset_before_headers_counts_as_an_upstream_fail_open(gateway: Gateway) -> None:
    """A provider that drops the connection before answering: one 502, one
    gateway_fail_open_total{layer="upstream",reason="reset"}."""
    before = fail_open(gateway, "reset")
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=CHAT,
        headers={**AUTH, "x-mock-fault": "reset"},
    )
    assert 502 == response.status_code
    assert before + 1 == fail_open(gateway, "reset")


class _CutJsonBody(socketserver.StreamRequestHandler):
    """Answers every request with JSON headers announcing 1000 bytes, sends 20, closes."""

    def handle(self) -> None:
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self.rfile.read(length)
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n" + b'{"id":"chatcmpl-cut",'
        )


@pytest.fixture
def cut_json_upstream() -> Iterator[str]:
    """A provider on a real port whose JSON responses break off after their headers."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _CutJsonBody)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_a_json_body_that_breaks_off_counts_as_an_upstream_fail_open(
    cut_json_upstream: str, start_gateway: Callable[..., Gateway]
) -> None:
    """A non-streamed response cut before its end (the gateway buffers it, so nothing
    was sent yet) is a 502 upstream_unreachable, counted once in
    gateway_fail_open_total{layer="upstream",reason="reset"}."""
    gw = start_gateway(RECOVEA_UPSTREAM_OPENAI=cut_json_upstream)
    response = httpx.post(f"{gw.url}/v1/chat/completions", content=CHAT, headers=AUTH)
    assert 502 == response.status_code
    assert "upstream_unreachable" == response.json()["error"]["code"]
    assert "broke off" in response.json()["error"]["message"]
    assert 1 == fail_open(gw, "reset")
    assert 1 == metric_value(gw.metrics(), "recovea_upstream_errors_total", kind="reset")


def test_no_first_byte_in_time_is_502(start_gateway: Callable[..., Gateway]) -> None:
    """An upstream that accepts but never answers hits the first-byte timeout: 502."""
    gw = start_gateway(RECOVEA_FIRST_BYTE_TIMEOUT_S="0.5")
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=CHAT,
        headers={**AUTH, "x-mock-fault": "hang"},
        timeout=30,
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert metric_value(gw.metrics(), "recovea_upstream_errors_total", kind="timeout") == 1


def test_body_over_the_limit_is_413(start_gateway: Callable[..., Gateway]) -> None:
    """A body over RECOVEA_MAX_BODY_MB is refused with 413 in the surface's shape."""
    gw = start_gateway(RECOVEA_MAX_BODY_MB="0.01")
    big = b'{"model":"gpt-4o","input":"' + b"a" * 20_000 + b'"}'
    response = httpx.post(f"{gw.url}/v1/embeddings", content=big, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    def chunks() -> object:
        for _ in range(20):
            yield b"a" * 1000

    chunked = httpx.post(f"{gw.url}/v1/messages", content=chunks(), headers=AUTH)  # type: ignore[arg-type]
    assert chunked.status_code == 413
    assert chunked.json()["error"]["type"] == "request_too_large"


def test_unknown_path_is_404_in_openai_shape(gateway: Gateway) -> None:
    """A path outside every surface is a 404 with an OpenAI-shaped body."""
    response = httpx.get(f"{gateway.url}/v2/whatever")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("fault", ["500", "429"])
def test_provider_errors_pass_through_unchanged(
    gateway: Gateway, mock: MockServer, fault: str
) -> None:
    """The provider's own error status and body reach the client byte for byte."""
    headers = {**AUTH, "x-mock-fault": fault}
    direct = httpx.post(f"{mock.url}/v1/chat/completions", content=CHAT, headers=headers)
    proxied = httpx.post(f"{gateway.url}/v1/chat/completions", content=CHAT, headers=headers)
    assert proxied.status_code == direct.status_code == int(fault)
    assert proxied.content == direct.content
    record = gateway.record(proxied.headers["x-request-id"])
    assert record["success"] is False
    assert record["http_status"] == int(fault)


def test_non_json_body_is_forwarded_as_is(gateway: Gateway) -> None:
    """A body that is not JSON is the provider's business: it arrives unchanged."""
    payload = b"\x00\x01 not json {{{"
    response = httpx.post(
        f"{gateway.url}/v1/_mock/echo?x=1&y=2",
        content=payload,
        headers={**AUTH, "content-type": "application/octet-stream"},
    )
    assert response.status_code == 200
    echoed = response.json()
    import hashlib

    assert echoed["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert echoed["query"] in ("x=1&y=2", {"x": "1", "y": "2"})


def test_reset_mid_stream_ends_with_an_error_event(sdk: SdkClients, gateway: Gateway) -> None:
    """An upstream cut mid-stream ends the client's stream with an SSE error the SDK raises."""
    client = sdk.openai(f"{gateway.url}/v1")
    before = metric_value(gateway.metrics(), "recovea_upstream_errors_total", kind="reset")
    with pytest.raises(openai.APIError, match="stream broke"):
        for _ in client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            extra_headers={"x-mock-fault": "reset-mid-stream"},
        ):
            pass
    after = metric_value(gateway.metrics(), "recovea_upstream_errors_total", kind="reset")
    assert after == before + 1
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    ok = httpx.post(f"{gateway.url}/v1/chat/completions", content=CHAT, headers=AUTH)
    assert ok.status_code == 200


def test_anthropic_reset_mid_stream_is_an_anthropic_error_event(
    sdk: SdkClients, gateway: Gateway
) -> None:
    """On the Anthropic surface the closing error is an `event: error` the SDK raises."""
    client = sdk.anthropic(gateway.url)
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(
            model="claude",
            max_tokens=64,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-fault": "reset-mid-stream"},
        ) as stream,
    ):
        for _ in stream:
            pass


def test_idle_stream_times_out(start_gateway: Callable[..., Gateway]) -> None:
    """A stream silent for longer than the idle-read timeout is ended with an error event."""
    gw = start_gateway(RECOVEA_IDLE_READ_TIMEOUT_S="0.5")
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=STREAM_CHAT,
        headers={**AUTH, "x-mock-fault": "stall-mid-stream"},
        timeout=30,
    )
    assert response.status_code == 200
    assert b"upstream_idle_timeout" in response.content
    record = gw.record(response.headers["x-request-id"])
    assert record["success"] is False
    assert record["error_code"] == "upstream_idle_timeout"


def test_a_stream_longer_than_the_idle_timeout_is_not_cut(
    start_gateway: Callable[..., Gateway],
) -> None:
    """The idle-read timeout bounds each silence, not the stream: chunks 150 ms apart
    for ~1.2 s, under a 0.5 s timeout, all reach the client and the request succeeds."""
    gw = start_gateway(RECOVEA_IDLE_READ_TIMEOUT_S="0.5")
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=STREAM_CHAT,
        headers={**AUTH, "x-mock-chunks": "8", "x-mock-chunk-delay-ms": "150"},
        timeout=30,
    )
    assert response.status_code == 200
    assert b"upstream_idle_timeout" not in response.content
    assert response.content.count(b"data: ") >= 8
    assert b"data: [DONE]" in response.content
    record = gw.record(response.headers["x-request-id"])
    assert record["success"] is True
    assert record["latency_total_ms"] > 1000


def test_mid_stream_provider_error_event_is_recorded(gateway: Gateway) -> None:
    """A provider's own error event mid-stream passes through and marks the request failed."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=STREAM_CHAT,
        headers={**AUTH, "x-mock-fault": "error-event"},
    )
    assert b"mock mid-stream error" in response.content
    assert gateway.record(response.headers["x-request-id"])["success"] is False


def test_missing_key_is_401_in_each_shape(gateway: Gateway) -> None:
    """No credentials: 401 invalid_api_key, which the SDKs raise as AuthenticationError."""
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=CHAT)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    response = httpx.post(f"{gateway.url}/v1/messages", content=CHAT)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_passthrough_off_refuses_provider_keys(
    sdk: SdkClients, start_gateway: Callable[..., Gateway]
) -> None:
    """With passthrough off (the default), a provider key is not served."""
    gw = start_gateway(RECOVEA_PASSTHROUGH="off")
    client = sdk.openai(f"{gw.url}/v1")
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
