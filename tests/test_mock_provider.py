"""The mock provider speaks each provider's wire format, as the official SDKs read it.

Every test talks to a mock on a real socket: raw bytes through aiohttp where the exact
wire matters, the `openai` and `anthropic` SDKs where parsing is the proof.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from recovea_proxy.mock_provider import (
    MockDefaults,
    add_cli_arguments,
    create_mock_app,
    defaults_from_args,
    start_mock,
)

KEY = "sk-test-mock-provider"
AUTH = {"authorization": f"Bearer {KEY}"}
USAGE = {
    "x-mock-input-tokens": "120",
    "x-mock-output-tokens": "33",
    "x-mock-cached-tokens": "100",
    "x-mock-reasoning-tokens": "5",
}
MARKER = "marker-7f3a"
PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"say {MARKER}"}]
CLAUDE = "claude-haiku-4-5"
TURNS: list[MessageParam] = [{"role": "user", "content": f"say {MARKER}"}]
CHAT: dict[str, Any] = {"model": "gpt-4o", "messages": PROMPT}
MESSAGES: dict[str, Any] = {"model": CLAUDE, "max_tokens": 256, "messages": TURNS}
REPLY = f"mock reply: say {MARKER}"


@pytest.fixture
async def url() -> AsyncIterator[str]:
    runner, port = await start_mock("127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def oai(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=10
    ) as client:
        yield client


@pytest.fixture
async def ant(url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=url, api_key=KEY, max_retries=0, timeout=10
    ) as client:
        yield client


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(url, data=data, headers={**AUTH, **(headers or {})}) as response:
        headers = {name.lower(): value for name, value in response.headers.items()}
        return response.status, headers, await response.read()


def sse(raw: bytes) -> list[tuple[str | None, bytes]]:
    """(event name, data) of each event; comment-only blocks are skipped."""
    out: list[tuple[str | None, bytes]] = []
    for block in raw.split(b"\n\n"):
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data.append(line[6:])
        if data:
            out.append((name, b"\n".join(data)))
    return out


def chunks(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(d) for _, d in sse(raw) if d != b"[DONE]"]


# --- Chat Completions ---------------------------------------------------------------


async def test_chat_json_has_openai_shape_and_usage(http: aiohttp.ClientSession, url: str) -> None:
    """A chat completion echoes the model, carries the reply and the usage the headers set."""
    status, headers, raw = await post(http, f"{url}/v1/chat/completions", CHAT, USAGE)
    doc = orjson.loads(raw)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"].startswith("req_") and "openai-processing-ms" in headers
    assert list(doc) == "id object created model choices usage system_fingerprint".split()
    assert doc["id"].startswith("chatcmpl-") and doc["object"] == "chat.completion"
    assert doc["model"] == "gpt-4o"
    assert doc["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": REPLY, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert doc["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 33,
        "total_tokens": 153,
        "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 5,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


async def test_chat_parses_in_openai_sdk(oai: openai.AsyncOpenAI) -> None:
    """The openai SDK parses a completion, its usage details and its request id."""
    raw = await oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": MARKER}], extra_headers=USAGE
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == f"mock reply: {MARKER}"
    assert completion._request_id == raw.headers["x-request-id"]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 5


async def test_chat_stream_with_include_usage_in_sdk(oai: openai.AsyncOpenAI) -> None:
    """A stream asked for usage: role chunk, content chunks, finish chunk, usage chunk."""
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=PROMPT,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={**USAGE, "x-mock-chunks": "5"},
    )
    got = [chunk async for chunk in stream]
    assert len(got) == 1 + 5 + 1 + 1
    assert got[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in got[:-1]) == REPLY
    assert [c.choices[0].finish_reason for c in got[:-1]] == [None] * 6 + ["stop"]
    assert got[-1].choices == [] and got[-1].usage is not None
    assert (got[-1].usage.prompt_tokens, got[-1].usage.completion_tokens) == (120, 33)
    assert all(c.usage is None for c in got[:-1])


async def test_include_usage_puts_usage_null_last_in_every_other_chunk(
    http: aiohttp.ClientSession, url: str
) -> None:
    """With include_usage each chunk ends in "usage":null; the usage chunk is last."""
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    status, headers, raw = await post(http, f"{url}/v1/chat/completions", body)
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["transfer-encoding"] == "chunked"
    data = [d for _, d in sse(raw)]
    assert data[-1] == b"[DONE]" and raw.endswith(b"data: [DONE]\n\n")
    assert all(d.endswith(b',"usage":null}') for d in data[:-2])
    assert data[-2].startswith(b'{"id":') and b'"choices":[],"usage":{' in data[-2]
    assert chunks(raw)[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
        "refusal": None,
    }


async def test_stream_without_include_usage_has_no_usage_key(
    http: aiohttp.ClientSession, url: str
) -> None:
    """Without include_usage no chunk has a usage key; the finish chunk has an empty delta."""
    _, _, raw = await post(http, f"{url}/v1/chat/completions", {**CHAT, "stream": True})
    assert b'"usage"' not in raw
    got = chunks(raw)
    assert len(got) == 1 + 16 + 1  # the default 16 content chunks
    assert got[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


async def test_max_tokens_below_output_is_length(http: aiohttp.ClientSession, url: str) -> None:
    """max_tokens / max_completion_tokens under the output: finish_reason length, tokens = max."""
    for limit in ("max_tokens", "max_completion_tokens"):
        _, _, raw = await post(http, f"{url}/v1/chat/completions", {**CHAT, limit: 4})
        doc = orjson.loads(raw)
        assert doc["choices"][0]["finish_reason"] == "length"
        assert doc["usage"]["completion_tokens"] == 4
    body = {**CHAT, "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True}}
    _, _, raw = await post(http, f"{url}/v1/chat/completions", body)
    assert chunks(raw)[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks(raw)[-1]["usage"]["completion_tokens"] == 4


async def test_pacing_headers_delay_first_byte_and_events(
    http: aiohttp.ClientSession, url: str
) -> None:
    """x-mock-first-byte-delay-ms holds the headers; x-mock-chunk-delay-ms spaces events."""
    headers = {
        **AUTH,
        "x-mock-first-byte-delay-ms": "200",
        "x-mock-chunk-delay-ms": "30",
        "x-mock-chunks": "4",
    }
    started = time.monotonic()
    body = orjson.dumps({**CHAT, "stream": True})
    async with http.post(f"{url}/v1/chat/completions", data=body, headers=headers) as resp:
        first_byte = time.monotonic() - started
        await resp.read()
    total = time.monotonic() - started
    assert first_byte >= 0.2
    assert total - first_byte >= 6 * 0.03 * 0.9  # 7 events (role, 4, finish, DONE): 6 gaps


# --- Completions, Embeddings, Models ----------------------------------------------


async def test_legacy_completions_json_and_stream(oai: openai.AsyncOpenAI) -> None:
    """/v1/completions returns text_completion objects, streamed with the usage rule."""
    completion = await oai.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=MARKER, extra_headers=USAGE
    )
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].text == f"mock reply: {MARKER}"
    assert completion.usage is not None and completion.usage.total_tokens == 153
    stream = await oai.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt=MARKER,
        stream=True,
        stream_options={"include_usage": True},
    )
    got = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in got[:-1]) == f"mock reply: {MARKER}"
    assert got[-2].choices[0].finish_reason == "stop"
    assert got[-1].choices == [] and got[-1].usage is not None


async def test_embeddings_one_vector_per_input(
    http: aiohttp.ClientSession, url: str, oai: openai.AsyncOpenAI
) -> None:
    """One 8-float embedding per input; base64 when asked (the SDK's default) decodes."""
    body = {"model": "text-embedding-3-small", "input": ["a", "b", "c"]}
    _, _, raw = await post(http, f"{url}/v1/embeddings", body, {"x-mock-input-tokens": "7"})
    doc = orjson.loads(raw)
    assert doc["object"] == "list" and doc["model"] == "text-embedding-3-small"
    assert [item["index"] for item in doc["data"]] == [0, 1, 2]
    assert all(len(item["embedding"]) == 8 for item in doc["data"])
    assert doc["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    _, _, raw = await post(http, f"{url}/v1/embeddings", {**body, "encoding_format": "base64"})
    packed = orjson.loads(raw)["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(packed))) == doc["data"][0]["embedding"]
    result = await oai.embeddings.create(model="text-embedding-3-small", input="one")
    assert len(result.data) == 1 and result.data[0].embedding == doc["data"][0]["embedding"]


async def test_models_list_and_retrieve(
    oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic, url: str
) -> None:
    """/v1/models in OpenAI's shape (Anthropic's to the Anthropic SDK); OpenRouter ids
    with a slash resolve."""
    models = await oai.models.list()
    assert models.data and all(m.object == "model" for m in models.data)
    assert (await oai.models.retrieve("gpt-4o-mini-label")).id == "gpt-4o-mini-label"
    async with openai.AsyncOpenAI(base_url=f"{url}/api/v1", api_key=KEY) as router:
        assert (await router.models.retrieve("openai/gpt-4o")).id == "openai/gpt-4o"
    page = await ant.models.list()
    assert page.data and page.data[0].type == "model"
    assert (await ant.models.retrieve("claude-haiku-4-5")).display_name == "Claude Haiku 4.5"


# --- Responses API ----------------------------------------------------------------


async def test_responses_json_parses_in_sdk(oai: openai.AsyncOpenAI) -> None:
    """responses.create parses; output_text is the reply; usage counts from the headers."""
    response = await oai.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": [{"type": "input_text", "text": MARKER}]}],
        extra_headers=USAGE,
    )
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == f"mock reply: {MARKER}"
    assert response.usage is not None
    assert response.usage.input_tokens == 120 and response.usage.output_tokens == 33
    assert response.usage.input_tokens_details.cached_tokens == 100
    assert response.usage.output_tokens_details.reasoning_tokens == 5


async def test_responses_stream_event_sequence(oai: openai.AsyncOpenAI) -> None:
    """A Responses stream: named events numbered in order, ending in response.completed."""
    stream = await oai.responses.create(
        model="gpt-4o", input=MARKER, stream=True, extra_headers={"x-mock-chunks": "3"}
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == f"mock reply: {MARKER}"
    final = events[-1]
    assert final.type == "response.completed" and final.response.usage is not None
    assert final.response.usage.total_tokens == 12 + 16


async def test_responses_max_output_tokens_is_incomplete(
    oai: openai.AsyncOpenAI, http: aiohttp.ClientSession, url: str
) -> None:
    """max_output_tokens under the output: status incomplete, stream ends response.incomplete."""
    response = await oai.responses.create(model="gpt-4o", input="x", max_output_tokens=5)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 5
    body = {"model": "gpt-4o", "input": "x", "max_output_tokens": 5, "stream": True}
    _, _, raw = await post(http, f"{url}/v1/responses", body)
    assert sse(raw)[-1][0] == "response.incomplete" and b"[DONE]" not in raw


# --- Anthropic Messages -----------------------------------------------------------


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
        "output_tokens": 1,
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


async def test_same_request_gets_the_same_bytes(http: aiohttp.ClientSession, url: str) -> None:
    """Ids and `created` derive from the body: the same request is answered byte for byte."""
    for path, body in (
        ("/v1/chat/completions", {**CHAT, "stream": True}),
        ("/v1/responses", {"model": "m", "input": MARKER, "stream": True}),
        ("/v1/messages", {**MESSAGES, "stream": True}),
        ("/api/v1/chat/completions", CHAT),
    ):
        first = await post(http, url + path, body)
        second = await post(http, url + path, body)
        assert first[2] == second[2], path
    one = orjson.loads((await post(http, f"{url}/v1/chat/completions", CHAT))[2])
    other = orjson.loads(
        (await post(http, f"{url}/v1/chat/completions", {**CHAT, "model": "gpt-4.1"}))[2]
    )
    assert one["id"] != other["id"]
    digest = hashlib.sha256(orjson.dumps(CHAT, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert one["id"] == "chatcmpl-" + digest[:24]
    assert one["created"] == 1_700_000_000 + int(digest[:6], 16) % 1_000_000


async def test_stream_options_do_not_change_ids(http: aiohttp.ClientSession, url: str) -> None:
    """A stream asked for usage has the ids of the same stream not asking (as via a gateway)."""
    plain = {**CHAT, "stream": True}
    asked = {"stream_options": {"include_usage": True}, **plain}
    _, _, a = await post(http, f"{url}/v1/chat/completions", plain)
    _, _, b = await post(http, f"{url}/v1/chat/completions", asked)
    assert chunks(a)[0]["id"] == chunks(b)[0]["id"]
    assert b.replace(b',"usage":null', b"").startswith(a[: a.index(b"data: [DONE]")])


async def test_journal_records_requests_and_clears(http: aiohttp.ClientSession, url: str) -> None:
    """GET /_mock/requests lists what arrived (oldest first, last 200); DELETE clears it."""
    await post(http, f"{url}/v1/chat/completions?trace=1", CHAT, {"X-Custom": "Value"})
    await post(http, f"{url}/v1/messages", b"not json")
    async with http.get(f"{url}/_mock/requests") as response:
        seen = await response.json()
    assert [r["path"] for r in seen] == ["/v1/chat/completions", "/v1/messages"]
    first = seen[0]
    assert first["method"] == "POST" and first["query"] == "trace=1"
    assert first["headers"]["x-custom"] == "Value"
    assert first["headers"]["authorization"] == f"Bearer {KEY}"
    assert first["body"] == CHAT and first["body_bytes"] == len(orjson.dumps(CHAT))
    assert seen[1]["body"] is None and seen[1]["body_bytes"] == 8
    async with http.delete(f"{url}/_mock/requests") as response:
        assert response.status == 204
    for i in range(205):
        async with http.get(f"{url}/v1/_mock/echo?i={i}"):
            pass
    async with http.get(f"{url}/_mock/requests") as response:
        seen = await response.json()
    assert len(seen) == 200 and seen[0]["query"] == "i=5" and seen[-1]["query"] == "i=204"


async def test_echo_mirrors_method_path_query_headers_and_body(
    http: aiohttp.ClientSession, url: str
) -> None:
    """…/_mock/echo (and its sub-paths) returns what it received, under /v1 and /api/v1."""
    payload = b"\x00\x01 not json"
    for path in ("/v1/_mock/echo", "/v1/_mock/echo/deeper/path", "/api/v1/_mock/echo"):
        async with http.put(
            f"{url}{path}?a=1&b=2", data=payload, headers={"X-Thing": "One"}
        ) as response:
            doc = await response.json()
        assert doc == {
            "method": "PUT",
            "path": path,
            "query": "a=1&b=2",
            "headers": doc["headers"],
            "body_sha256": hashlib.sha256(payload).hexdigest(),
        }
        assert doc["headers"]["x-thing"] == "One"


# --- Configuration and the command line -------------------------------------------


async def test_defaults_come_from_flags_and_apply(http: aiohttp.ClientSession) -> None:
    """The CLI flags build MockDefaults; an app's defaults shape every response."""
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert defaults_from_args(parser.parse_args([])) == MockDefaults()
    ns = parser.parse_args(["--chunks", "2", "--output-tokens", "3", "--cached-tokens", "1"])
    defaults = defaults_from_args(ns)
    assert (defaults.chunks, defaults.output_tokens, defaults.cached_tokens) == (2, 3, 1)
    runner = aiohttp.web.AppRunner(create_mock_app(defaults))
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        _, _, raw = await post(http, f"{base}/v1/chat/completions", {**CHAT, "stream": True})
        assert len(chunks(raw)) == 1 + 2 + 1
        _, _, raw = await post(http, f"{base}/v1/chat/completions", CHAT)
        assert orjson.loads(raw)["usage"]["completion_tokens"] == 3
    finally:
        await runner.cleanup()


async def test_module_runs_on_its_own_until_sigterm(http: aiohttp.ClientSession) -> None:
    """`python -m recovea_proxy.mock_provider --port 0` serves until SIGTERM, then exits 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "recovea_proxy.mock_provider",
        "--port",
        "0",
        "--output-tokens",
        "4",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        base = line.decode().strip().rsplit(" ", 1)[-1]
        assert base.startswith("http://127.0.0.1:")
        _, _, raw = await post(http, f"{base}/v1/chat/completions", CHAT)
        assert orjson.loads(raw)["usage"]["completion_tokens"] == 4
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
