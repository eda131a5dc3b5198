"""What the usage taps read for pricing beyond the ledger's columns: cache writes by
lifetime (Anthropic's `cache_creation` breakdown, OpenRouter's `cache_write_tokens`)
and the service tier that served (OpenAI's top-level `service_tier`, Anthropic's
`usage.service_tier`), from whole bodies and from streams split anywhere."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from recovea_proxy.clean import TIER_MAX, clean_usage
from recovea_proxy.providers import PROVIDERS
from recovea_proxy.providers.base import CHAT, MESSAGES, RESPONSES, StreamTap
from recovea_proxy.providers.usage import Usage


def chunk(choices: bytes, tail: bytes, tier: bytes = b'"flex"') -> bytes:
    return (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-5",'
        b'"service_tier":' + tier + b',"system_fingerprint":"fp","choices":[' + choices + b"]"
        b"" + tail + b"}\n\n"
    )


USAGE = (
    b',"usage":{"prompt_tokens":30,"completion_tokens":7,"total_tokens":37,'
    b'"prompt_tokens_details":{"cached_tokens":20},'
    b'"completion_tokens_details":{"reasoning_tokens":4}}'
)


def chat_stream(tier: bytes = b'"flex"', after_usage: bytes = b"") -> bytes:
    """An OpenAI chat stream served at `tier`, compact as OpenAI sends it; `after_usage`
    puts keys after the usage object (as `obfuscation` does), off the fast path."""
    return (
        chunk(b'{"index":0,"delta":{"content":"hi"},"finish_reason":null}', b',"usage":null', tier)
        + chunk(b'{"index":0,"delta":{},"finish_reason":"stop"}', b',"usage":null', tier)
        + chunk(b"", USAGE + after_usage, tier)
        + b"data: [DONE]\n\n"
    )


def run(tap: StreamTap | None, data: bytes, cut: int) -> Usage:
    assert tap is not None
    tap.feed(data[:cut])
    tap.feed(data[cut:])
    tap.close()
    return tap.usage


def anthropic_usage(**usage: Any) -> Usage:
    body = {"type": "message", "stop_reason": "end_turn", "usage": usage}
    return PROVIDERS["anthropic"].usage_from_json(MESSAGES, body)


# Anthropic


def test_anthropic_cache_writes_by_lifetime() -> None:
    """With the breakdown, the 1-hour writes are `ephemeral_1h_input_tokens` and the
    5-minute ones the rest of `cache_creation_input_tokens`; all count as input."""
    usage = anthropic_usage(
        input_tokens=100,
        cache_creation_input_tokens=3000,
        cache_read_input_tokens=500,
        cache_creation={"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        output_tokens=50,
    )
    assert (usage.input_tokens, usage.cached_tokens) == (3600, 500)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (1000, 2000)


def test_anthropic_writes_without_the_breakdown_are_five_minute_writes() -> None:
    """An older response (no `cache_creation` object) wrote for the default 5 minutes."""
    usage = anthropic_usage(input_tokens=10, cache_creation_input_tokens=2000, output_tokens=5)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (2000, 0)


def test_anthropic_writes_always_add_up_to_the_written_input() -> None:
    """A breakdown that claims more 1-hour writes than were written is held to the total,
    so no write is priced twice or counted outside `input_tokens`."""
    usage = anthropic_usage(
        input_tokens=10,
        cache_creation_input_tokens=100,
        cache_creation={"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 500},
        output_tokens=5,
    )
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (0, 100)


def test_anthropic_without_cache_fields_reports_no_writes() -> None:
    """No `cache_creation_input_tokens` at all: the writes are unknown (None), not 0."""
    usage = anthropic_usage(input_tokens=10, output_tokens=5)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (None, None)


@pytest.mark.parametrize(
    ("reported", "kept"), [("standard", None), ("priority", "priority"), ("batch", "batch")]
)
def test_anthropic_service_tier(reported: str, kept: str | None) -> None:
    """`usage.service_tier` other than `standard` is the tier that served."""
    usage = anthropic_usage(input_tokens=10, output_tokens=5, service_tier=reported)
    assert usage.service_tier == kept


ANTHROPIC_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
    b'"content":[],"model":"claude-sonnet-4-5","usage":{"input_tokens":3,'
    b'"cache_creation_input_tokens":700,"cache_read_input_tokens":0,"cache_creation":'
    b'{"ephemeral_5m_input_tokens":300,"ephemeral_1h_input_tokens":400},"output_tokens":1,'
    b'"service_tier":"priority"}}}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":'
    b'{"output_tokens":9,"cache_creation_input_tokens":900}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


@pytest.mark.parametrize("cut", range(0, len(ANTHROPIC_STREAM) + 1, 9))
def test_anthropic_stream_writes_and_tier_survive_any_split(cut: int) -> None:
    """From `message_start`'s breakdown and tier; a `message_delta` that revises the
    written total moves the difference to the 5-minute writes, as the totals say."""
    usage = run(PROVIDERS["anthropic"].stream_tap(MESSAGES), ANTHROPIC_STREAM, cut)
    assert (usage.input_tokens, usage.output_tokens) == (903, 9)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (500, 400)
    assert usage.service_tier == "priority"


# OpenAI and OpenRouter


@pytest.mark.parametrize("cut", range(0, len(chat_stream()) + 1, 11))
def test_openai_chat_stream_tier_survives_any_split(cut: int) -> None:
    """The tier of a compact chat stream (read from its last bytes)."""
    usage = run(PROVIDERS["openai"].stream_tap(CHAT), chat_stream(), cut)
    assert usage == Usage(30, 7, 20, 4, "stop", terminal=True, service_tier="flex")


@pytest.mark.parametrize("cut", range(0, len(chat_stream()) + 1, 13))
def test_openai_chat_stream_tier_is_read_when_events_are_parsed(cut: int) -> None:
    """A stream whose usage chunk has keys after the usage object is parsed event by
    event; the tier is the same."""
    data = chat_stream(after_usage=b',"obfuscation":"x"')
    usage = run(PROVIDERS["openai"].stream_tap(CHAT), data, cut)
    assert usage == Usage(30, 7, 20, 4, "stop", terminal=True, service_tier="flex")


@pytest.mark.parametrize(
    ("tier", "kept"),
    [
        (b'"default"', None),
        (b'"priority"', "priority"),
        (b"null", None),
        (b'"fl\\u0065x"', "flex"),  # escaped: not read by position, parsed
        (b'"a,b"', "a,b"),
    ],
)
def test_openai_stream_tier_values(tier: bytes, kept: str | None) -> None:
    """`default` is the standard tier (None); null says nothing; odd but valid JSON
    strings are read as JSON, never misread by position."""
    usage = run(PROVIDERS["openai"].stream_tap(CHAT), chat_stream(tier), 0)
    assert usage.service_tier == kept
    assert usage.input_tokens == 30


def test_openai_chat_body_tier() -> None:
    """A whole chat completion names its tier at the top level."""
    body = {
        "object": "chat.completion",
        "service_tier": "scale",
        "choices": [{"index": 0, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2},
    }
    usage = PROVIDERS["openai"].usage_from_json(CHAT, body)
    assert usage.service_tier == "scale"
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (None, None)


def test_openrouter_cache_writes_are_five_minute_writes() -> None:
    """OpenRouter's `prompt_tokens_details.cache_write_tokens` (no lifetime given)."""
    body = {
        "choices": [{"index": 0, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 2100,
            "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 2000},
        },
    }
    usage = PROVIDERS["openrouter"].usage_from_json(CHAT, body)
    assert (usage.input_tokens, usage.cache_write_5m_tokens) == (2100, 2000)
    assert usage.cache_write_1h_tokens is None


RESPONSE = {
    "id": "r",
    "status": "completed",
    "service_tier": "flex",
    "usage": {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 2},
    },
}


def test_responses_body_and_stream_tier() -> None:
    """The Responses API names its tier on the response object, whole or streamed."""
    assert PROVIDERS["openai"].usage_from_json(RESPONSES, RESPONSE).service_tier == "flex"
    event = {"type": "response.completed", "sequence_number": 2, "response": RESPONSE}
    stream = b"event: response.completed\ndata: " + orjson.dumps(event) + b"\n\n"
    usage = run(PROVIDERS["openai"].stream_tap(RESPONSES), stream, len(stream) // 2)
    assert usage == Usage(11, 9, 3, 2, "completed", terminal=True, service_tier="flex")


# Hostile values


def test_a_hostile_tier_is_cleaned_and_bounded() -> None:
    """A tier is a provider's string like any other: control characters removed, key
    shapes masked, cut to TIER_MAX, so it can reach a row."""
    usage = clean_usage(Usage(service_tier="pri\x00ority" + "x" * 100))
    assert usage.service_tier == ("priority" + "x" * 100)[:TIER_MAX]
    assert clean_usage(Usage(service_tier="\x00\x01")).service_tier is None


def test_a_tier_that_is_not_a_string_is_ignored() -> None:
    """A number or an object where the tier goes names no tier."""
    assert anthropic_usage(input_tokens=1, output_tokens=1, service_tier=7).service_tier is None
    usage = PROVIDERS["openai"].usage_from_json(CHAT, {"service_tier": {"x": 1}, "usage": {}})
    assert usage.service_tier is None
