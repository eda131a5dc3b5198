"""OpenAI's wire format from the mock (chat, completions, embeddings, models,
Responses API), as raw bytes and as the openai SDK reads it.

Every test talks to a mock on a real socket."""

from __future__ import annotations

import base64
import struct
import time

import aiohttp
import anthropic
import openai
import orjson

from tests.mock_provider.helpers import (
    AUTH,
    CHAT,
    KEY,
    MARKER,
    PROMPT,
    REPLY,
    USAGE,
    chunks,
    post,
    sse,
)


async def test_chat_json_has_openai_shape_and_usage(http: aiohttp.ClientSession, url: str) -> None:
    """A chat completion echoes the model, carries the reply and the usage the headers set."""
    status, headers, raw = await post(http, f"{url}/v1/chat/completions", CHAT, USAGE)
    doc = orjson.loads(raw)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"].startswith("req_") and "openai-processing-ms" in headers
    assert list(doc) == (
        "id object created model choices usage service_tier system_fingerprint".split()
    )
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
