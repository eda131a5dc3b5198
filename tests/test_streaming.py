"""Streams go through chunk by chunk, unchanged, and hide only what the gateway added."""

from __future__ import annotations

import time

import httpx
import orjson

from tests.conftest import FAKE_OPENAI_KEY
from tests.support import Gateway, MockServer, without_receipt

AUTH = {"authorization": f"Bearer {FAKE_OPENAI_KEY}"}


def chat_body(text: str, **extra: object) -> bytes:
    return orjson.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}
    )


def test_first_chunk_arrives_long_before_the_upstream_finishes(gateway: Gateway) -> None:
    """With chunks 200 ms apart, the client reads the first one at once, not at the end."""
    headers = {**AUTH, "x-mock-chunks": "5", "x-mock-chunk-delay-ms": "200"}
    started = time.monotonic()
    arrivals: list[float] = []
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        content=chat_body("slow", stream=True),
        headers=headers,
        timeout=30,
    ) as response:
        for chunk in response.iter_raw():
            if chunk:
                arrivals.append(time.monotonic() - started)
    total = arrivals[-1]
    assert total >= 1.0, "the mock spreads the stream over at least 5 x 200 ms"
    assert arrivals[0] < total / 3, f"first byte at {arrivals[0]:.3f}s of {total:.3f}s"
    assert len(arrivals) >= 5, "chunks are not merged into one buffer"


def test_proxied_stream_is_byte_identical_to_direct(gateway: Gateway, mock: MockServer) -> None:
    """Without include_usage, the client gets exactly the bytes the provider would send it."""
    body = chat_body("identical-bytes", stream=True)
    direct = httpx.post(f"{mock.url}/v1/chat/completions", content=body, headers=AUTH).content
    proxied = httpx.post(f"{gateway.url}/v1/chat/completions", content=body, headers=AUTH)
    assert without_receipt(proxied.content) == direct
    assert b'"usage"' not in proxied.content


def test_gateway_asks_upstream_for_usage(gateway: Gateway, mock: MockServer) -> None:
    """Upstream sees stream_options.include_usage even when the client did not send it."""
    mock.clear()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=chat_body("ask", stream=True),
        headers={**AUTH, "x-mock-input-tokens": "44"},
    )
    assert response.status_code == 200
    seen = [r for r in mock.requests() if r["path"] == "/v1/chat/completions"][-1]
    assert seen["body"]["stream_options"] == {"include_usage": True}
    assert gateway.record(response.headers["x-request-id"])["input_tokens"] == 44


def test_stream_with_include_usage_is_byte_identical_too(
    gateway: Gateway, mock: MockServer
) -> None:
    """A client that asked for usage gets the provider's stream untouched, usage chunk included."""
    body = chat_body("with-usage", stream=True, stream_options={"include_usage": True})
    direct = httpx.post(f"{mock.url}/v1/chat/completions", content=body, headers=AUTH).content
    proxied = httpx.post(f"{gateway.url}/v1/chat/completions", content=body, headers=AUTH).content
    assert without_receipt(proxied) == direct
    assert b'"choices":[]' in proxied


def test_anthropic_stream_is_byte_identical(gateway: Gateway, mock: MockServer) -> None:
    """Anthropic streams are never rewritten."""
    body = orjson.dumps(
        {
            "model": "claude-sonnet-5-5",
            "max_tokens": 64,
            "stream": True,
            "messages": [{"role": "user", "content": "bytes"}],
        }
    )
    headers = {"x-api-key": "sk-ant-abcdefgh12345678", "anthropic-version": "2023-06-01"}
    direct = httpx.post(f"{mock.url}/v1/messages", content=body, headers=headers).content
    proxied = httpx.post(f"{gateway.url}/v1/messages", content=body, headers=headers).content
    assert without_receipt(proxied) == direct


def test_stream_without_usage_records_none(gateway: Gateway) -> None:
    """A provider that reports no usage leaves the counts None — never a made-up 0."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=chat_body("no-usage", stream=True),
        headers={**AUTH, "x-mock-fault": "no-usage"},
    )
    assert response.status_code == 200
    record = gateway.record(response.headers["x-request-id"])
    assert record["input_tokens"] is None
    assert record["output_tokens"] is None
    assert record["cached_tokens"] is None
    assert record["success"] is True
