"""The mock's injected faults, each in the provider's shape or as a broken connection.

Every test talks to a mock on a real socket."""

from __future__ import annotations

import gzip

import aiohttp
import anthropic
import openai
import orjson
import pytest

from recovea_proxy.mock_provider.controls import model_fault
from tests.mock_provider.helpers import (
    AUTH,
    CHAT,
    CLAUDE,
    MESSAGES,
    PROMPT,
    REPLY,
    TURNS,
    post,
    sse,
)


async def test_missing_key_bad_json_and_missing_model_in_provider_shape(
    http: aiohttp.ClientSession, url: str
) -> None:
    """401 without a key, 400 for a body that is not JSON or has no model — each in shape."""
    async with http.post(f"{url}/v1/chat/completions", data=orjson.dumps(CHAT)) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "invalid_api_key"
    async with http.post(f"{url}/v1/messages", data=orjson.dumps(MESSAGES)) as response:
        doc = await response.json()
        assert response.status == 401 and doc["type"] == "error"
        assert doc["error"]["type"] == "authentication_error"
        assert doc["request_id"] == response.headers["request-id"]
    status, _, raw = await post(http, f"{url}/v1/chat/completions", b"{not json")
    assert status == 400 and orjson.loads(raw)["error"]["type"] == "invalid_request_error"
    status, _, raw = await post(http, f"{url}/v1/messages", {"messages": []})
    assert status == 400 and orjson.loads(raw)["error"]["type"] == "invalid_request_error"
    status, _, raw = await post(http, f"{url}/v1/embeddings", {"input": "x"}, {"x-api-key": "k"})
    assert status == 400 and "model" in orjson.loads(raw)["error"]["message"]
    status, _, raw = await post(http, f"{url}/v1/unknown/route", {})
    assert status == 404 and "POST /v1/unknown/route" in orjson.loads(raw)["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "status", "openai_type", "anthropic_type"),
    [
        ("500", 500, "server_error", "api_error"),
        ("429", 429, "requests", "rate_limit_error"),
        ("529", 529, "server_error", "overloaded_error"),
    ],
)
async def test_status_faults_in_provider_shape(
    http: aiohttp.ClientSession,
    url: str,
    fault: str,
    status: int,
    openai_type: str,
    anthropic_type: str,
) -> None:
    """x-mock-fault 500/429/529 answer with that status in each provider's error shape."""
    headers = {"x-mock-fault": fault}
    got, got_headers, raw = await post(http, f"{url}/v1/chat/completions", CHAT, headers)
    assert got == status and orjson.loads(raw)["error"]["type"] == openai_type
    got, got_headers, raw = await post(http, f"{url}/v1/messages", MESSAGES, headers)
    assert got == status and orjson.loads(raw)["error"]["type"] == anthropic_type
    assert (got_headers.get("retry-after") == "0") is (status == 429)


async def test_status_faults_raise_the_sdks_errors(
    oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    """The SDKs raise their own classes for the mock's errors (and read the request id)."""
    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(
            model="gpt-4o", messages=PROMPT, extra_headers={"x-mock-fault": "429"}
        )
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(
            model="gpt-4o", messages=PROMPT, extra_headers={"x-mock-fault": "500"}
        )
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        await ant.messages.create(
            model=CLAUDE, max_tokens=256, messages=TURNS, extra_headers={"x-mock-fault": "529"}
        )
    assert overloaded.value.status_code == 529


# --- Transport faults -------------------------------------------------------------


async def test_reset_cuts_the_connection_without_a_response(
    url: str, oai: openai.AsyncOpenAI
) -> None:
    """x-mock-fault reset: the client sees a disconnect, never an HTTP response."""
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(http, f"{url}/v1/chat/completions", CHAT, {"x-mock-fault": "reset"})
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(
            model="gpt-4o", messages=PROMPT, extra_headers={"x-mock-fault": "reset"}
        )


async def test_reset_mid_stream_sends_three_events_then_cuts(
    http: aiohttp.ClientSession, url: str
) -> None:
    """x-mock-fault reset-mid-stream: headers and 3 events, then the connection is cut."""
    received = b""
    headers = {**AUTH, "x-mock-fault": "reset-mid-stream"}
    body = orjson.dumps({**CHAT, "stream": True})
    async with http.post(f"{url}/v1/chat/completions", data=body, headers=headers) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in response.content.iter_any():
                received += data
    assert len(sse(received)) == 3 and b"[DONE]" not in received


async def test_hang_never_answers(http: aiohttp.ClientSession, url: str) -> None:
    """x-mock-fault hang: no response; a client's total timeout fires."""
    timeout = aiohttp.ClientTimeout(total=0.3)
    headers = {**AUTH, "x-mock-fault": "hang"}
    with pytest.raises(TimeoutError):
        async with http.post(
            f"{url}/v1/chat/completions", data=orjson.dumps(CHAT), headers=headers, timeout=timeout
        ):
            pass


async def test_stall_mid_stream_goes_silent_after_two_events(
    http: aiohttp.ClientSession, url: str
) -> None:
    """x-mock-fault stall-mid-stream: 2 events, then silence until the read timeout."""
    received = b""
    headers = {**AUTH, "x-mock-fault": "stall-mid-stream"}
    timeout = aiohttp.ClientTimeout(sock_read=0.3)
    body = orjson.dumps({**MESSAGES, "stream": True})
    async with http.post(
        f"{url}/v1/messages", data=body, headers=headers, timeout=timeout
    ) as response:
        with pytest.raises(TimeoutError):
            async for data in response.content.iter_any():
                received += data
    assert [name for name, _ in sse(received)] == ["message_start", "content_block_start"]


async def test_no_usage_removes_usage_everywhere(http: aiohttp.ClientSession, url: str) -> None:
    """x-mock-fault no-usage: no usage key in any JSON body or stream, even when asked."""
    no = {"x-mock-fault": "no-usage"}
    streamed = {"stream": True, "stream_options": {"include_usage": True}}
    for path, body in (
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions", {**CHAT, **streamed}),
        ("/api/v1/chat/completions", {**CHAT, "stream": True}),
        ("/v1/completions", {"model": "m", "prompt": "p", **streamed}),
        ("/v1/embeddings", {"model": "m", "input": "p"}),
        ("/v1/responses", {"model": "m", "input": "p"}),
        ("/v1/responses", {"model": "m", "input": "p", "stream": True}),
        ("/v1/messages", MESSAGES),
        ("/v1/messages", {**MESSAGES, "stream": True}),
    ):
        status, _, raw = await post(http, url + path, body, no)
        assert status == 200 and b'"usage"' not in raw, (path, body)
        assert not any(name in raw for name in (b"input_tokens", b"prompt_tokens", b"cost")), path


async def test_error_event_mid_stream_makes_the_sdks_raise(
    oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic, http: aiohttp.ClientSession, url: str
) -> None:
    """x-mock-fault error-event: 2 events then the provider's error event, which SDKs raise."""
    fault = {"x-mock-fault": "error-event"}
    with pytest.raises(openai.APIError, match="mock mid-stream error"):
        stream = await oai.chat.completions.create(
            model="gpt-4o", messages=PROMPT, stream=True, extra_headers=fault
        )
        async for _ in stream:
            pass
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        async with ant.messages.stream(
            model=CLAUDE, max_tokens=256, messages=TURNS, extra_headers=fault
        ) as events:
            async for _ in events:
                pass
    _, _, raw = await post(http, f"{url}/v1/chat/completions", {**CHAT, "stream": True}, fault)
    assert raw.endswith(
        b'data: {"error":{"message":"mock mid-stream error","type":"server_error",'
        b'"param":null,"code":null}}\n\n'
    )
    assert len(sse(raw)) == 3
    body = {"model": "m", "input": "p", "stream": True}
    _, _, raw = await post(http, f"{url}/v1/responses", body, fault)
    assert sse(raw)[-1][0] == "error"
    assert orjson.loads(sse(raw)[-1][1])["sequence_number"] == 2


async def test_gzip_fault_follows_accept_encoding(url: str) -> None:
    """x-mock-fault gzip compresses JSON for clients that accept gzip, not for identity."""
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for accept, compressed in (("gzip, br", True), ("identity", False), ("gzip;q=0", False)):
            headers = {"x-mock-fault": "gzip", "accept-encoding": accept}
            _, got_headers, raw = await post(http, f"{url}/v1/chat/completions", CHAT, headers)
            assert (got_headers.get("content-encoding") == "gzip") is compressed
            body = gzip.decompress(raw) if compressed else raw
            assert orjson.loads(body)["choices"][0]["message"]["content"] == REPLY


# --- Determinism, journal, echo ---------------------------------------------------


def test_a_fault_for_one_model_applies_to_that_model_only() -> None:
    """`x-mock-fault-model` names a fault per model; other models (and unknown faults)
    get none from it."""
    header = "gpt-4o-mini=429, gpt-4.1-nano=hang,gpt-4o=nonsense"
    assert model_fault(header, "gpt-4o-mini") == "429"
    assert model_fault(header, "gpt-4.1-nano") == "hang"
    assert model_fault(header, "gpt-4o") is None
    assert model_fault(header, "o3") is None
    assert model_fault("openai/gpt-4o-mini=500", "openai/gpt-4o-mini") == "500"
    assert model_fault(None, "gpt-4o") is None
