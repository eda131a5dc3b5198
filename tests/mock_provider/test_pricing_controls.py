"""The mock's pricing controls: cache writes by lifetime (`x-mock-cache-write-5m-tokens`,
`x-mock-cache-write-1h-tokens`) and the tier that served (`x-mock-service-tier`), in
each provider's wire format, as the official SDKs read them.

Every test talks to a mock on a real socket."""

from __future__ import annotations

import aiohttp
import anthropic
import openai
import orjson

from tests.mock_provider.helpers import CHAT, CLAUDE, MESSAGES, TURNS, chunks, post, sse

WRITES = {
    "x-mock-input-tokens": "5000",
    "x-mock-cached-tokens": "1000",
    "x-mock-cache-write-5m-tokens": "1500",
    "x-mock-cache-write-1h-tokens": "2000",
    "x-mock-output-tokens": "40",
}


async def test_anthropic_reports_cache_writes_by_lifetime(ant: anthropic.AsyncAnthropic) -> None:
    """Of 5000 input: 1000 read, 1500 written for 5 minutes, 2000 for an hour, 500
    plain; `cache_creation_input_tokens` is the writes' sum; the tier is standard."""
    message = await ant.messages.create(
        model=CLAUDE, max_tokens=256, messages=TURNS, extra_headers=WRITES
    )
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (500, 1000)
    assert usage.cache_creation_input_tokens == 3500
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 1500
    assert usage.cache_creation.ephemeral_1h_input_tokens == 2000
    assert usage.service_tier == "standard"


async def test_anthropic_stream_start_carries_the_writes_and_tier(
    http: aiohttp.ClientSession, url: str
) -> None:
    """A stream's `message_start` usage holds the split and the tier asked for."""
    headers = {**WRITES, "x-mock-service-tier": "batch"}
    _, _, raw = await post(http, f"{url}/v1/messages", {**MESSAGES, "stream": True}, headers)
    start = orjson.loads(sse(raw)[0][1])["message"]["usage"]
    assert start == {
        "input_tokens": 500,
        "cache_creation_input_tokens": 3500,
        "cache_read_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 2000},
        "output_tokens": 1,
        "service_tier": "batch",
    }


async def test_writes_never_exceed_the_input(ant: anthropic.AsyncAnthropic) -> None:
    """Writes asked beyond the input left after cache reads are cut to it (5 minutes
    first), so the parts always add up to the input."""
    headers = {
        "x-mock-input-tokens": "100",
        "x-mock-cached-tokens": "60",
        "x-mock-cache-write-5m-tokens": "30",
        "x-mock-cache-write-1h-tokens": "30",
    }
    message = await ant.messages.create(
        model=CLAUDE, max_tokens=256, messages=TURNS, extra_headers=headers
    )
    usage = message.usage
    assert usage.cache_creation is not None
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (0, 60)
    assert usage.cache_creation.ephemeral_5m_input_tokens == 30
    assert usage.cache_creation.ephemeral_1h_input_tokens == 10


async def test_openai_names_the_tier_in_body_and_every_chunk(
    oai: openai.AsyncOpenAI, http: aiohttp.ClientSession, url: str
) -> None:
    """`default` unless asked; `x-mock-service-tier: flex` is reported by the completion
    and by every chunk of a stream."""
    plain = await oai.chat.completions.create(model="gpt-5", messages=CHAT["messages"])
    assert plain.service_tier == "default"
    flex = await oai.chat.completions.create(
        model="gpt-5", messages=CHAT["messages"], extra_headers={"x-mock-service-tier": "flex"}
    )
    assert flex.service_tier == "flex"
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    _, _, raw = await post(
        http, f"{url}/v1/chat/completions", body, {"x-mock-service-tier": "flex"}
    )
    assert {chunk["service_tier"] for chunk in chunks(raw)} == {"flex"}


async def test_responses_names_the_tier(oai: openai.AsyncOpenAI) -> None:
    """The Responses API's response object reports the tier asked for."""
    response = await oai.responses.create(
        model="gpt-5", input="hi", extra_headers={"x-mock-service-tier": "priority"}
    )
    assert response.service_tier == "priority"


async def test_openrouter_reports_cache_writes(http: aiohttp.ClientSession, url: str) -> None:
    """OpenRouter's usage counts every cache write in `cache_write_tokens`."""
    _, _, raw = await post(http, f"{url}/api/v1/chat/completions", CHAT, WRITES)
    details = orjson.loads(raw)["usage"]["prompt_tokens_details"]
    assert (details["cached_tokens"], details["cache_write_tokens"]) == (1000, 3500)
