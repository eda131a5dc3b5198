"""Anthropic's Messages and OpenRouter's variant of the OpenAI format, from the mock.

Every test talks to a mock on a real socket."""

from __future__ import annotations

import aiohttp
import anthropic
import openai
import orjson

from tests.mock_provider.helpers import (
    AUTH,
    CHAT,
    CLAUDE,
    KEY,
    MESSAGES,
    PROMPT,
    REPLY,
    TURNS,
    USAGE,
    chunks,
    post,
    sse,
)


async def test_messages_json_in_sdk_excludes_cached_from_input(
    ant: anthropic.AsyncAnthropic,
) -> None:
    """A message: text reply, end_turn, input_tokens without the cached tokens, request-id."""
    raw = await ant.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=256, messages=TURNS, extra_headers=USAGE
    )
    message = await raw.parse()
    assert raw.headers["request-id"].startswith("req_") and "x-request-id" not in raw.headers
    assert message._request_id == raw.headers["request-id"]
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert message.usage.input_tokens == 20
    assert message.usage.cache_read_input_tokens == 100
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.output_tokens == 33


async def test_messages_stream_event_order_and_final_usage(
    ant: anthropic.AsyncAnthropic, http: aiohttp.ClientSession, url: str
) -> None:
    """The Messages stream's events come in Anthropic's order; the SDK rebuilds the message."""
    headers = {**USAGE, "x-mock-chunks": "3"}
    async with ant.messages.stream(
        model=CLAUDE, max_tokens=256, messages=TURNS, extra_headers=headers
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == REPLY
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20, 33)
    assert final.usage.cache_read_input_tokens == 100
    _, _, raw = await post(http, f"{url}/v1/messages", {**MESSAGES, "stream": True}, headers)
    events = sse(raw)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(orjson.loads(data)["type"] == name for name, data in events)
    start = orjson.loads(events[0][1])["message"]["usage"]
    assert start == {
        "input_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 100,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 1,
        "service_tier": "standard",
    }
    assert orjson.loads(events[-2][1]) == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 33},
    }


async def test_messages_max_tokens_and_count_tokens(ant: anthropic.AsyncAnthropic) -> None:
    """max_tokens under the output stops with max_tokens; count_tokens reports the input."""
    message = await ant.messages.create(model=CLAUDE, max_tokens=3, messages=TURNS)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3
    count = await ant.messages.count_tokens(
        model=CLAUDE,
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-mock-input-tokens": "42"},
    )
    assert count.input_tokens == 42


# --- OpenRouter -------------------------------------------------------------------


async def test_openrouter_stream_always_has_usage_and_keepalive(
    http: aiohttp.ClientSession, url: str, oai: openai.AsyncOpenAI
) -> None:
    """OpenRouter streams start with a keep-alive comment and end with usage and cost."""
    body = {**CHAT, "model": "openai/gpt-4o", "stream": True}
    status, headers, raw = await post(http, f"{url}/api/v1/chat/completions", body)
    assert status == 200 and headers["x-generation-id"].startswith("gen-")
    assert raw.startswith(b": OPENROUTER PROCESSING\n\ndata: {")
    assert b'"usage":null' not in raw
    usage = chunks(raw)[-1]["usage"]
    assert usage["prompt_tokens"] == 12 and usage["cost"] > 0
    assert usage["cost_details"] == {"upstream_inference_cost": usage["cost"]}
    async with openai.AsyncOpenAI(base_url=f"{url}/api/v1", api_key=KEY) as router:
        stream = await router.chat.completions.create(
            model="openai/gpt-4o", messages=PROMPT, stream=True
        )
        got = [chunk async for chunk in stream]
    assert got[-1].usage is not None and got[-1].usage.total_tokens == 28


async def test_openrouter_every_response_has_generation_id(
    http: aiohttp.ClientSession, url: str
) -> None:
    """JSON bodies carry usage with cost; X-Generation-Id is on successes and errors alike."""
    _, headers, raw = await post(http, f"{url}/api/v1/chat/completions", CHAT)
    assert "x-generation-id" in headers and orjson.loads(raw)["usage"]["cost"] > 0
    for path in ("embeddings", "completions"):
        body = {"model": "m", "input": "x", "prompt": "x"}
        _, headers, _ = await post(http, f"{url}/api/v1/{path}", body)
        assert "x-generation-id" in headers
    _, headers, raw = await post(
        http, f"{url}/api/v1/chat/completions", CHAT, {"x-mock-fault": "500"}
    )
    assert "x-generation-id" in headers
    assert orjson.loads(raw) == {
        "error": {"code": 500, "message": orjson.loads(raw)["error"]["message"]}
    }
    async with http.get(f"{url}/api/v1/models", headers=AUTH) as response:
        assert "x-generation-id" in response.headers


# --- Errors -----------------------------------------------------------------------
